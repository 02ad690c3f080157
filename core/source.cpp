#include "core/source.h"

#include "core/bytes.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <cerrno>
#include <vector>

namespace sesscp {

namespace {

std::int64_t mtime_of(const struct stat& st) {
  return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

} // namespace

Result<SourceFile> SourceFile::open(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    int err = errno;
    return errno_error(err == ENOENT || err == EACCES ? ErrorKind::usage : ErrorKind::io,
                       "cannot open " + path, err);
  }
  struct stat st{};
  if (fstat(fd.get(), &st) != 0) return errno_error(ErrorKind::io, "cannot stat " + path, errno);
  if (!S_ISREG(st.st_mode)) return make_error(ErrorKind::usage, path + " is not a regular file");
  SourceFile f(std::move(fd), path);
  f.m_size = static_cast<std::uint64_t>(st.st_size);
  f.m_mtime_ns = mtime_of(st);
  f.m_mode = st.st_mode & 07777;
  // The file is read once, front to back.
  posix_fadvise(f.m_fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  return f;
}

Status SourceFile::read_at(std::uint64_t offset, std::span<std::uint8_t> out) const {
  std::size_t done = 0;
  while (done < out.size()) {
    ssize_t n = pread(m_fd.get(), out.data() + done, out.size() - done,
                      static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error(ErrorKind::io, "read " + m_path, errno);
    }
    if (n == 0) return make_error(ErrorKind::source_changed, m_path + " shrank while being sent");
    done += static_cast<std::size_t>(n);
  }
  return {};
}

Result<Hash128> SourceFile::fingerprint() const {
  constexpr std::uint64_t k_sample = 64 * 1024;
  ByteWriter w;
  w.u64(m_size);
  std::vector<std::uint8_t> buf;
  std::uint64_t starts[3] = {0, m_size / 2, m_size > k_sample ? m_size - k_sample : 0};
  for (auto start : starts) {
    auto len = std::min(k_sample, m_size - std::min(start, m_size));
    buf.resize(len);
    SESSCP_TRY(read_at(start, buf));
    w.bytes(buf);
  }
  return xxh3_128(w.buffer());
}

Status SourceFile::check_unchanged() const {
  struct stat st{};
  if (fstat(m_fd.get(), &st) != 0) return errno_error(ErrorKind::io, "cannot stat " + m_path, errno);
  if (static_cast<std::uint64_t>(st.st_size) != m_size || mtime_of(st) != m_mtime_ns)
    return make_error(ErrorKind::source_changed, m_path + " changed while it was being sent");
  return {};
}

} // namespace sesscp
