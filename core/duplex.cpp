#include "core/duplex.h"

#include "core/frame.h"
#include "core/session_state.h"

#include <poll.h>
#include <sys/socket.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <vector>

namespace sesscp::duplex {

namespace {

constexpr int k_send = 0;    // this side's sending engine
constexpr int k_receive = 1; // this side's receiving engine
constexpr std::uint32_t k_max_payload = frame::k_data_prefix + frame::k_max_chunk_size;
// Socketpair buffers: room for many confirmations, and for DATA to stream.
constexpr int k_pair_buffer = 1 << 20;
// Waits are cut into slices so the end of the session is noticed promptly.
constexpr int k_slice_ms = 200;

// The engine a frame from the peer is for, or -1 when it belongs to neither.
int route(frame::Type type) {
  if (session::data_frame(type) || type == frame::Type::release) return k_receive;
  if (session::confirmation_frame(type) || type == frame::Type::release_ack || type == frame::Type::not_finished)
    return k_send;
  return -1;
}

const char* direction_name(int d) {
  return d == k_send ? "this side's sending direction" : "the peer's sending direction";
}

class Relay {
public:
  Relay(Conn& net, int timeout_ms) : m_net(net), m_timeout_ms(timeout_ms) {}
  Status run(const Engine& send, const Engine& receive);

private:
  struct Side {
    std::optional<Conn> mux;   // the relay's end of the engine's socketpair
    std::mutex write_mutex;    // the reader routes into it, the forwarder injects ABORT
    bool input_closed = false; // nothing more is written to the engine (under write_mutex)
    bool finished = false;     // the engine returned (under m_mutex)
    bool ok = false;           // ... after releasing its direction
    bool eof = false;          // its frames ended (forwarder only)
    // Under m_mutex: the direction was released (RELEASE_ACK passed), or
    // its data side asked to (RELEASE passed, no answer yet).
    bool released = false;
    bool release_pending = false;
  };

  void note(const Error& error);
  bool aborted();
  void set_aborted();
  Status net_send(const frame::Header& header, std::span<const std::uint8_t> payload);
  void abort_peer(frame::Reason reason, const std::string& message);
  void inject_abort(int d, frame::Reason reason, const std::string& message);
  void close_input(int d);
  void halt();
  bool wait_finished(int d, int timeout_ms);
  bool all_released();
  // What reading the next frame from the peer gave: a frame, nothing yet,
  // or the end of the reader (a failure noted, or the session's end).
  enum class Read { frame, idle, stop };
  Read receive(frame::Header& header, std::vector<std::uint8_t>& payload);
  void peer_aborted(std::span<const std::uint8_t> payload);
  // Whether a frame for direction `d` goes to its engine: yes, no (the
  // direction failed and the session is ending), or never (a violation).
  enum class Admit { pass, skip, stop };
  Admit admit(int d, frame::Type type);
  void deliver(int d, const frame::Header& header, std::span<const std::uint8_t> payload);
  void reader();
  void violation(const std::string& what);
  void net_lost(const Error& error);
  void forward_one(int d);
  Status open_pairs(Fd (&engine_end)[2]);
  void record_end(int d, const Status& status);
  void forward_all();
  void close_released();

