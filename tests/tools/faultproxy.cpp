// faultproxy: a single-process TCP relay that injects faults, for tests.
//
//   faultproxy --listen 127.0.0.1:0 --target 127.0.0.1:PORT [options]
//
// For each accepted client it connects to --target and relays both
// directions (one poll loop, non-blocking sockets, bounded buffers). Byte
// counters are per connection and per direction: c2s counts bytes read from
// the client, s2c bytes read from the target. Offsets are 0-based stream
// offsets in that direction.
//
//   --port-file F        write the listening port (decimal + "\n") to F
//   --flip-after N       xor 0x01 into the byte at offset N of --flip-dir
//   --flip-dir c2s|s2c   (default c2s)
//   --cut-after N        once --cut-dir has forwarded N bytes, reset both
//                        sockets (SO_LINGER 0: the peers see RST)
//   --cut-dir c2s|s2c    (default c2s)
//   --stall-after N      once --stall-dir has forwarded N bytes, stop
//                        forwarding in both directions but keep the sockets
//                        open (until a peer closes or SIGTERM; a peer that
//                        exits with unsent data is only seen when its kernel
//                        gives up, since the stalled proxy reads nothing)
//   --stall-dir c2s|s2c  (default c2s)
//   --all-connections    apply flip/cut/stall to every connection; by default
//                        only the FIRST connection gets them, so a client
//                        that reconnects (resumes) goes through cleanly
//   --delay-ms MS        hold every forwarded chunk for MS ms (latency; with
//                        the 256 KiB per-direction buffer bound, throughput
//                        is then at most 256 KiB per MS ms)
//   --rate BYTES_PER_S   throttle each direction of each connection
//   --latency-ms MS      one-way delay of a link (decimal, e.g. 12.5): every
//                        byte is forwarded MS ms after it was read, however
//                        many are in flight, so a path of RTT 2*MS at --rate R
//                        carries R as long as the peers keep R*RTT in flight
//                        (a timestamped queue; unlike --delay-ms the buffer
//                        bound grows to fit the pipe, see --queue-bytes)
//   --queue-bytes N      per-direction buffer bound (default 256 KiB; with
//                        --latency-ms: 2 * rate * MS + 1 MiB, i.e. the pipe
//                        plus one bandwidth-delay product of router buffer,
//                        or 256 MiB without --rate)
//   --once               accept one connection; exit when it has ended
//
// Stderr: "faultproxy: listening on HOST:PORT", one line per connection
// opened/closed (with byte counts) and one line per fault applied, e.g.
// "faultproxy: flipped byte at offset N c2s". Exits 0 on SIGTERM/SIGINT or
// after --once, 64 on bad arguments, 1 on a setup error.
//
// Only the C++ standard library and POSIX: the tool must not share code
// with what it tests.

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

// Per-direction buffer bound: a slow or stalled side exerts back-pressure
// instead of growing the proxy's memory.
constexpr std::size_t k_default_queue = 256 * 1024;
constexpr std::size_t k_read_size = 64 * 1024;

volatile sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

enum class Dir { c2s = 0, s2c = 1 };
const char* dir_name(Dir d) { return d == Dir::c2s ? "c2s" : "s2c"; }

struct Options {
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 0;
  std::string target_host;
  std::uint16_t target_port = 0;
  std::string port_file;
  std::optional<std::uint64_t> flip_after;
  Dir flip_dir = Dir::c2s;
  std::optional<std::uint64_t> cut_after;
  Dir cut_dir = Dir::c2s;
  std::optional<std::uint64_t> stall_after;
  Dir stall_dir = Dir::c2s;
  bool all_connections = false;
  int delay_ms = 0;
  double latency_ms = 0;   // one-way link delay (--latency-ms)
  std::uint64_t queue_bytes = 0; // --queue-bytes; 0 = derived (see usage)
  std::uint64_t rate = 0; // bytes per second per direction; 0 = unlimited
  bool once = false;
};

void say(const std::string& line) {
  std::string s = "faultproxy: " + line + "\n";
  // One write per line so lines from a test's several tools do not interleave.
  ssize_t rc = ::write(STDERR_FILENO, s.data(), s.size());
  (void)rc;
}

