#include "core/net.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

namespace sesscp::net {

Result<Endpoint> parse_endpoint(std::string_view text, bool allow_zero_port) {
  auto usage = [&](const char* why) {
    return make_error(ErrorKind::usage, "bad address '" + std::string(text) + "' (" + why +
                                            "; expected HOST:PORT)");
  };
  auto colon = text.rfind(':');
  if (colon == std::string_view::npos) return usage("no port");
  std::string_view host = text.substr(0, colon);
  std::string_view port = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty()) return usage("no host");
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value > 65535)
    return usage("port must be a number from 1 to 65535");
  if (value == 0 && !allow_zero_port) return usage("port must be a number from 1 to 65535");
  return Endpoint{std::string(host), static_cast<std::uint16_t>(value)};
}

namespace {

struct AddrInfo {
  addrinfo* list = nullptr;
  ~AddrInfo() { if (list) freeaddrinfo(list); }
};

Result<void*> resolve(const Endpoint& ep, bool passive, AddrInfo& out) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = passive ? AI_PASSIVE : AI_ADDRCONFIG;
  std::string port = std::to_string(ep.port);
  int rc = getaddrinfo(ep.host.c_str(), port.c_str(), &hints, &out.list);
  if (rc != 0)
    return make_error(ErrorKind::unreachable, "cannot resolve '" + ep.host + "' (" + gai_strerror(rc) + ")");
  return static_cast<void*>(nullptr);
}

std::string name_of(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_UNIX) return "stdio"; // recv --stdio: the SSH channel, through a socketpair
  char host[INET6_ADDRSTRLEN] = "?";
  std::uint16_t port = 0;
  if (ss.ss_family == AF_INET) {
    auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host);
    port = ntohs(sin->sin_port);
    return std::string(host) + ":" + std::to_string(port);
  }
  if (ss.ss_family == AF_INET6) {
    auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host);
    port = ntohs(sin6->sin6_port);
    return "[" + std::string(host) + "]:" + std::to_string(port);
  }
  return "?";
}

// Finish a non-blocking connect within timeout_ms; return 0 or an errno.
int wait_connected(int fd, int timeout_ms) {
  pollfd p{fd, POLLOUT, 0};
  int rc;
  do rc = poll(&p, 1, timeout_ms);
  while (rc < 0 && errno == EINTR);
  if (rc == 0) return ETIMEDOUT;
  if (rc < 0) return errno;
  int err = 0;
  socklen_t len = sizeof err;
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
  return err;
}

} // namespace

void tune_socket(int fd) {
  int one = 1;
  // Control frames are small and latency-bound; data frames are large writes anyway.
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  fcntl(fd, F_SETFD, FD_CLOEXEC);
}

void set_dead_peer_timeout(int fd, int timeout_ms) {
  // Keepalive probes after a third of the timeout of silence, three of them
  // spread over the next third: a vanished host (half-open connection) is
  // found even while no frame is due. TCP_USER_TIMEOUT bounds how long sent
  // data may stay unacknowledged before the kernel drops the connection.
  int idle = std::max(1, timeout_ms / 3000);
  int interval = std::max(1, timeout_ms / 9000);
  int count = 3;
  unsigned user_timeout = static_cast<unsigned>(std::max(1000, timeout_ms));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
  setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof user_timeout);
}

Result<Fd> connect_tcp(const Endpoint& ep, int timeout_ms) {
  AddrInfo ai;
  SESSCP_TRY(resolve(ep, false, ai));
  int last_err = 0;
  for (auto* a = ai.list; a; a = a->ai_next) {
    Fd fd(socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol));
    if (!fd) { last_err = errno; continue; }
    int rc = connect(fd.get(), a->ai_addr, a->ai_addrlen);
    int err = rc == 0 ? 0 : errno;
    if (err == EINPROGRESS) err = wait_connected(fd.get(), timeout_ms);
    if (err != 0) { last_err = err; continue; }
    int flags = fcntl(fd.get(), F_GETFL);
    fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
    tune_socket(fd.get());
    return fd;
  }
  return make_error(ErrorKind::unreachable, "cannot connect to " + ep.host + ":" +
                                                std::to_string(ep.port) + " (" +
                                                std::strerror(last_err) + ")");
}

Result<Fd> listen_tcp(const Endpoint& ep) {
  AddrInfo ai;
  SESSCP_TRY(resolve(ep, true, ai));
  int last_err = 0;
  for (auto* a = ai.list; a; a = a->ai_next) {
    Fd fd(socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
    if (!fd) { last_err = errno; continue; }
    int one = 1;
    setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd.get(), a->ai_addr, a->ai_addrlen) != 0 || listen(fd.get(), 64) != 0) {
      last_err = errno;
      continue;
    }
    return fd;
  }
  return make_error(ErrorKind::usage, "cannot listen on " + ep.host + ":" + std::to_string(ep.port) +
                                          " (" + std::strerror(last_err) + ")");
}

std::string local_name(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  return name_of(ss);
}

std::string peer_name(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
  return name_of(ss);
}

} // namespace sesscp::net