  Conn& m_net;
  int m_timeout_ms;
  std::atomic<bool> m_halt{false};
  std::mutex m_mutex;
  std::condition_variable m_cv;
  std::optional<Error> m_first; // the first failure: what ended the session
  bool m_aborted = false;       // an ABORT went to, or came from, the peer
  bool m_peer_closed = false;   // the peer closed after both directions were released
  std::mutex m_net_write;       // one frame at a time on the connection
  Side m_side[2];
  std::vector<std::uint8_t> m_up; // the forwarder's payload buffer
};

void Relay::note(const Error& error) {
  std::lock_guard lock(m_mutex);
  if (!m_first) m_first = error;
}

bool Relay::aborted() {
  std::lock_guard lock(m_mutex);
  return m_aborted;
}

void Relay::set_aborted() {
  std::lock_guard lock(m_mutex);
  m_aborted = true;
}

Status Relay::net_send(const frame::Header& header, std::span<const std::uint8_t> payload) {
  std::lock_guard lock(m_net_write);
  return m_net.send_frame(header, payload);
}

void Relay::abort_peer(frame::Reason reason, const std::string& message) {
  set_aborted();
  std::lock_guard lock(m_net_write);
  m_net.send_abort(reason, message);
}

// Give engine `d` an ABORT as if the peer had sent it, then end its input.
void Relay::inject_abort(int d, frame::Reason reason, const std::string& message) {
  auto& side = m_side[d];
  std::lock_guard lock(side.write_mutex);
  if (side.input_closed) return;
  side.mux->send_abort(reason, message);
  side.input_closed = true;
  ::shutdown(side.mux->fd(), SHUT_WR);
}

void Relay::close_input(int d) {
  auto& side = m_side[d];
  std::lock_guard lock(side.write_mutex);
  if (side.input_closed) return;
  side.input_closed = true;
  ::shutdown(side.mux->fd(), SHUT_WR);
}

// End the session: the reader stops, the engines' inputs end (each reads
// the end of its connection), and the forwarder drains what they still write.
void Relay::halt() {
  m_halt = true;
  for (int d : {k_send, k_receive}) close_input(d);
}

bool Relay::wait_finished(int d, int timeout_ms) {
  std::unique_lock lock(m_mutex);
  return m_cv.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return m_side[d].finished; });
}

bool Relay::all_released() {
  std::lock_guard lock(m_mutex);
  return m_side[k_send].finished && m_side[k_send].ok && m_side[k_receive].finished && m_side[k_receive].ok;
}

void Relay::violation(const std::string& what) {
  auto error = make_error(ErrorKind::protocol, "peer broke the protocol: " + what);
  note(error);
  abort_peer(frame::Reason::protocol, what);
  for (int d : {k_send, k_receive}) inject_abort(d, frame::Reason::protocol, what);
  halt();
}

// The connection ended or failed. After both directions were released that
// is the peer's orderly close; otherwise both engines see their own end.
void Relay::net_lost(const Error& error) {
  // The last RELEASE_ACK may still be on its way through an engine.
  wait_finished(k_send, 2000);
  wait_finished(k_receive, 2000);
  if (all_released()) {
    std::lock_guard lock(m_mutex);
    m_peer_closed = true;
    m_cv.notify_all();
    return;
  }
  note(error);
  halt();
}

// Wait for the next frame from the peer and read it whole into `payload`.
Relay::Read Relay::receive(frame::Header& header, std::vector<std::uint8_t>& payload) {
  auto ready = m_net.wait_readable(-1, k_slice_ms);
  if (!ready) {
    if (ready.error().kind == ErrorKind::timeout) return Read::idle; // the engines judge silence
    if (!m_halt) net_lost(ready.error());
    return Read::stop;
  }
  if (!*ready) return Read::idle;
  auto got = m_net.read_header(k_max_payload);
  if (!got) {
    if (!m_halt) {
      if (got.error().kind == ErrorKind::protocol) violation(got.error().message);
      else net_lost(got.error());
    }
    return Read::stop;
  }
  payload.resize(got->length);
  if (auto read = m_net.read_exact(payload); !read) {
    if (!m_halt) net_lost(read.error());
    return Read::stop;
  }
  header = *got;
  return Read::frame;
}

// The peer ended the session: both engines read its reason.
void Relay::peer_aborted(std::span<const std::uint8_t> payload) {
  auto abort = frame::decode_abort(payload);
  frame::Reason reason = abort ? abort->reason : frame::Reason::protocol;
  std::string message = abort ? abort->message : "malformed ABORT";
  set_aborted();
  note(make_error(frame::error_kind_for(reason), std::string("peer aborted: ") + frame::to_string(reason) +
                                                     (message.empty() ? "" : ": " + message)));
  for (int d : {k_send, k_receive}) inject_abort(d, reason, message);
  halt();
}