bool parse_u64(std::string_view text, std::uint64_t& out) {
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return !text.empty() && ec == std::errc() && end == text.data() + text.size();
}

bool parse_host_port(std::string_view text, std::string& host, std::uint16_t& port, bool allow_zero) {
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) return false;
  std::uint64_t p = 0;
  if (!parse_u64(text.substr(colon + 1), p) || p > 65535 || (p == 0 && !allow_zero)) return false;
  host = std::string(text.substr(0, colon));
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  port = static_cast<std::uint16_t>(p);
  return true;
}

bool parse_dir(std::string_view text, Dir& out) {
  if (text == "c2s") { out = Dir::c2s; return true; }
  if (text == "s2c") { out = Dir::s2c; return true; }
  return false;
}

[[noreturn]] void usage(const std::string& why) {
  say("usage error: " + why);
  std::fputs("usage: faultproxy --listen HOST:PORT --target HOST:PORT [--port-file F]\n"
             "  [--flip-after N] [--flip-dir c2s|s2c] [--cut-after N] [--cut-dir c2s|s2c]\n"
             "  [--stall-after N] [--stall-dir c2s|s2c] [--all-connections]\n"
             "  [--delay-ms MS] [--rate BYTES_PER_S] [--latency-ms MS] [--queue-bytes N] [--once]\n",
             stderr);
  std::exit(64);
}

Options parse_args(int argc, char** argv) {
  Options o;
  bool have_target = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&]() -> std::string_view {
      if (i + 1 >= argc) usage(std::string(a) + " needs a value");
      return argv[++i];
    };
    auto number = [&]() {
      std::string_view v = value();
      std::uint64_t n = 0;
      if (!parse_u64(v, n)) usage(std::string(a) + ": not a number: " + std::string(v));
      return n;
    };
    auto direction = [&]() {
      std::string_view v = value();
      Dir d{};
      if (!parse_dir(v, d)) usage(std::string(a) + ": expected c2s or s2c, got " + std::string(v));
      return d;
    };
    if (a == "--listen") {
      if (!parse_host_port(value(), o.listen_host, o.listen_port, true)) usage("bad --listen address");
    } else if (a == "--target") {
      if (!parse_host_port(value(), o.target_host, o.target_port, false)) usage("bad --target address");
      have_target = true;
    } else if (a == "--port-file") {
      o.port_file = std::string(value());
    } else if (a == "--flip-after") {
      o.flip_after = number();
    } else if (a == "--flip-dir") {
      o.flip_dir = direction();
    } else if (a == "--cut-after") {
      o.cut_after = number();
    } else if (a == "--cut-dir") {
      o.cut_dir = direction();
    } else if (a == "--stall-after") {
      o.stall_after = number();
    } else if (a == "--stall-dir") {
      o.stall_dir = direction();
    } else if (a == "--all-connections") {
      o.all_connections = true;
    } else if (a == "--delay-ms") {
      std::uint64_t ms = number();
      if (ms > 600000) usage("--delay-ms above 600000");
      o.delay_ms = static_cast<int>(ms);
    } else if (a == "--latency-ms") {
      std::string v(value());
      char* end = nullptr;
      double ms = std::strtod(v.c_str(), &end);
      if (v.empty() || *end != '\0' || !(ms >= 0) || ms > 600000) usage("--latency-ms: not a delay in ms: " + v);
      o.latency_ms = ms;
    } else if (a == "--queue-bytes") {
      o.queue_bytes = number();
      if (o.queue_bytes < 65536) usage("--queue-bytes below 65536");
    } else if (a == "--rate") {
      o.rate = number();
    } else if (a == "--once") {
      o.once = true;
    } else if (a == "-h" || a == "--help") {
      usage("help requested");
    } else {
      usage("unknown argument " + std::string(a));
    }
  }
  if (!have_target) usage("--target is required");
  if (o.queue_bytes == 0) {
    // A link of one-way delay D at rate R holds R*D bytes in flight; leave as
    // much again for queueing, as a router sized by the usual rule would.
    double pipe = o.rate ? 2.0 * static_cast<double>(o.rate) * o.latency_ms / 1000.0 + 1048576.0 : 256.0 * 1048576.0;
    o.queue_bytes = o.latency_ms > 0 ? static_cast<std::uint64_t>(pipe) : k_default_queue;
  }
  return o;
}

