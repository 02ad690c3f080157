#include "ssh/stdio.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace sesscp::ssh {

namespace {

bool is_socket(int fd) {
  struct stat st{};
  return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

// Copy `from` to `to` until EOF or an error, then end `to`'s writing
// direction (shutdown for a socket, close for a pipe when `close_to`).
// read/write, not splice(): splice from a pipe into a unix socket lost
// wake-ups here (a session stalled with the bytes relayed), and SSH's
// cipher costs far more than this copy.
void pump(int from, int to, bool close_to) {
  std::vector<char> buf(1 << 18);
  for (;;) {
    ssize_t n = ::read(from, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    bool failed = false;
    for (ssize_t done = 0; done < n;) {
      ssize_t w = ::write(to, buf.data() + done, static_cast<std::size_t>(n - done));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        failed = true;
        break;
      }
      done += w;
    }
    if (failed) break;
  }
  if (is_socket(to)) shutdown(to, SHUT_WR);
  if (close_to) ::close(to);
}

std::string socket_dir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string base = tmp && *tmp ? tmp : "/tmp";
  return base + "/sesscp-" + std::to_string(getuid());
}

} // namespace

bool valid_stream_id(const std::string& id) {
  if (id.size() < 8 || id.size() > 64) return false;
  for (char c : id)
    if (!std::isxdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

Result<std::unique_ptr<StdioBridge>> StdioBridge::start() {
  std::unique_ptr<StdioBridge> b(new StdioBridge());
  b->m_in = Fd(fcntl(0, F_DUPFD_CLOEXEC, 3));
  b->m_out = Fd(fcntl(1, F_DUPFD_CLOEXEC, 3));
  if (!b->m_in || !b->m_out) return errno_error(ErrorKind::io, "stdin/stdout", errno);
  // Anything printed to stdout by mistake must not corrupt the session.
  if (dup2(2, 1) < 0) return errno_error(ErrorKind::io, "dup2", errno);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return errno_error(ErrorKind::io, "socketpair", errno);
  b->m_session = Fd(sv[0]);
  b->m_relay = Fd(sv[1]);
  int size = 4 << 20;
  for (int fd : {sv[0], sv[1]}) {
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
  }
  int relay = b->m_relay.get(), in = b->m_in.get(), out = b->m_out.get();
  b->m_in_thread = std::thread([in, relay] { pump(in, relay, false); });
  b->m_out_thread = std::thread([relay, out] { pump(relay, out, false); });
  return b;
}

void StdioBridge::finish() {
  m_session.reset();
  if (m_out_thread.joinable()) m_out_thread.join();
  m_out.reset(); // EOF for the local side: the channel closes
}

StdioBridge::~StdioBridge() {
  finish();
  // The stdin relay may still wait for the local side's EOF; the process is ending.
  if (m_in_thread.joinable()) m_in_thread.detach();
  (void)m_relay.release();
  (void)m_in.release();
}

std::string stream_socket_path(const std::string& id) { return socket_dir() + "/" + id + ".sock"; }

namespace {

// A unix stream socket and the address of stream_socket_path(id) in `addr`.
Result<Fd> unix_socket(const std::string& id, sockaddr_un& addr) {
  addr = {};
  addr.sun_family = AF_UNIX;
  std::string path = stream_socket_path(id);
  if (path.size() >= sizeof addr.sun_path) return make_error(ErrorKind::cannot_create, "socket path too long: " + path);
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  Fd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return errno_error(ErrorKind::io, "socket", errno);
  return fd;
}

} // namespace

Result<Fd> listen_stream_socket(const std::string& id) {
  std::string dir = socket_dir();
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return errno_error(ErrorKind::cannot_create, "cannot create " + dir, errno);
  struct stat st{};
  if (lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 077))
    return make_error(ErrorKind::cannot_create, dir + " is not a directory of this user's with mode 0700");
  sockaddr_un addr{};
  auto made = unix_socket(id, addr);
  if (!made) return made.error();
  Fd fd = std::move(*made);
  std::string path = addr.sun_path;
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || listen(fd.get(), 64) != 0)
    return errno_error(ErrorKind::cannot_create, "cannot listen at " + path, errno);
  return fd;
}

void unlink_stream_socket(const std::string& id) { ::unlink(stream_socket_path(id).c_str()); }

Status join_stream(const std::string& id) {
  sockaddr_un addr{};
  auto made = unix_socket(id, addr);
  if (!made) return made.error();
  Fd fd = std::move(*made);
  std::string path = addr.sun_path;
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    return errno_error(ErrorKind::refused, "no session to join at " + path, errno);
  int out = fcntl(1, F_DUPFD_CLOEXEC, 3);
  dup2(2, 1);
  int sock = fd.get();
  std::thread in([sock] { pump(0, sock, false); });
  pump(sock, out, true);
  in.detach(); // stdin ends with the channel, or the process does
  return {};
}

} // namespace sesscp::ssh