Relay::Admit Relay::admit(int d, frame::Type type) {
  // Until RELEASE is answered its sender may say nothing more in that
  // direction; after RELEASE_ACK, nothing at all.
  std::unique_lock lock(m_mutex);
  auto& side = m_side[d];
  if (side.released || side.release_pending) {
    lock.unlock();
    violation(std::string(frame::to_string(type)) + " after " + direction_name(d) +
              (side.released ? " was released" : " asked to release"));
    return Admit::stop;
  }
  if (d == k_receive && type == frame::Type::release) side.release_pending = true;
  if (d == k_send && type == frame::Type::release_ack) side.released = true;
  if (side.finished) return Admit::skip; // that direction failed and the session is ending
  return Admit::pass;
}

// Hand a frame from the peer to engine `d`.
void Relay::deliver(int d, const frame::Header& header, std::span<const std::uint8_t> payload) {
  auto& side = m_side[d];
  std::lock_guard lock(side.write_mutex);
  if (side.input_closed) return;
  if (auto sent = side.mux->send_frame(header, payload); !sent) {
    // The engine stopped reading: it ended (its own status says why) or stalled.
    side.input_closed = true;
    if (!m_halt && !wait_finished(d, 0)) {
      note(make_error(sent.error().kind, std::string(direction_name(d)) + " stopped reading: " +
                                             sent.error().message));
      m_halt = true;
    }
  }
}

// The reader: every frame from the peer goes to the engine it belongs to.
void Relay::reader() {
  std::vector<std::uint8_t> payload;
  while (!m_halt) {
    frame::Header header{};
    const Read got = receive(header, payload);
    if (got == Read::idle) continue;
    if (got == Read::stop) return;
    if (header.type == frame::Type::abort) {
      peer_aborted(payload);
      return;
    }
    int d = route(header.type);
    if (d < 0) {
      violation(std::string(frame::to_string(header.type)) +
                " belongs to neither direction of an established full-duplex session");
      return;
    }
    const Admit admitted = admit(d, header.type);
    if (admitted == Admit::stop) return;
    if (admitted == Admit::pass) deliver(d, header, payload);
  }
}

// The forwarder: one whole frame from engine `d` to the peer.
void Relay::forward_one(int d) {
  auto& side = m_side[d];
  auto header = side.mux->read_header(k_max_payload);
  if (header) {
    m_up.resize(header->length);
    if (auto read = side.mux->read_exact(m_up); !read) header = read.error();
  }
  if (!header) {
    // The engine closed its end: released, or failed.
    side.eof = true;
    wait_finished(d, m_timeout_ms + 5000);
    bool ok;
    Error why = make_error(ErrorKind::internal, "full-duplex engine ended without a status");
    {
      std::lock_guard lock(m_mutex);
      ok = side.finished && side.ok;
      if (m_first) why = *m_first;
    }
    if (ok || m_halt) return;
    // It failed without telling the peer (e.g. the connection to it was
    // lost, or it was interrupted): end the session with its reason.
    if (!aborted()) abort_peer(frame::reason_for(why.kind), why.message);
    inject_abort(1 - d, frame::reason_for(why.kind), why.message);
    halt();
    return;
  }
  if (m_halt) return; // draining an engine after the end
  if (header->type == frame::Type::abort) {
    // The engine ends the session (e.g. a disk error): the peer and this
    // side's other engine learn why; the engine's linger ends at once.
    auto abort = frame::decode_abort(m_up);
    frame::Reason reason = abort ? abort->reason : frame::Reason::protocol;
    std::string message = abort ? abort->message : "";
    note(make_error(frame::error_kind_for(reason), message));
    set_aborted();
    (void)net_send(*header, m_up);
    inject_abort(1 - d, reason, message);
    halt();
    return;
  }
  if (d == k_receive && (header->type == frame::Type::release_ack || header->type == frame::Type::not_finished)) {
    std::lock_guard lock(m_mutex);
    m_side[d].release_pending = false;
    m_side[d].released = header->type == frame::Type::release_ack;
  }
  if (auto sent = net_send(*header, m_up); !sent) {
    note(sent.error());
    halt();
  }
}