void set_nonblocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

// Close with RST instead of FIN: what a crashed middlebox or peer looks like.
void close_reset(int fd) {
  if (fd < 0) return;
  linger l{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  ::close(fd);
}

std::string local_port_of(int fd, std::uint16_t& port) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  char host[INET6_ADDRSTRLEN] = "?";
  if (ss.ss_family == AF_INET) {
    sockaddr_in sin{};
    std::memcpy(&sin, &ss, sizeof sin);
    inet_ntop(AF_INET, &sin.sin_addr, host, sizeof host);
    port = ntohs(sin.sin_port);
    return std::string(host) + ":" + std::to_string(port);
  }
  sockaddr_in6 sin6{};
  std::memcpy(&sin6, &ss, sizeof sin6);
  inet_ntop(AF_INET6, &sin6.sin6_addr, host, sizeof host);
  port = ntohs(sin6.sin6_port);
  return "[" + std::string(host) + "]:" + std::to_string(port);
}

int listen_on(const std::string& host, std::uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST;
  addrinfo* list = nullptr;
  std::string port_text = std::to_string(port);
  if (getaddrinfo(host.c_str(), port_text.c_str(), &hints, &list) != 0 || !list) return -1;
  int fd = socket(list->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd >= 0 && (bind(fd, list->ai_addr, list->ai_addrlen) != 0 || ::listen(fd, 64) != 0)) {
    ::close(fd);
    fd = -1;
  }
  freeaddrinfo(list);
  if (fd >= 0) set_nonblocking(fd);
  return fd;
}

// Start a non-blocking connect; completion is seen as POLLOUT in the loop.
int start_connect(const std::string& host, std::uint16_t port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  std::string port_text = std::to_string(port);
  if (getaddrinfo(host.c_str(), port_text.c_str(), &hints, &list) != 0 || !list) return -1;
  int fd = socket(list->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd >= 0 && connect(fd, list->ai_addr, list->ai_addrlen) != 0 && errno != EINPROGRESS) {
    ::close(fd);
    fd = -1;
  }
  freeaddrinfo(list);
  return fd;
}

// A chunk read from one side, released to the other at `due` (--delay-ms).
struct Chunk {
  std::vector<std::uint8_t> bytes;
  std::size_t pos = 0;
  Clock::time_point due;
};

struct Flow {
  Dir dir = Dir::c2s;
  std::uint64_t read_total = 0;    // bytes read from the source: the stream offset
  std::uint64_t written_total = 0; // bytes written to the destination
  std::uint64_t limit = UINT64_MAX; // read no further (cut/stall point)
  std::deque<Chunk> queue;
  std::size_t queued = 0;
  bool eof = false;      // the source shut its side down
  bool shut = false;     // we passed the shutdown on to the destination
  bool reset = false;    // the source was reset: reset the destination once drained
  double tokens = 0;     // --rate token bucket
  Clock::time_point refilled = Clock::now();
};

struct Relay {
  int id = 0;
  int client = -1;
  int server = -1;
  bool connecting = true;
  bool faulty = false;  // flip/cut/stall apply to this connection
  bool stalled = false;
  bool done = false;
  Flow flow[2];
};

class Proxy {
public:
  explicit Proxy(Options options)
      : m_opt(std::move(options)), m_max_queued(static_cast<std::size_t>(m_opt.queue_bytes)),
        m_hold(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double, std::milli>(
            static_cast<double>(m_opt.delay_ms) + m_opt.latency_ms))) {}

  int run();

private:
  void accept_clients();
  void finish_connect(Relay& r);
  void read_side(Relay& r, Dir d);
  void write_side(Relay& r, Dir d, Clock::time_point now);
  void end(Relay& r, bool reset, const std::string& why);
  int source_fd(const Relay& r, Dir d) const { return d == Dir::c2s ? r.client : r.server; }
  int dest_fd(const Relay& r, Dir d) const { return d == Dir::c2s ? r.server : r.client; }
  std::size_t rate_allowance(Flow& f, Clock::time_point now) const;

  Options m_opt;
  std::size_t m_max_queued;  // per-direction buffer bound: back-pressure beyond it
  Clock::duration m_hold;    // --delay-ms + --latency-ms: how long a chunk waits
  int m_listener = -1;
  int m_next_id = 1;
  bool m_accepted_once = false;
  std::list<Relay> m_relays;
};

