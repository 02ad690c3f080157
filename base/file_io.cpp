#include "base/file_io.h"

#include "base/fd.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace sesscp {

Status pwrite_all(int fd, std::span<const std::uint8_t> data, std::uint64_t offset, const std::string& what) {
  while (!data.empty()) {
    const ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error(ErrorKind::io, what, errno);
    }
    data = data.subspan(static_cast<std::size_t>(n));
    offset += static_cast<std::uint64_t>(n);
  }
  return {};
}

Result<std::size_t> pread_full(int fd, std::span<std::uint8_t> out, std::uint64_t offset, const std::string& what) {
  std::size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::pread(fd, out.data() + got, out.size() - got, static_cast<off_t>(offset + got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error(ErrorKind::io, what, errno);
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  return got;
}

Status fsync_dir(const std::string& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return errno_error(ErrorKind::io, "open directory " + dir, errno);
  return fsync_dir(fd.get(), dir);
}

Status fsync_dir(int dir_fd, const std::string& dir) {
  if (::fsync(dir_fd) != 0) return errno_error(ErrorKind::io, "fsync directory " + dir, errno);
  return {};
}

std::string basename_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string dirname_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

} // namespace sesscp
