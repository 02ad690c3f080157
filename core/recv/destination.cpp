#include "core/recv/destination.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

namespace sesscp::recv {

int open_beneath(int dir_fd, const std::string& name, int flags, mode_t mode) {
  int fd = openat2_beneath(dir_fd, name.c_str(), flags, mode);
  if (fd >= 0 || errno != ENOSYS) return fd;
  return openat(dir_fd, name.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode);
}

Status check_own_file(int fd, const std::string& name) {
  struct stat st{};
  if (fstat(fd, &st) != 0) return errno_error(ErrorKind::io, "stat " + name, errno);
  if (!S_ISREG(st.st_mode)) return make_error(ErrorKind::cannot_create, name + " is not a regular file");
  static const uid_t euid = geteuid();
  if (st.st_uid != euid)
    return make_error(ErrorKind::cannot_create, name + " is owned by uid " + std::to_string(st.st_uid) +
                                                    ", not by this receiver (uid " + std::to_string(euid) + ")");
  return {};
}

Result<Fd> lock_destination(int dir_fd, const std::string& journal_name, bool* created) {
  for (int attempt = 0; attempt < 5; ++attempt) {
    // Usually absent: creating it exclusively proves it is a new, empty
    // regular file of ours without a stat.
    Fd fd(open_beneath(dir_fd, journal_name, O_RDWR | O_CREAT | O_EXCL, 0600));
    bool fresh = static_cast<bool>(fd);
    if (!fd && errno == EEXIST) fd = Fd(open_beneath(dir_fd, journal_name, O_RDWR | O_CREAT, 0600));
    if (!fd) return errno_error(ErrorKind::cannot_create, "cannot create " + journal_name, errno);
    if (!fresh) SESSCP_TRY(check_own_file(fd.get(), journal_name));
    if (created) *created = fresh;
    if (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK)
        return make_error(ErrorKind::busy, "destination is being written by another session");
      return errno_error(ErrorKind::io, "flock " + journal_name, errno);
    }
    struct stat held{}, now{};
    if (fstat(fd.get(), &held) == 0 && fstatat(dir_fd, journal_name.c_str(), &now, AT_SYMLINK_NOFOLLOW) == 0 &&
        held.st_ino == now.st_ino && held.st_dev == now.st_dev)
      return fd;
  }
  return make_error(ErrorKind::busy, "destination is being written by another session");
}

bool names_file(int dir_fd, const std::string& name, int fd) {
  struct stat ours{}, there{};
  return fstat(fd, &ours) == 0 && fstatat(dir_fd, name.c_str(), &there, AT_SYMLINK_NOFOLLOW) == 0 &&
         ours.st_ino == there.st_ino && ours.st_dev == there.st_dev;
}

std::int64_t mtime_of(const struct stat& st) {
  return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

Status set_size(int fd, std::uint64_t size, const std::string& part_name) {
  struct stat st{};
  if ((fstat(fd, &st) != 0 || static_cast<std::uint64_t>(st.st_size) != size) &&
      ftruncate(fd, static_cast<off_t>(size)) != 0)
    return errno_error(ErrorKind::io, "truncate " + part_name, errno);
  return {};
}

Status set_mode_and_mtime(int fd, const frame::Offer& offer, unsigned umask, const std::string& part_name) {
  fchmod(fd, offer.mode_bits & 0777 & ~umask);
  auto times = mtime_times(offer.mtime_ns);
  if (futimens(fd, times.data()) != 0) return errno_error(ErrorKind::io, "set mtime of " + part_name, errno);
  return {};
}

Result<Fd> make_dirs(int root_fd, const std::string& root_path, std::string_view rel) {
  // A fresh descriptor of the root (not a dup: test tools that watch the
  // directory recognise it by the path it was opened with).
  Fd cur(openat(root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!cur) return errno_error(ErrorKind::io, "open " + root_path, errno);
  std::size_t start = 0;
  while (start < rel.size()) {
    auto slash = rel.find('/', start);
    std::string component(rel.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start));
    start = slash == std::string_view::npos ? rel.size() : slash + 1;
    if (mkdirat(cur.get(), component.c_str(), 0755) == 0) {
      // The new entry must survive a crash as much as the files inside it.
      if (fsync(cur.get()) != 0) return errno_error(ErrorKind::io, "fsync directory of " + std::string(rel), errno);
    } else if (errno != EEXIST) {
      return errno_error(ErrorKind::cannot_create, "cannot create directory " + std::string(rel), errno);
    }
    Fd next(open_beneath(cur.get(), component, O_RDONLY | O_DIRECTORY, 0));
    if (!next)
      return errno_error(ErrorKind::cannot_create, "cannot open directory " + std::string(rel) + " (component '" +
                                                       component + "' is not a directory, or is a symlink)", errno);
    cur = std::move(next);
  }
  return cur;
}

Status place_symlink(int dir_fd, const std::string& leaf, const frame::Symlink& link) {
  struct stat st{};
  if (fstatat(dir_fd, leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
    return make_error(ErrorKind::cannot_create, link.path + " exists and is a directory, not a link");
  std::string tmp = leaf + ".sesscp.publish";
  unlinkat(dir_fd, tmp.c_str(), 0);
  if (symlinkat(link.target.c_str(), dir_fd, tmp.c_str()) != 0)
    return errno_error(ErrorKind::cannot_create, "cannot create link " + link.path, errno);
  if (renameat(dir_fd, tmp.c_str(), dir_fd, leaf.c_str()) != 0) {
    int err = errno;
    unlinkat(dir_fd, tmp.c_str(), 0);
    return errno_error(ErrorKind::cannot_create, "cannot create link " + link.path, err);
  }
  auto times = mtime_times(link.mtime_ns);
  if (link.mtime_ns >= 0) utimensat(dir_fd, leaf.c_str(), times.data(), AT_SYMLINK_NOFOLLOW);
  return {};
}

} // namespace sesscp::recv