// One socketpair per engine: the engine's end in `engine_end`, the relay's
// end in its Side.
Status Relay::open_pairs(Fd (&engine_end)[2]) {
  for (int d : {k_send, k_receive}) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
      return errno_error(ErrorKind::io, "socketpair", errno);
    for (int fd : sv) {
      setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &k_pair_buffer, sizeof k_pair_buffer);
      setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &k_pair_buffer, sizeof k_pair_buffer);
    }
    engine_end[d] = Fd(sv[0]);
    m_side[d].mux.emplace(Fd(sv[1]), &m_halt, m_timeout_ms);
  }
  return {};
}

// Engine `d` returned `status`.
void Relay::record_end(int d, const Status& status) {
  std::lock_guard lock(m_mutex);
  m_side[d].finished = true;
  m_side[d].ok = static_cast<bool>(status);
  if (!status && !m_first) m_first = status.error();
  m_cv.notify_all();
}

// Forward whole frames from either engine until both have ended.
void Relay::forward_all() {
  int turn = 0;
  while (!m_side[k_send].eof || !m_side[k_receive].eof) {
    bool forwarded = false;
    for (int i = 0; i < 2; ++i) {
      int d = (turn + i) % 2;
      if (!m_side[d].eof && m_side[d].mux->has_buffered()) {
        forward_one(d);
        forwarded = true;
      }
    }
    turn ^= 1;
    if (forwarded) continue;
    pollfd p[2];
    int sides[2];
    nfds_t n = 0;
    for (int d : {k_send, k_receive}) {
      if (m_side[d].eof) continue;
      p[n] = {m_side[d].mux->fd(), POLLIN, 0};
      sides[n++] = d;
    }
    int rc = poll(p, n, k_slice_ms);
    if (rc < 0 && errno != EINTR) {
      note(errno_error(ErrorKind::io, "poll", errno));
      halt();
      return;
    }
    for (nfds_t i = 0; rc > 0 && i < n; ++i)
      if (p[i].revents) forward_one(sides[i]);
  }
}

// Both directions released: close our half; the reader sees the peer's.
void Relay::close_released() {
  {
    std::lock_guard lock(m_net_write);
    m_net.shutdown_write();
  }
  // The peer closes once its own engines have ended.
  std::unique_lock lock(m_mutex);
  m_cv.wait_for(lock, std::chrono::milliseconds(m_timeout_ms), [&] { return m_peer_closed || m_halt.load(); });
}

Status Relay::run(const Engine& send, const Engine& receive) {
  const Engine* engines[2] = {&send, &receive};
  const std::atomic<bool>* user_stop = m_net.stop();
  Fd engine_end[2];
  SESSCP_TRY(open_pairs(engine_end));
  // From here the connection is read by one thread and written by another.
  m_net.share_between_threads();
  m_net.set_stop(&m_halt);
  std::thread threads[2];
  for (int d : {k_send, k_receive}) {
    threads[d] = std::thread([this, d, &engines, user_stop, fd = std::move(engine_end[d])]() mutable {
      Conn conn(std::move(fd), user_stop, m_timeout_ms);
      record_end(d, (*engines[d])(conn));
      // `conn` closes after the status is recorded: its end of file means "look at the status".
    });
  }
  std::thread down([this] { reader(); });
  forward_all();
  if (all_released() && !m_halt) close_released();
  m_halt = true;
  down.join();
  for (auto& t : threads) t.join();
  m_net.set_stop(user_stop);
  std::lock_guard lock(m_mutex);
  if (m_first) return *m_first;
  return {};
}

} // namespace

Status run(Conn& net, const Engine& send, const Engine& receive, int timeout_ms) {
  Relay relay(net, timeout_ms);
  return relay.run(send, receive);
}

} // namespace sesscp::duplex
