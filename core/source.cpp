#include "core/source.h"

#include "base/bytes.h"
#include "core/frame.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <utility>
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
  return from_fd(std::move(fd), path);
}

Result<SourceFile> SourceFile::open_beneath(int dir_fd, const std::string& rel, const std::string& display) {
  int n = openat2_beneath(dir_fd, rel.c_str(), O_RDONLY);
  if (n < 0) {
    int err = errno;
    return errno_error(err == ENOENT || err == EACCES || err == ELOOP || err == EXDEV ? ErrorKind::usage : ErrorKind::io,
                       "cannot open " + display + (err == ELOOP || err == EXDEV ? " (a symbolic link on the way)" : ""),
                       err);
  }
  return from_fd(Fd(n), display);
}

Result<SourceFile> SourceFile::from_fd(Fd fd, const std::string& path) {
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

Result<Hash128> SourceFile::fingerprint(std::vector<std::uint8_t>* whole) const {
  constexpr std::uint64_t k_sample = 64 * 1024;
  // XXH3-128 of size + the samples, streamed: no copy of the samples (a copy
  // of up to 160 KiB per file made malloc grow and trim the heap every file).
  RootBuilder hash;
  ByteWriter w;
  w.u64(m_size);
  hash.update(w.buffer());
  std::vector<std::uint8_t> buf;
  std::uint64_t starts[3] = {0, m_size / 2, m_size > k_sample ? m_size - k_sample : 0};
  if (m_size <= k_sample) {
    // One read covers all three samples (the same bytes, so the same fingerprint).
    buf.resize(m_size);
    SESSCP_TRY(read_at(0, buf));
    hash.update(buf);
    hash.update(std::span<const std::uint8_t>(buf).subspan(m_size / 2));
    hash.update(buf);
    if (whole) *whole = std::move(buf);
    return hash.digest();
  }
  buf.resize(k_sample);
  for (auto start : starts) {
    auto len = std::min(k_sample, m_size - std::min(start, m_size));
    std::span<std::uint8_t> sample(buf.data(), len);
    SESSCP_TRY(read_at(start, sample));
    hash.update(sample);
  }
  return hash.digest();
}

Status SourceFile::check_unchanged() const {
  struct stat st{};
  if (fstat(m_fd.get(), &st) != 0) return errno_error(ErrorKind::io, "cannot stat " + m_path, errno);
  if (static_cast<std::uint64_t>(st.st_size) != m_size || mtime_of(st) != m_mtime_ns)
    return make_error(ErrorKind::source_changed, m_path + " changed while it was being sent");
  return {};
}

namespace {

class Walker {
public:
  Walker(bool follow_links, std::vector<std::string>& warnings) : m_follow(follow_links), m_warnings(warnings) {}

  Status add_source(std::string path);
  std::vector<SourceEntry> take() { return std::move(m_entries); }

private:
  Status add(const std::string& path, const std::string& name, const struct stat& st, bool top);
  Status walk(const std::string& dir, const std::string& prefix);

  bool m_follow;
  std::vector<std::string>& m_warnings;
  std::vector<SourceEntry> m_entries;
  std::set<std::string> m_names;
  std::vector<std::pair<dev_t, ino_t>> m_ancestors; // directories being walked
};

std::string join(const std::string& a, const std::string& b) { return a.empty() ? b : a + "/" + b; }


Status Walker::add(const std::string& path, const std::string& name, const struct stat& st, bool top) {
  SourceEntry e;
  e.path = path;
  e.name = name;
  e.mode_bits = st.st_mode & 07777;
  e.mtime_ns = mtime_of(st);
  if (S_ISREG(st.st_mode)) {
    e.kind = SourceEntry::Kind::file;
  } else if (S_ISDIR(st.st_mode)) {
    e.kind = SourceEntry::Kind::directory;
  } else if (S_ISLNK(st.st_mode)) {
    e.kind = SourceEntry::Kind::symlink;
    std::vector<char> buf(static_cast<std::size_t>(std::max<off_t>(st.st_size, 255)) + 1);
    ssize_t n = readlink(path.c_str(), buf.data(), buf.size());
    if (n < 0) return errno_error(ErrorKind::io, "readlink " + path, errno);
    if (static_cast<std::size_t>(n) >= buf.size() || n == 0 ||
        static_cast<std::size_t>(n) > frame::k_max_link_target) {
      m_warnings.push_back("skipping symlink " + path + ": target empty or too long");
      return {};
    }
    e.target.assign(buf.data(), static_cast<std::size_t>(n));
  } else {
    std::string what = S_ISFIFO(st.st_mode) ? "a FIFO" : S_ISSOCK(st.st_mode) ? "a socket" : "a device";
    if (top) return make_error(ErrorKind::usage, path + " is " + what + ", not a file or directory");
    m_warnings.push_back("skipping " + path + ": " + what + " is not sent");
    return {};
  }
  if (auto why = frame::check_path(name); !why.empty()) {
    if (top) return make_error(ErrorKind::usage, "cannot send as '" + name + "' (" + why + ")");
    m_warnings.push_back("skipping " + path + ": the receiver would refuse its name (" + why + ")");
    return {};
  }
  if (!m_names.insert(name).second)
    return make_error(ErrorKind::usage, "two sources would land on the same path '" + name + "' at the receiver");
  bool is_dir = e.kind == SourceEntry::Kind::directory;
  m_entries.push_back(std::move(e));
  if (is_dir) return walk(path, name);
  return {};
}

Status Walker::walk(const std::string& dir, const std::string& prefix) {
  struct stat self{};
  if (stat(dir.c_str(), &self) != 0) return errno_error(ErrorKind::io, "cannot stat " + dir, errno);
  for (auto& a : m_ancestors)
    if (a.first == self.st_dev && a.second == self.st_ino) {
      m_warnings.push_back("skipping " + dir + ": a link back to a directory being sent");
      return {};
    }
  if (m_ancestors.size() >= 256) return make_error(ErrorKind::usage, dir + ": directories nested too deep");
  DIR* d = opendir(dir.c_str());
  if (!d) return errno_error(errno == EACCES ? ErrorKind::usage : ErrorKind::io, "cannot read directory " + dir, errno);
  std::vector<std::string> names;
  while (auto* ent = readdir(d)) {
    std::string n = ent->d_name;
    if (n != "." && n != "..") names.push_back(std::move(n));
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  m_ancestors.emplace_back(self.st_dev, self.st_ino);
  for (const auto& n : names) {
    std::string path = dir + "/" + n;
    struct stat st{};
    if (lstat(path.c_str(), &st) != 0) {
      m_warnings.push_back("skipping " + path + ": " + std::strerror(errno));
      continue;
    }
    if (S_ISLNK(st.st_mode) && m_follow) {
      struct stat target{};
      if (stat(path.c_str(), &target) != 0) {
        m_warnings.push_back("skipping " + path + ": dangling symlink (" + std::strerror(errno) + ")");
        continue;
      }
      bool loop = false;
      for (auto& a : m_ancestors) loop = loop || (a.first == target.st_dev && a.second == target.st_ino);
      if (loop) {
        m_warnings.push_back("skipping " + path + ": a link back to a directory being sent");
        continue;
      }
      st = target;
    }
    auto status = add(path, join(prefix, n), st, false);
    if (!status) {
      m_ancestors.pop_back();
      return status;
    }
  }
  m_ancestors.pop_back();
  return {};
}

Status Walker::add_source(std::string path) {
  bool contents = path.size() > 1 && path.back() == '/';
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  struct stat st{};
  if (stat(path.c_str(), &st) != 0) {
    int err = errno;
    return errno_error(err == ENOENT || err == EACCES || err == ENOTDIR ? ErrorKind::usage : ErrorKind::io,
                       "cannot open " + path, err);
  }
  auto slash = path.find_last_of('/');
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  if (S_ISDIR(st.st_mode) && (contents || base.empty() || base == "." || base == ".."))
    return walk(path, "");
  return add(path, base, st, true);
}

} // namespace

Result<std::vector<SourceEntry>> collect_sources(const std::vector<std::string>& sources, bool follow_links,
                                                 std::vector<std::string>& warnings) {
  Walker walker(follow_links, warnings);
  for (const auto& s : sources) SESSCP_TRY(walker.add_source(s));
  return walker.take();
}

} // namespace sesscp