int Proxy::run() {
  m_listener = listen_on(m_opt.listen_host, m_opt.listen_port);
  if (m_listener < 0) {
    say("cannot listen on " + m_opt.listen_host + ":" + std::to_string(m_opt.listen_port) + ": " +
        std::strerror(errno));
    return 1;
  }
  std::uint16_t port = 0;
  std::string name = local_port_of(m_listener, port);
  if (!m_opt.port_file.empty()) {
    // Write then rename, so a test polling the file never reads half a number.
    std::string tmp = m_opt.port_file + ".tmp";
    {
      std::ofstream f(tmp);
      f << port << "\n";
    }
    if (std::rename(tmp.c_str(), m_opt.port_file.c_str()) != 0) {
      say("cannot write --port-file " + m_opt.port_file);
      return 1;
    }
  }
  say("listening on " + name);

  while (!g_stop) {
    std::vector<pollfd> fds;
    std::vector<std::pair<Relay*, int>> who; // relay and which socket (0 client, 1 server)
    bool accepting = !(m_opt.once && m_accepted_once);
    if (accepting) fds.push_back({m_listener, POLLIN, 0});
    auto now = Clock::now();
    int timeout = 500;
    for (auto& r : m_relays) {
      if (r.connecting) {
        fds.push_back({r.server, POLLOUT, 0});
        who.emplace_back(&r, 1);
        continue;
      }
      short ev[2] = {0, 0}; // client, server
      for (Dir d : {Dir::c2s, Dir::s2c}) {
        Flow& f = r.flow[static_cast<int>(d)];
        int src = d == Dir::c2s ? 0 : 1;
        if (r.stalled) continue;
        if (!f.eof && f.queued < m_max_queued && f.read_total < f.limit) ev[src] |= POLLIN;
        if (!f.queue.empty()) {
          auto due = f.queue.front().due;
          std::size_t allow = rate_allowance(f, now);
          if (due <= now && allow > 0) {
            ev[1 - src] |= POLLOUT;
          } else {
            // Wake when the chunk is due or the bucket holds some bytes again.
            auto wait = due > now ? std::chrono::duration_cast<std::chrono::milliseconds>(due - now).count() + 1 : 5;
            timeout = std::min<int>(timeout, static_cast<int>(std::max<long long>(wait, 1)));
          }
        }
      }
      // POLLRDHUP so a stalled connection still notices that a peer left;
      // otherwise only with POLLIN, or a full queue would spin on it.
      for (int s = 0; s < 2; ++s) {
        short want = ev[s];
        if (r.stalled || (want & POLLIN)) want = static_cast<short>(want | POLLRDHUP);
        fds.push_back({s == 0 ? r.client : r.server, want, 0});
        who.emplace_back(&r, s);
      }
    }
    int rc = poll(fds.data(), fds.size(), timeout);
    if (rc < 0) {
      if (errno == EINTR) continue;
      say(std::string("poll: ") + std::strerror(errno));
      return 1;
    }
    std::size_t base = 0;
    if (accepting) {
      if (fds[0].revents & POLLIN) accept_clients();
      base = 1;
    }
    now = Clock::now();
    for (std::size_t i = 0; i < who.size(); ++i) {
      Relay& r = *who[i].first;
      short rev = fds[base + i].revents;
      if (r.done || rev == 0) continue;
      int side = who[i].second;
      if (r.connecting) {
        finish_connect(r);
        continue;
      }
      Dir read_dir = side == 0 ? Dir::c2s : Dir::s2c;
      Dir write_dir = side == 0 ? Dir::s2c : Dir::c2s;
      if (r.stalled) {
        // Nothing is forwarded any more; a peer closing (or resetting) ends it.
        if (rev & (POLLRDHUP | POLLHUP | POLLERR)) end(r, true, std::string("peer closed while stalled (") +
                                                                   (side == 0 ? "client" : "target") + ")");
        continue;
      }
      Flow& rf = r.flow[static_cast<int>(read_dir)];
      if ((rev & POLLERR) && (rf.queued >= m_max_queued || rf.read_total >= rf.limit)) {
        // Cannot take what is left on the socket before its error; give up
        // rather than spin on POLLERR.
        end(r, true, std::string(side == 0 ? "client" : "target") + " socket error with the queue full");
        continue;
      }
      // A socket that saw a reset still yields the bytes that came before it
      // (e.g. a TLS alert): read them, then pass the reset on.
      if (rev & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)) read_side(r, read_dir);
      if (!r.done && (rev & POLLOUT)) write_side(r, write_dir, now);
    }
    // Flush what became due without waiting for another POLLOUT round.
    for (auto& r : m_relays) {
      if (r.done || r.connecting || r.stalled) continue;
      for (Dir d : {Dir::c2s, Dir::s2c}) if (!r.done) write_side(r, d, now);
    }
    m_relays.remove_if([](const Relay& r) { return r.done; });
    if (m_opt.once && m_accepted_once && m_relays.empty()) break;
  }
  for (auto& r : m_relays) end(r, true, "proxy stopping");
  ::close(m_listener);
  say("exiting");
  return 0;
}

