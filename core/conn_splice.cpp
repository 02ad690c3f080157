// Conn::read_to_file: a plaintext chunk from the socket into the part file
// through a pipe (splice(2)), so its bytes are copied once, into the file's
// pages, instead of twice (socket -> buffer -> file); docs/PERFORMANCE.md.
#include "core/conn.h"

#include "base/file_io.h"

#include <fcntl.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace sesscp {

SplicePipe SplicePipe::open(std::size_t want) {
  SplicePipe pipe;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) return pipe;
  pipe.r.reset(fds[0]);
  pipe.w.reset(fds[1]);
  // The largest the kernel grants (fs.pipe-max-size, 1 MiB by default),
  // halving from `want`; the default 64 KiB if it grants nothing more.
  long got = -1;
  for (std::size_t size = want; size >= (64u << 10) && got < 0; size /= 2)
    got = fcntl(fds[1], F_SETPIPE_SZ, static_cast<int>(size));
  if (got < 0) got = fcntl(fds[1], F_GETPIPE_SZ);
  pipe.capacity = got > 0 ? static_cast<std::size_t>(got) : 0;
  if (pipe.capacity == 0) pipe = SplicePipe{};
  return pipe;
}

namespace {

// Everything `pipe` holds (`held` bytes) into the file at *offset.
Status drain_pipe(SplicePipe& pipe, std::size_t held, int file_fd, std::uint64_t& offset, const std::string& what) {
  while (held > 0) {
    auto off = static_cast<loff_t>(offset);
    ssize_t n = splice(pipe.r.get(), nullptr, file_fd, &off, held, SPLICE_F_MOVE);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return errno_error(ErrorKind::io, what, n < 0 ? errno : EIO);
    held -= static_cast<std::size_t>(n);
    offset += static_cast<std::uint64_t>(n);
  }
  return {};
}

} // namespace

Status Conn::read_to_file(int file_fd, std::uint64_t offset, std::size_t len, SplicePipe& pipe,
                          const std::string& what) {
  if (m_ssl || !pipe) return make_error(ErrorKind::internal, "read_to_file needs a plaintext connection and a pipe");
  // What fill() has already read (the rest of the header's 4 KiB).
  std::size_t buffered = std::min(len, m_rend - m_rpos);
  if (buffered) {
    SESSCP_TRY(pwrite_all(file_fd, {m_rbuf.data() + m_rpos, buffered}, offset, what));
    m_rpos += buffered;
    offset += buffered;
    len -= buffered;
  }
  while (len > 0) {
    ssize_t n = splice(m_fd.get(), nullptr, pipe.w.get(), nullptr, std::min(len, pipe.capacity),
                       SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      SESSCP_TRY(drain_pipe(pipe, static_cast<std::size_t>(n), file_fd, offset, what));
      len -= static_cast<std::size_t>(n);
      continue;
    }
    if (n == 0) return make_error(ErrorKind::disconnected, "connection closed by peer");
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return make_error(ErrorKind::disconnected,
        std::string("connection lost while reading (") + std::strerror(errno) + ")");
    SESSCP_TRY(flush());
    SESSCP_TRY(wait_io(POLLIN));
  }
  return {};
}

} // namespace sesscp
