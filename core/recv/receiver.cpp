// The accepting side: Receiver (create, the accept loop, one connection) and receive_turn.
#include "core/recv/receiver.h"

#include "core/recv/session.h"
#include "core/recv/streams.h"
#include "core/recv/wake.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <list>
#include <memory>
#include <optional>
#include <thread>

namespace sesscp {

using recv::Admission;
using recv::Session;

namespace {

// The connections a listener serves, one thread each (Receiver::serve).
class Connections {
public:
  Connections() = default;
  Connections(const Connections&) = delete;
  Connections& operator=(const Connections&) = delete;
  ~Connections() { join_all(); }

  // Sessions, as --max-sessions counts them: not the extra streams, nor the
  // connections taken only to join.
  std::ptrdiff_t sessions() const {
    return std::count_if(m_list.begin(), m_list.end(),
                         [](const Connection& c) { return c.admission != Admission::join_only && !c.stream->load(); });
  }
  // Connections accepted only to join, not yet joined.
  std::size_t pending_joins() const {
    return static_cast<std::size_t>(std::count_if(m_list.begin(), m_list.end(), [](const Connection& c) {
      return c.admission == Admission::join_only && !c.stream->load() && !c.done->load();
    }));
  }
  void reap_finished() {
    for (auto it = m_list.begin(); it != m_list.end();) {
      if (it->done->load()) {
        it->thread.join();
        it = m_list.erase(it);
      } else {
        ++it;
      }
    }
  }
  void join_all() {
    for (auto& c : m_list) c.thread.join();
    m_list.clear();
  }
  // Run `session` on a thread of its own; its result goes to `status` and
  // `wake` is poked when it ends (either may be null). Returns its end flag.
  std::shared_ptr<std::atomic<bool>> start(std::unique_ptr<Session> session, Admission admission,
                                           std::shared_ptr<std::atomic<bool>> stream, std::shared_ptr<Status> status,
                                           const recv::Wake* wake) {
    auto done = std::make_shared<std::atomic<bool>>(false);
    m_list.push_back({std::thread([session = std::move(session), done, status, wake] {
                        auto result = session->run();
                        if (status) *status = result;
                        done->store(true);
                        if (wake) wake->poke();
                      }),
                      done, std::move(stream), admission});
    return done;
  }

private:
  struct Connection {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
    std::shared_ptr<std::atomic<bool>> stream; // an extra connection of a session (not a session)
    Admission admission;
  };
  std::list<Connection> m_list;
};

// What a new connection may open with; none: refuse it (too many sessions).
// With --once, the first connection is the session served; later ones may
// only join it as its extra streams (--streams).
std::optional<Admission> admission_for(const ReceiveOptions& opt, const Connections& connections,
                                       StreamRegistry& streams, bool primary_taken) {
  if (opt.once) return primary_taken ? Admission::join_only : Admission::session_or_join;
  if (connections.sessions() < opt.max_sessions) return Admission::session_or_join;
  // At the limit, a connection is still taken while sessions wait for
  // their extra streams (--streams), but only to JOIN one of them.
  if (streams.outstanding() > connections.pending_joins()) return Admission::join_only;
  return std::nullopt;
}

} // namespace

Status receive_turn(Conn& conn, session::Machine& machine, const TurnOptions& turn, Events& events, Dialog dialog) {
  ReceiveOptions options;
  options.dir = turn.dir;
  options.timeout_ms = turn.timeout_ms;
  options.stop = turn.stop;
  options.verify_resume = turn.verify_resume;
  options.turn_features = turn.features;
  Fd dir(open(options.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return errno_error(ErrorKind::cannot_create, "cannot open directory " + options.dir, errno);
  unsigned mask = ::umask(0);
  ::umask(mask);
  Session session(dir.get(), options, mask, events, conn, machine);
  return dialog == Dialog::full_duplex ? session.run_direction() : session.run_turn();
}

Result<Receiver> Receiver::create(const ReceiveOptions& options, Events& events) {
  Fd dir;
  if (!options.stdio || !options.dir.empty()) {
    dir = Fd(open(options.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir) return errno_error(ErrorKind::cannot_create, "cannot open directory " + options.dir, errno);
    if (faccessat(dir.get(), ".", W_OK, AT_EACCESS) != 0)
      return errno_error(ErrorKind::cannot_create, "cannot write to " + options.dir, errno);
  }
  Fd serve;
  if (!options.serve_dir.empty()) {
    serve = Fd(open(options.serve_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!serve) return errno_error(ErrorKind::usage, "cannot open --serve directory " + options.serve_dir, errno);
  }
  Fd listener;
  if (!options.stdio) {
    auto tcp = net::listen_tcp(options.listen);
    if (!tcp) return tcp.error();
    listener = std::move(*tcp);
  }
  // Each session may hold a few hundred descriptors (pipelined offers and a
  // batch of small files, docs/PROTOCOL.md): take what the hard limit allows.
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  unsigned mask = ::umask(0);
  ::umask(mask);
  std::optional<tls::Context> tls;
  if (!options.tls.insecure && !options.stdio) {
    auto ctx = tls::Context::create(options.tls, true);
    if (!ctx) return ctx.error();
    tls.emplace(std::move(*ctx));
  }
  return Receiver(options, events, std::move(listener), std::move(dir), std::move(serve), mask, std::move(tls),
                  std::make_shared<StreamRegistry>());
}

std::string Receiver::address() const { return m_opt.stdio ? "stdio" : net::local_name(m_listener.get()); }

Status Receiver::handle_connection(Fd socket) {
  Session session(m_dir.get(), m_opt, m_umask, m_events, m_tls ? &*m_tls : nullptr, std::move(socket), m_serve.get(),
                  m_streams.get());
  return session.run();
}

std::string Receiver::security() const {
  if (m_opt.stdio) return "inside the SSH connection (encrypted and authenticated by SSH)";
  return m_tls ? m_tls->describe() : "PLAINTEXT (--insecure): data is neither encrypted nor authenticated";
}

Status Receiver::serve(Fd first) {
  const tls::Context* tls_ptr = m_tls ? &*m_tls : nullptr;
  // With --once, the loop ends with the first connection's session.
  std::shared_ptr<std::atomic<bool>> primary_done;
  auto primary_status = std::make_shared<Status>();
  recv::Wake primary_wake;
  Connections connections; // (after the wake: its threads may poke it until joined)
  if (first) {
    auto stream = std::make_shared<std::atomic<bool>>(false);
    auto session = std::make_unique<Session>(m_dir.get(), m_opt, m_umask, m_events, tls_ptr, std::move(first),
                                             m_serve.get(), m_streams.get(), Admission::session_or_join, stream);
    primary_done = connections.start(std::move(session), Admission::session_or_join, std::move(stream),
                                     primary_status, &primary_wake);
  }
  // poll() skips a negative descriptor: with --stdio and no --streams, only the wake is watched.
  int listener = m_listener ? m_listener.get() : m_opt.stream_listener;
  while (!(m_opt.stop && m_opt.stop->load())) {
    if (primary_done && primary_done->load()) break;
    pollfd p[2] = {{listener, POLLIN, 0}, {primary_wake.fd(), POLLIN, 0}};
    if (poll(p, 2, 200) <= 0 || !(p[0].revents & POLLIN)) {
      connections.reap_finished();
      continue;
    }
    Fd sock(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
    if (!sock) continue;
    net::tune_socket(sock.get());
    connections.reap_finished();
    auto admission = admission_for(m_opt, connections, *m_streams, primary_done != nullptr);
    if (!admission) {
      // Plaintext REFUSE only where the peer speaks plaintext; a TLS peer
      // just sees the connection close before the handshake.
      m_events.info(net::peer_name(sock.get()) + ": refused: too many sessions (--max-sessions " +
                    std::to_string(m_opt.max_sessions) + ")");
      if (!tls_ptr)
        Session(m_dir.get(), m_opt, m_umask, m_events, tls_ptr, std::move(sock))
            .refuse(frame::Reason::busy, "too many sessions; retry later");
      continue;
    }
    auto stream = std::make_shared<std::atomic<bool>>(false);
    bool primary = m_opt.once && !primary_done;
    auto session = std::make_unique<Session>(m_dir.get(), m_opt, m_umask, m_events, tls_ptr, std::move(sock),
                                             m_serve.get(), m_streams.get(), *admission, stream);
    auto done = connections.start(std::move(session), *admission, std::move(stream),
                                  primary ? primary_status : nullptr, primary ? &primary_wake : nullptr);
    if (primary) primary_done = done;
  }
  connections.join_all();
  return primary_done ? *primary_status : Status{};
}

} // namespace sesscp