void Proxy::accept_clients() {
  for (;;) {
    if (m_opt.once && m_accepted_once) return;
    int c = accept4(m_listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c < 0) return;
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    Relay r;
    r.id = m_next_id++;
    r.client = c;
    r.faulty = m_opt.all_connections || !m_accepted_once;
    m_accepted_once = true;
    r.flow[0].dir = Dir::c2s;
    r.flow[1].dir = Dir::s2c;
    if (r.faulty) {
      // Read no further than a cut or stall point, so that the fault hits at
      // exactly that stream offset whatever the read sizes are.
      if (m_opt.cut_after) r.flow[static_cast<int>(m_opt.cut_dir)].limit = *m_opt.cut_after;
      if (m_opt.stall_after) {
        auto& lim = r.flow[static_cast<int>(m_opt.stall_dir)].limit;
        lim = std::min(lim, *m_opt.stall_after);
      }
    }
    r.server = start_connect(m_opt.target_host, m_opt.target_port);
    if (r.server < 0) {
      say("connection " + std::to_string(r.id) + ": cannot connect to target: " + std::strerror(errno));
      close_reset(c);
      continue;
    }
    say("connection " + std::to_string(r.id) + ": accepted" + (r.faulty ? " (faults armed)" : ""));
    m_relays.push_back(std::move(r));
  }
}

void Proxy::finish_connect(Relay& r) {
  int err = 0;
  socklen_t len = sizeof err;
  getsockopt(r.server, SOL_SOCKET, SO_ERROR, &err, &len);
  if (err != 0) {
    end(r, true, std::string("cannot connect to target: ") + std::strerror(err));
    return;
  }
  int one = 1;
  setsockopt(r.server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  r.connecting = false;
  auto now = Clock::now();
  for (auto& f : r.flow) f.refilled = now;
}

void Proxy::read_side(Relay& r, Dir d) {
  Flow& f = r.flow[static_cast<int>(d)];
  if (f.eof || f.queued >= m_max_queued || f.read_total >= f.limit) return;
  std::size_t want = std::min<std::uint64_t>(k_read_size, f.limit - f.read_total);
  want = std::min(want, m_max_queued - f.queued);
  Chunk c;
  c.bytes.resize(want);
  ssize_t n = recv(source_fd(r, d), c.bytes.data(), want, 0);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
    // Pass a reset on as a reset, but only after what arrived before it is
    // delivered: the other peer must see the same bytes, then the same failure.
    f.reset = true;
    f.eof = true;
    say("connection " + std::to_string(r.id) + ": " + dir_name(d) + " source: " + std::strerror(errno));
    write_side(r, d, Clock::now());
    return;
  }
  if (n == 0) {
    f.eof = true;
    return;
  }
  c.bytes.resize(static_cast<std::size_t>(n));
  std::uint64_t start = f.read_total;
  f.read_total += static_cast<std::uint64_t>(n);
  if (r.faulty && m_opt.flip_after && m_opt.flip_dir == d && *m_opt.flip_after >= start &&
      *m_opt.flip_after < f.read_total) {
    c.bytes[*m_opt.flip_after - start] ^= 0x01;
    say("flipped byte at offset " + std::to_string(*m_opt.flip_after) + " " + dir_name(d));
  }
  c.due = Clock::now() + m_hold;
  f.queued += c.bytes.size();
  f.queue.push_back(std::move(c));
}

std::size_t Proxy::rate_allowance(Flow& f, Clock::time_point now) const {
  if (m_opt.rate == 0) return SIZE_MAX;
  // Token bucket with a burst of 1/20 s (at least 4 KiB) keeps the pace even
  // at fine grain, so a test can predict where a transfer is after t seconds.
  double burst = std::max(4096.0, static_cast<double>(m_opt.rate) / 20.0);
  double secs = std::chrono::duration<double>(now - f.refilled).count();
  f.tokens = std::min(burst, f.tokens + secs * static_cast<double>(m_opt.rate));
  f.refilled = now;
  return f.tokens >= 1.0 ? static_cast<std::size_t>(f.tokens) : 0;
}

void Proxy::write_side(Relay& r, Dir d, Clock::time_point now) {
  Flow& f = r.flow[static_cast<int>(d)];
  int dst = dest_fd(r, d);
  while (!f.queue.empty()) {
    Chunk& c = f.queue.front();
    if (c.due > now) return;
    std::size_t allow = rate_allowance(f, now);
    if (allow == 0) return;
    std::size_t len = std::min(c.bytes.size() - c.pos, allow);
    ssize_t n = send(dst, c.bytes.data() + c.pos, len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
      int err = errno;
      // The destination is gone; whatever it said before going (e.g. a TLS
      // alert) still goes back to the other peer, then the reset does.
      Dir back = d == Dir::c2s ? Dir::s2c : Dir::c2s;
      Flow& b = r.flow[static_cast<int>(back)];
      while (!b.eof && b.queued < m_max_queued && b.read_total < b.limit) {
        std::uint64_t before = b.read_total;
        read_side(r, back);
        if (r.done || b.read_total == before) break;
      }
      if (!r.done) {
        b.reset = true;
        b.eof = true;
        say("connection " + std::to_string(r.id) + ": " + dir_name(d) + " write: " + std::strerror(err));
        write_side(r, back, Clock::now());
      }
      return;
    }
    if (m_opt.rate) f.tokens -= static_cast<double>(n);
    c.pos += static_cast<std::size_t>(n);
    f.queued -= static_cast<std::size_t>(n);
    f.written_total += static_cast<std::uint64_t>(n);
    if (c.pos == c.bytes.size()) f.queue.pop_front();
  }
  // Everything up to the limit is delivered: apply the cut or stall there.
  if (r.faulty && f.read_total >= f.limit) {
    if (m_opt.cut_after && m_opt.cut_dir == d && f.written_total >= *m_opt.cut_after) {
      say("cut connection " + std::to_string(r.id) + " at offset " + std::to_string(f.written_total) + " " +
          dir_name(d) + " (RST both sides)");
      end(r, true, "cut");
      return;
    }
    if (m_opt.stall_after && m_opt.stall_dir == d && f.written_total >= *m_opt.stall_after && !r.stalled) {
      r.stalled = true;
      say("stalled connection " + std::to_string(r.id) + " at offset " + std::to_string(f.written_total) + " " +
          dir_name(d) + " (both directions, sockets kept open)");
      return;
    }
  }
  if (f.reset) {
    end(r, true, std::string(dir_name(d)) + " source reset, passed on");
    return;
  }
  if (f.eof && !f.shut) {
    shutdown(dst, SHUT_WR);
    f.shut = true;
  }
  if (r.flow[0].shut && r.flow[1].shut) end(r, false, "closed by both peers");
}

void Proxy::end(Relay& r, bool reset, const std::string& why) {
  if (r.done) return;
  r.done = true;
  say("connection " + std::to_string(r.id) + ": ended (" + why + "); c2s " + std::to_string(r.flow[0].written_total) +
      " bytes, s2c " + std::to_string(r.flow[1].written_total) + " bytes");
  if (reset) {
    close_reset(r.client);
    close_reset(r.server);
  } else {
    ::close(r.client);
    ::close(r.server);
  }
  r.client = r.server = -1;
}

} // namespace

int main(int argc, char** argv) {
  Options options = parse_args(argc, argv);
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  // No SA_RESTART: poll must return EINTR so the loop sees the stop flag.
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return Proxy(std::move(options)).run();
}
