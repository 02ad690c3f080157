// crashsim.so: an LD_PRELOAD interposer that records what a process does to
// the files of one directory, so that crashreplay can rebuild the directory
// as a power cut at any point would have left it, and that injects errors
// into chosen calls. For tests only; never installed.
//
//   CRASHSIM_DIR=DIR            the directory to watch (its regular files;
//                               not subdirectories). Nothing happens without it.
//   CRASHSIM_LOG=FILE           write the trace there (crashsim_trace.h); FILE
//                               must be outside DIR and must not exist yet
//                               (one process per trace: another one with the
//                               same environment leaves it alone)
//   CRASHSIM_FAIL=RULE[,RULE]   inject errors; RULE is OP:ERRNO:N[+][:MATCH]:
//                               the Nth matching call (every call from the Nth
//                               on with '+') fails with ERRNO without doing
//                               anything; MATCH keeps only calls on files whose
//                               name contains it. OP is write (write, pwrite,
//                               writev, pwritev), fsync, fdatasync, dirsync
//                               (fsync/fdatasync of DIR itself), rename, link,
//                               unlink, ftruncate, fallocate, open (opening a
//                               file of DIR). ERRNO is a name (ENOSPC, EIO,
//                               EDQUOT, EROFS, EACCES, EPERM, ENOMEM) or a number.
//
// What is traced: opens (open, openat, creat, and the raw syscall(SYS_openat2)
// the receiver uses; a new inode becomes `create`), write/pwrite/writev/pwritev
// (with the bytes), ftruncate/truncate/fallocate, fsync/fdatasync of files and
// of DIR, syncfs/sync, rename/renameat/renameat2, link/linkat,
// unlink/unlinkat, futimens/utimensat and fchmod. Files are tracked by inode,
// so a write through a descriptor follows the file across renames and links.
// Every traced call runs under one mutex, so the trace is the order in which
// the calls took effect, whichever thread made them. Not traced: stdio
// streams, mmap, descriptors >= 65536, calls made inside libc itself.

#include "crashsim_trace.h"

#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace {

using crashsim::Op;

constexpr int k_max_fd = 65536;
constexpr int k_dir = -1; // g_fd_kind value for a descriptor of the watched directory

// Pointers to the next definition of each interposed function (libc's).
template <typename F> F next_fn(const char* name) { return reinterpret_cast<F>(dlsym(RTLD_NEXT, name)); }

struct Real {
  int (*open)(const char*, int, ...);
  int (*openat)(int, const char*, int, ...);
  long (*syscall)(long, ...);
  int (*close)(int);
  int (*dup2)(int, int);
  int (*dup3)(int, int, int);
  ssize_t (*write)(int, const void*, size_t);
  ssize_t (*pwrite)(int, const void*, size_t, off_t);
  ssize_t (*writev)(int, const iovec*, int);
  ssize_t (*pwritev)(int, const iovec*, int, off_t);
  ssize_t (*pwritev2)(int, const iovec*, int, off_t, int);
  int (*ftruncate)(int, off_t);
  int (*truncate)(const char*, off_t);
  int (*fallocate)(int, int, off_t, off_t);
  int (*posix_fallocate)(int, off_t, off_t);
  int (*fsync)(int);
  int (*fdatasync)(int);
  int (*syncfs)(int);
  void (*sync)();
  int (*renameat2)(int, const char*, int, const char*, unsigned);
  int (*linkat)(int, const char*, int, const char*, int);
  int (*unlinkat)(int, const char*, int);
  int (*utimensat)(int, const char*, const timespec*, int);
  int (*futimens)(int, const timespec*);
  int (*fchmod)(int, mode_t);
};
Real real{};

struct Rule {
  std::string op;
  int err = 0;
  std::uint64_t nth = 0;
  bool from_then_on = false;
  std::string match;
  std::uint64_t seen = 0;
};

struct FileInfo {
  std::string name; // last name it had in the directory
  dev_t dev = 0;
  ino_t ino = 0;
};

struct State {
  std::string dir; // realpath of CRASHSIM_DIR
  int log_fd = -1;
  std::uint64_t seq = 0;
  std::uint32_t next_id = 1;
  std::map<std::string, std::uint32_t> names;                 // the directory, as it is now
  std::map<std::pair<dev_t, ino_t>, std::uint32_t> inodes;    // inode -> file id, while it has a name
  std::map<std::uint32_t, FileInfo> files;
  std::vector<Rule> rules;
};

State* g_state = nullptr; // set once by init(); null means inactive
pthread_once_t g_once = PTHREAD_ONCE_INIT;
pthread_mutex_t g_mutex = PTHREAD_MUTEX_INITIALIZER;
std::atomic<int> g_fd_kind[k_max_fd]; // 0 untracked, k_dir, or a file id

class Guard {
public:
  Guard() { pthread_mutex_lock(&g_mutex); }
  ~Guard() { pthread_mutex_unlock(&g_mutex); }
  Guard(const Guard&) = delete;
  Guard& operator=(const Guard&) = delete;
};

// Keep errno as the real call left it, whatever the bookkeeping does.
class KeepErrno {
public:
  KeepErrno() : m_err(errno) {}
  ~KeepErrno() { errno = m_err; }
  KeepErrno(const KeepErrno&) = delete;
  KeepErrno& operator=(const KeepErrno&) = delete;

private:
  int m_err;
};

void say(const std::string& msg) {
  std::string line = "crashsim: " + msg + "\n";
  if (real.write) (void)!real.write(2, line.data(), line.size());
}

void write_log(const iovec* iov, int n) {
  std::vector<iovec> v(iov, iov + n);
  std::size_t i = 0;
  while (i < v.size()) {
    ssize_t w = real.writev(g_state->log_fd, v.data() + i, static_cast<int>(std::min<std::size_t>(v.size() - i, IOV_MAX)));
    if (w < 0) {
      if (errno == EINTR) continue;
      say(std::string("cannot write the trace: ") + std::strerror(errno) + "; tracing stops");
      g_state->log_fd = -1;
      return;
    }
    auto left = static_cast<std::size_t>(w);
    while (i < v.size() && left >= v[i].iov_len) left -= v[i++].iov_len;
    if (i < v.size()) {
      v[i].iov_base = static_cast<char*>(v[i].iov_base) + left;
      v[i].iov_len -= left;
    }
  }
}

// Append one record; `data` is the bytes of a write (may be several pieces).
void record(Op op, std::uint32_t id, std::uint64_t a, std::uint64_t b, std::string_view name = {},
            std::string_view name2 = {}, const std::vector<iovec>& data = {}) {
  State& s = *g_state;
  crashsim::TraceHeader h;
  h.op = static_cast<std::uint32_t>(op);
  h.id = id;
  h.seq = s.seq++;
  h.a = a;
  h.b = b;
  h.name_len = static_cast<std::uint32_t>(name.size());
  h.name2_len = static_cast<std::uint32_t>(name2.size());
  for (const auto& d : data) h.data_len += d.iov_len;
  if (s.log_fd < 0) return;
  std::vector<iovec> iov;
  iov.push_back({&h, sizeof h});
  if (!name.empty()) iov.push_back({const_cast<char*>(name.data()), name.size()});
  if (!name2.empty()) iov.push_back({const_cast<char*>(name2.data()), name2.size()});
  iov.insert(iov.end(), data.begin(), data.end());
  write_log(iov.data(), static_cast<int>(iov.size()));
}

// ---------------------------------------------------------------- paths

std::string fd_path(int fd) {
  char link[64], buf[PATH_MAX];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, buf, sizeof buf - 1);
  if (n <= 0) return {};
  return std::string(buf, static_cast<std::size_t>(n));
}

std::string canonical(const std::string& path) {
  char buf[PATH_MAX];
  if (!realpath(path.c_str(), buf)) return {};
  return buf;
}

// The name inside the watched directory that (dirfd, path) designates, or ""
// if it is elsewhere.
std::string leaf_of(int dirfd, const char* path) {
  if (!g_state || !path || !*path) return {};
  std::string p(path);
  if (p.find('/') == std::string::npos && dirfd >= 0 && dirfd < k_max_fd && g_fd_kind[dirfd].load() == k_dir) return p;
  if (p[0] != '/') {
    std::string base;
    if (dirfd == AT_FDCWD) {
      char buf[PATH_MAX];
      if (!getcwd(buf, sizeof buf)) return {};
      base = buf;
    } else {
      base = fd_path(dirfd);
    }
    if (base.empty()) return {};
    p = base + "/" + p;
  }
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  auto slash = p.rfind('/');
  std::string parent = slash == 0 ? "/" : p.substr(0, slash);
  std::string leaf = p.substr(slash + 1);
  if (leaf.empty() || leaf == "." || leaf == "..") return {};
  return canonical(parent) == g_state->dir ? leaf : std::string();
}

void ensure_init();

int tracked(int fd) {
  ensure_init();
  if (!g_state || fd < 0 || fd >= k_max_fd) return 0;
  return g_fd_kind[fd].load();
}

const std::string& file_name(std::uint32_t id) { return g_state->files[id].name; }

// ------------------------------------------------------------ injection

int errno_from(const std::string& text) {
  static const std::pair<const char*, int> names[] = {{"ENOSPC", ENOSPC}, {"EIO", EIO},       {"EDQUOT", EDQUOT},
                                                      {"EROFS", EROFS},   {"EACCES", EACCES}, {"EPERM", EPERM},
                                                      {"ENOMEM", ENOMEM}, {"EINTR", EINTR},   {"EFBIG", EFBIG}};
  for (const auto& [n, v] : names)
    if (text == n) return v;
  return std::atoi(text.c_str());
}

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    auto at = text.find(sep, start);
    out.push_back(text.substr(start, at - start));
    if (at == std::string::npos) return out;
    start = at + 1;
  }
}

void parse_rules(const char* spec) {
  if (!spec || !*spec) return;
  for (const auto& text : split(spec, ',')) {
    auto f = split(text, ':');
    Rule r;
    if (f.size() < 3 || f.size() > 4 || (r.err = errno_from(f[1])) <= 0) {
      say("ignoring bad CRASHSIM_FAIL rule '" + text + "' (want OP:ERRNO:N[+][:MATCH])");
      continue;
    }
    r.op = f[0];
    r.from_then_on = !f[2].empty() && f[2].back() == '+';
    r.nth = std::strtoull(f[2].c_str(), nullptr, 10);
    if (f.size() == 4) r.match = f[3];
    g_state->rules.push_back(r);
  }
}

// The errno to fail this call with, or 0. Counts the call for every rule
// that matches it.
int inject(const char* op, std::string_view name, std::string_view name2 = {}) {
  int err = 0;
  for (auto& r : g_state->rules) {
    if (r.op != op) continue;
    if (!r.match.empty() && name.find(r.match) == std::string_view::npos &&
        name2.find(r.match) == std::string_view::npos)
      continue;
    ++r.seen;
    if (err == 0 && (r.seen == r.nth || (r.from_then_on && r.seen >= r.nth))) err = r.err;
  }
  if (err) {
    std::string call = std::string(op) + " " + std::string(name);
    say("injected " + std::string(strerrorname_np(err) ? strerrorname_np(err) : "error") + " into " + call);
    record(Op::injected, 0, static_cast<std::uint64_t>(err), 0, call);
  }
  return err;
}

int fail_with(int err) {
  errno = err;
  return -1;
}

// ----------------------------------------------------------- bookkeeping

std::uint32_t id_of_inode(const struct stat& st) {
  auto it = g_state->inodes.find({st.st_dev, st.st_ino});
  return it == g_state->inodes.end() ? 0 : it->second;
}

std::uint32_t new_file(const std::string& leaf, const struct stat& st) {
  State& s = *g_state;
  std::uint32_t id = s.next_id++;
  s.files[id] = {leaf, st.st_dev, st.st_ino};
  s.inodes[{st.st_dev, st.st_ino}] = id;
  s.names[leaf] = id;
  record(Op::create, id, 0, 0, leaf);
  return id;
}

// Forget the inode of a file that lost its last name: a new file may reuse it.
void drop_if_nameless(std::uint32_t id) {
  for (const auto& [n, i] : g_state->names)
    if (i == id) return;
  auto& f = g_state->files[id];
  g_state->inodes.erase({f.dev, f.ino});
}

// Record the whole content of a file we did not see being written (present
// before tracing began, or moved in from elsewhere).
void record_content(std::uint32_t id, int fd, const struct stat& st) {
  std::vector<char> buf(1 << 20);
  std::uint64_t off = 0;
  for (;;) {
    ssize_t n = pread(fd, buf.data(), buf.size(), static_cast<off_t>(off));
    if (n <= 0) break;
    record(Op::write, id, off, 0, {}, {}, {{buf.data(), static_cast<std::size_t>(n)}});
    off += static_cast<std::uint64_t>(n);
  }
  record(Op::set_size, id, static_cast<std::uint64_t>(st.st_size), 0);
  record(Op::set_mode, id, st.st_mode & 07777, 0);
  record(Op::set_mtime, id, static_cast<std::uint64_t>(st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec), 0);
}

// A name appeared in the directory for an inode we may not know.
std::uint32_t adopt(const std::string& leaf) {
  struct stat st{};
  int fd = real.openat(AT_FDCWD, (g_state->dir + "/" + leaf).c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return 0;
  std::uint32_t id = 0;
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
    id = id_of_inode(st);
    if (id) {
      g_state->names[leaf] = id;
      record(Op::link, id, 0, 0, leaf);
    } else {
      id = new_file(leaf, st);
      record_content(id, fd, st);
    }
  }
  real.close(fd);
  return id;
}

void on_open(int fd, int flags) {
  if (!g_state || fd < 0 || fd >= k_max_fd) return;
  KeepErrno keep;
  Guard g;
  g_fd_kind[fd] = 0;
  std::string path = fd_path(fd);
  if (path == g_state->dir) {
    g_fd_kind[fd] = k_dir;
    return;
  }
  auto slash = path.rfind('/');
  if (slash == std::string::npos || path.substr(0, slash) != g_state->dir) return;
  std::string leaf = path.substr(slash + 1);
  struct stat st{};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return;
  std::uint32_t id = id_of_inode(st);
  auto named = g_state->names.find(leaf);
  if (id == 0) {
    id = new_file(leaf, st);
  } else if (named == g_state->names.end() || named->second != id) {
    g_state->names[leaf] = id;
    record(Op::link, id, 0, 0, leaf);
  } else if (flags & O_TRUNC) {
    record(Op::set_size, id, 0, 0);
  }
  g_state->files[id].name = leaf;
  g_fd_kind[fd] = static_cast<int>(id);
}

void snapshot() {
  State& s = *g_state;
  DIR* d = opendir(s.dir.c_str());
  if (!d) return;
  std::vector<std::string> leaves;
  while (dirent* e = readdir(d))
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) leaves.emplace_back(e->d_name);
  closedir(d);
  for (const auto& leaf : leaves)
    if (std::uint32_t id = adopt(leaf)) record(Op::fsync, id, 0, 0);
  record(Op::dir_sync, 0, 0, 0);
  record(Op::baseline, 0, 0, 0);
}

void init() {
#define CRASHSIM_REAL(name) real.name = next_fn<decltype(real.name)>(#name)
  CRASHSIM_REAL(open);
  CRASHSIM_REAL(openat);
  CRASHSIM_REAL(syscall);
  CRASHSIM_REAL(close);
  CRASHSIM_REAL(dup2);
  CRASHSIM_REAL(dup3);
  CRASHSIM_REAL(write);
  CRASHSIM_REAL(pwrite);
  CRASHSIM_REAL(writev);
  CRASHSIM_REAL(pwritev);
  CRASHSIM_REAL(pwritev2);
  CRASHSIM_REAL(ftruncate);
  CRASHSIM_REAL(truncate);
  CRASHSIM_REAL(fallocate);
  CRASHSIM_REAL(posix_fallocate);
  CRASHSIM_REAL(fsync);
  CRASHSIM_REAL(fdatasync);
  CRASHSIM_REAL(syncfs);
  CRASHSIM_REAL(sync);
  CRASHSIM_REAL(renameat2);
  CRASHSIM_REAL(linkat);
  CRASHSIM_REAL(unlinkat);
  CRASHSIM_REAL(utimensat);
  CRASHSIM_REAL(futimens);
  CRASHSIM_REAL(fchmod);
#undef CRASHSIM_REAL
  const char* dir = std::getenv("CRASHSIM_DIR");
  if (!dir || !*dir) return;
  auto* s = new State;
  s->dir = canonical(dir);
  if (s->dir.empty()) {
    say(std::string("CRASHSIM_DIR ") + dir + ": " + std::strerror(errno) + "; not tracing");
    delete s;
    return;
  }
  if (const char* log = std::getenv("CRASHSIM_LOG"); log && *log) {
    // O_EXCL: a second process with the same environment (a child, or a
    // sibling started by a shell function) must not truncate or interleave
    // a trace; it runs untraced and says so.
    s->log_fd = real.open(log, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_APPEND, 0644);
    if (s->log_fd < 0) say(std::string("cannot create CRASHSIM_LOG ") + log + ": " + std::strerror(errno) + "; not tracing");
    else (void)!real.write(s->log_fd, crashsim::k_trace_magic, sizeof crashsim::k_trace_magic);
  }
  g_state = s;
  parse_rules(std::getenv("CRASHSIM_FAIL"));
  Guard g;
  snapshot();
}

void ensure_init() { pthread_once(&g_once, init); }

__attribute__((constructor)) void crashsim_load() { ensure_init(); }

int open_flags_mode(int flags, va_list ap) {
  return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? va_arg(ap, int) : 0;
}

// Injection for opening a file of the directory (before the call).
int inject_open(int dirfd, const char* path) {
  if (!g_state || g_state->rules.empty()) return 0;
  std::string leaf = leaf_of(dirfd, path);
  if (leaf.empty()) return 0;
  Guard g;
  return inject("open", leaf);
}

int do_openat(int dirfd, const char* path, int flags, int mode) {
  ensure_init();
  if (int err = inject_open(dirfd, path)) return fail_with(err);
  int fd = real.openat(dirfd, path, flags, mode);
  if (fd >= 0) on_open(fd, flags);
  return fd;
}

// A write of `n` bytes at `offset` already done on file `id`: record it.
void on_write(int id, std::uint64_t offset, std::vector<iovec> pieces, std::size_t n) {
  std::vector<iovec> data;
  for (auto& p : pieces) {
    if (n == 0) break;
    std::size_t take = std::min(n, p.iov_len);
    data.push_back({p.iov_base, take});
    n -= take;
  }
  record(Op::write, static_cast<std::uint32_t>(id), offset, 0, {}, {}, data);
}

std::uint64_t position_before(int fd, ssize_t written) {
  off_t pos = lseek(fd, 0, SEEK_CUR);
  return pos < 0 ? 0 : static_cast<std::uint64_t>(pos) - static_cast<std::uint64_t>(written);
}

int do_sync(int fd, bool data_only) {
  int kind = tracked(fd);
  auto call = data_only ? real.fdatasync : real.fsync;
  if (kind == 0) return call(fd);
  Guard g;
  if (int err = inject(kind == k_dir ? "dirsync" : data_only ? "fdatasync" : "fsync",
                       kind == k_dir ? std::string_view(".") : std::string_view(file_name(static_cast<std::uint32_t>(kind)))))
    return fail_with(err);
  int r = call(fd);
  if (r == 0) {
    KeepErrno keep;
    if (kind == k_dir) record(Op::dir_sync, 0, 0, 0);
    else record(data_only ? Op::fdatasync : Op::fsync, static_cast<std::uint32_t>(kind), 0, 0);
  }
  return r;
}

int do_renameat2(int olddirfd, const char* oldpath, int newdirfd, const char* newpath, unsigned flags) {
  ensure_init();
  if (!g_state) return real.renameat2(olddirfd, oldpath, newdirfd, newpath, flags);
  std::string src = leaf_of(olddirfd, oldpath), dst = leaf_of(newdirfd, newpath);
  if (src.empty() && dst.empty()) return real.renameat2(olddirfd, oldpath, newdirfd, newpath, flags);
  Guard g;
  if (int err = inject("rename", src, dst)) return fail_with(err);
  State& s = *g_state;
  auto before_src = s.names.find(src), before_dst = s.names.find(dst);
  bool same_file = !src.empty() && !dst.empty() && before_src != s.names.end() && before_dst != s.names.end() &&
                   before_src->second == before_dst->second;
  int r = real.renameat2(olddirfd, oldpath, newdirfd, newpath, flags);
  if (r != 0) return r;
  KeepErrno keep;
  if (same_file || src == dst) return r; // rename(2) between links of one inode does nothing
  if (!src.empty() && !dst.empty()) {
    record(Op::rename, 0, flags, 0, src, dst);
    auto moved = s.names.find(src);
    if (flags & RENAME_EXCHANGE) {
      auto other = s.names.find(dst);
      if (moved != s.names.end() && other != s.names.end()) std::swap(moved->second, other->second);
    } else if (moved != s.names.end()) {
      std::uint32_t id = moved->second;
      std::uint32_t replaced = s.names.count(dst) ? s.names[dst] : 0;
      s.names.erase(moved);
      s.names[dst] = id;
      s.files[id].name = dst;
      if (replaced) drop_if_nameless(replaced);
    }
  } else if (!src.empty()) { // moved out of the directory
    record(Op::unlink, 0, 0, 0, src);
    auto it = s.names.find(src);
    if (it != s.names.end()) {
      std::uint32_t id = it->second;
      s.names.erase(it);
      drop_if_nameless(id);
    }
  } else { // moved in: a file we never saw being written
    if (s.names.count(dst)) record(Op::unlink, 0, 0, 0, dst);
    adopt(dst);
  }
  return r;
}

int do_linkat(int olddirfd, const char* oldpath, int newdirfd, const char* newpath, int flags) {
  ensure_init();
  std::string dst = g_state ? leaf_of(newdirfd, newpath) : std::string();
  if (dst.empty()) return real.linkat(olddirfd, oldpath, newdirfd, newpath, flags);
  Guard g;
  if (int err = inject("link", dst)) return fail_with(err);
  int r = real.linkat(olddirfd, oldpath, newdirfd, newpath, flags);
  if (r == 0) {
    KeepErrno keep;
    adopt(dst);
  }
  return r;
}

int do_unlinkat(int dirfd, const char* path, int flags) {
  ensure_init();
  std::string leaf = g_state && !(flags & AT_REMOVEDIR) ? leaf_of(dirfd, path) : std::string();
  if (leaf.empty()) return real.unlinkat(dirfd, path, flags);
  Guard g;
  if (int err = inject("unlink", leaf)) return fail_with(err);
  int r = real.unlinkat(dirfd, path, flags);
  if (r == 0) {
    KeepErrno keep;
    record(Op::unlink, 0, 0, 0, leaf);
    auto it = g_state->names.find(leaf);
    if (it != g_state->names.end()) {
      std::uint32_t id = it->second;
      g_state->names.erase(it);
      drop_if_nameless(id);
    }
  }
  return r;
}

int do_set_size(int fd, int kind, off_t length, int (*call)(int, off_t)) {
  Guard g;
  if (int err = inject("ftruncate", file_name(static_cast<std::uint32_t>(kind)))) return fail_with(err);
  int r = call(fd, length);
  if (r == 0) {
    KeepErrno keep;
    record(Op::set_size, static_cast<std::uint32_t>(kind), static_cast<std::uint64_t>(length), 0);
  }
  return r;
}

void record_stat_change(int kind, const struct stat& before, const struct stat& after) {
  auto id = static_cast<std::uint32_t>(kind);
  if (after.st_size != before.st_size) record(Op::set_size, id, static_cast<std::uint64_t>(after.st_size), 0);
  if ((after.st_mode & 07777) != (before.st_mode & 07777)) record(Op::set_mode, id, after.st_mode & 07777, 0);
  if (after.st_mtim.tv_sec != before.st_mtim.tv_sec || after.st_mtim.tv_nsec != before.st_mtim.tv_nsec)
    record(Op::set_mtime, id,
           static_cast<std::uint64_t>(after.st_mtim.tv_sec * 1'000'000'000LL + after.st_mtim.tv_nsec), 0);
}

int do_fallocate(int fd, int mode, off_t offset, off_t len, bool posix) {
  int kind = tracked(fd);
  if (kind <= 0) return posix ? real.posix_fallocate(fd, offset, len) : real.fallocate(fd, mode, offset, len);
  Guard g;
  if (int err = inject("fallocate", file_name(static_cast<std::uint32_t>(kind)))) {
    if (posix) return err;
    return fail_with(err);
  }
  struct stat before{}, after{};
  fstat(fd, &before);
  int r = posix ? real.posix_fallocate(fd, offset, len) : real.fallocate(fd, mode, offset, len);
  if (r == 0) {
    KeepErrno keep;
    fstat(fd, &after);
    if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
      std::vector<char> zeros(static_cast<std::size_t>(len), 0);
      record(Op::write, static_cast<std::uint32_t>(kind), static_cast<std::uint64_t>(offset), 0, {}, {},
             {{zeros.data(), zeros.size()}});
    }
    after.st_mode = before.st_mode;
    after.st_mtim = before.st_mtim;
    record_stat_change(kind, before, after);
  }
  return r;
}

// After a metadata call on `fd` (or on dirfd/path): record what changed.
template <typename F> int with_meta(int fd, F call) {
  int kind = tracked(fd);
  if (kind <= 0) return call();
  Guard g;
  struct stat before{}, after{};
  fstat(fd, &before);
  int r = call();
  if (r == 0) {
    KeepErrno keep;
    if (fstat(fd, &after) == 0) {
      after.st_size = before.st_size;
      record_stat_change(kind, before, after);
    }
  }
  return r;
}

} // namespace

// ------------------------------------------------------- interposed calls

extern "C" {

int open(const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  int mode = open_flags_mode(flags, ap);
  va_end(ap);
  return do_openat(AT_FDCWD, path, flags, mode);
}

int open64(const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  int mode = open_flags_mode(flags, ap);
  va_end(ap);
  return do_openat(AT_FDCWD, path, flags, mode);
}

int openat(int dirfd, const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  int mode = open_flags_mode(flags, ap);
  va_end(ap);
  return do_openat(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char* path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  int mode = open_flags_mode(flags, ap);
  va_end(ap);
  return do_openat(dirfd, path, flags, mode);
}

int __open_2(const char* path, int flags) { return do_openat(AT_FDCWD, path, flags, 0); }
int __open64_2(const char* path, int flags) { return do_openat(AT_FDCWD, path, flags, 0); }
int __openat_2(int dirfd, const char* path, int flags) { return do_openat(dirfd, path, flags, 0); }
int __openat64_2(int dirfd, const char* path, int flags) { return do_openat(dirfd, path, flags, 0); }

int creat(const char* path, mode_t mode) {
  return do_openat(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, static_cast<int>(mode));
}
int creat64(const char* path, mode_t mode) {
  return do_openat(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, static_cast<int>(mode));
}

// The receiver opens with the raw openat2 syscall (RESOLVE_BENEATH).
long syscall(long number, ...) noexcept {
  va_list ap;
  va_start(ap, number);
  long a[6];
  for (auto& x : a) x = va_arg(ap, long);
  va_end(ap);
  ensure_init();
  if (number == SYS_openat2 && g_state) {
    auto dirfd = static_cast<int>(a[0]);
    const auto* path = reinterpret_cast<const char*>(a[1]);
    const auto* how = reinterpret_cast<const open_how*>(a[2]);
    if (int err = inject_open(dirfd, path)) return fail_with(err);
    long fd = real.syscall(number, a[0], a[1], a[2], a[3], a[4], a[5]);
    if (fd >= 0 && how) on_open(static_cast<int>(fd), static_cast<int>(how->flags));
    return fd;
  }
  return real.syscall(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}

int close(int fd) {
  ensure_init();
  if (fd >= 0 && fd < k_max_fd) g_fd_kind[fd] = 0;
  return real.close(fd);
}

int dup2(int oldfd, int newfd) noexcept {
  ensure_init();
  if (newfd >= 0 && newfd < k_max_fd && newfd != oldfd) g_fd_kind[newfd] = 0;
  return real.dup2(oldfd, newfd);
}

int dup3(int oldfd, int newfd, int flags) noexcept {
  ensure_init();
  if (newfd >= 0 && newfd < k_max_fd) g_fd_kind[newfd] = 0;
  return real.dup3(oldfd, newfd, flags);
}

ssize_t write(int fd, const void* buf, size_t n) {
  int kind = tracked(fd);
  if (kind <= 0) return real.write(fd, buf, n);
  Guard g;
  if (int err = inject("write", file_name(static_cast<std::uint32_t>(kind)))) return fail_with(err);
  ssize_t r = real.write(fd, buf, n);
  if (r > 0) {
    KeepErrno keep;
    on_write(kind, position_before(fd, r), {{const_cast<void*>(buf), n}}, static_cast<std::size_t>(r));
  }
  return r;
}

ssize_t pwrite(int fd, const void* buf, size_t n, off_t offset) {
  int kind = tracked(fd);
  if (kind <= 0) return real.pwrite(fd, buf, n, offset);
  Guard g;
  if (int err = inject("write", file_name(static_cast<std::uint32_t>(kind)))) return fail_with(err);
  ssize_t r = real.pwrite(fd, buf, n, offset);
  if (r > 0) {
    KeepErrno keep;
    on_write(kind, static_cast<std::uint64_t>(offset), {{const_cast<void*>(buf), n}}, static_cast<std::size_t>(r));
  }
  return r;
}

ssize_t pwrite64(int fd, const void* buf, size_t n, off_t offset) { return pwrite(fd, buf, n, offset); }

ssize_t writev(int fd, const iovec* iov, int count) {
  int kind = tracked(fd);
  if (kind <= 0) return real.writev(fd, iov, count);
  Guard g;
  if (int err = inject("write", file_name(static_cast<std::uint32_t>(kind)))) return fail_with(err);
  ssize_t r = real.writev(fd, iov, count);
  if (r > 0) {
    KeepErrno keep;
    on_write(kind, position_before(fd, r), {iov, iov + count}, static_cast<std::size_t>(r));
  }
  return r;
}

ssize_t pwritev(int fd, const iovec* iov, int count, off_t offset) {
  int kind = tracked(fd);
  if (kind <= 0) return real.pwritev(fd, iov, count, offset);
  Guard g;
  if (int err = inject("write", file_name(static_cast<std::uint32_t>(kind)))) return fail_with(err);
  ssize_t r = real.pwritev(fd, iov, count, offset);
  if (r > 0) {
    KeepErrno keep;
    on_write(kind, static_cast<std::uint64_t>(offset), {iov, iov + count}, static_cast<std::size_t>(r));
  }
  return r;
}

ssize_t pwritev64(int fd, const iovec* iov, int count, off_t offset) { return pwritev(fd, iov, count, offset); }

ssize_t pwritev2(int fd, const iovec* iov, int count, off_t offset, int flags) {
  int kind = tracked(fd);
  if (kind <= 0) return real.pwritev2(fd, iov, count, offset, flags);
  Guard g;
  if (int err = inject("write", file_name(static_cast<std::uint32_t>(kind)))) return fail_with(err);
  off_t at = offset == -1 ? lseek(fd, 0, SEEK_CUR) : offset;
  ssize_t r = real.pwritev2(fd, iov, count, offset, flags);
  if (r > 0) {
    KeepErrno keep;
    on_write(kind, static_cast<std::uint64_t>(at), {iov, iov + count}, static_cast<std::size_t>(r));
  }
  return r;
}

int ftruncate(int fd, off_t length) noexcept {
  int kind = tracked(fd);
  if (kind <= 0) return real.ftruncate(fd, length);
  return do_set_size(fd, kind, length, real.ftruncate);
}

int ftruncate64(int fd, off_t length) noexcept { return ftruncate(fd, length); }

int truncate(const char* path, off_t length) noexcept {
  ensure_init();
  std::string leaf = g_state ? leaf_of(AT_FDCWD, path) : std::string();
  if (leaf.empty()) return real.truncate(path, length);
  Guard g;
  auto it = g_state->names.find(leaf);
  if (it == g_state->names.end()) return real.truncate(path, length);
  if (int err = inject("ftruncate", leaf)) return fail_with(err);
  int r = real.truncate(path, length);
  if (r == 0) {
    KeepErrno keep;
    record(Op::set_size, it->second, static_cast<std::uint64_t>(length), 0);
  }
  return r;
}

int fallocate(int fd, int mode, off_t offset, off_t len) { return do_fallocate(fd, mode, offset, len, false); }
int fallocate64(int fd, int mode, off_t offset, off_t len) { return do_fallocate(fd, mode, offset, len, false); }
int posix_fallocate(int fd, off_t offset, off_t len) { return do_fallocate(fd, 0, offset, len, true); }
int posix_fallocate64(int fd, off_t offset, off_t len) { return do_fallocate(fd, 0, offset, len, true); }

int fsync(int fd) { return do_sync(fd, false); }
int fdatasync(int fd) { return do_sync(fd, true); }

int syncfs(int fd) noexcept {
  ensure_init();
  int r = real.syncfs(fd);
  if (r == 0 && g_state) {
    KeepErrno keep;
    Guard g;
    record(Op::sync_all, 0, 0, 0);
  }
  return r;
}

void sync() noexcept {
  ensure_init();
  real.sync();
  if (g_state) {
    KeepErrno keep;
    Guard g;
    record(Op::sync_all, 0, 0, 0);
  }
}

int rename(const char* oldpath, const char* newpath) noexcept {
  return do_renameat2(AT_FDCWD, oldpath, AT_FDCWD, newpath, 0);
}
int renameat(int olddirfd, const char* oldpath, int newdirfd, const char* newpath) noexcept {
  return do_renameat2(olddirfd, oldpath, newdirfd, newpath, 0);
}
int renameat2(int olddirfd, const char* oldpath, int newdirfd, const char* newpath, unsigned flags) noexcept {
  return do_renameat2(olddirfd, oldpath, newdirfd, newpath, flags);
}

int link(const char* oldpath, const char* newpath) noexcept {
  return do_linkat(AT_FDCWD, oldpath, AT_FDCWD, newpath, 0);
}
int linkat(int olddirfd, const char* oldpath, int newdirfd, const char* newpath, int flags) noexcept {
  return do_linkat(olddirfd, oldpath, newdirfd, newpath, flags);
}

int unlink(const char* path) noexcept { return do_unlinkat(AT_FDCWD, path, 0); }
int unlinkat(int dirfd, const char* path, int flags) noexcept { return do_unlinkat(dirfd, path, flags); }

int futimens(int fd, const timespec times[2]) noexcept {
  ensure_init();
  return with_meta(fd, [&] { return real.futimens(fd, times); });
}

int utimensat(int dirfd, const char* path, const timespec times[2], int flags) noexcept {
  ensure_init();
  // glibc declares path nonnull, but Linux accepts NULL (futimens on dirfd);
  // read it through a volatile so neither compiler folds the check away.
  const char* volatile path_v = path;
  if (path_v == nullptr) return with_meta(dirfd, [&] { return real.utimensat(dirfd, path, times, flags); });
  std::string leaf = g_state ? leaf_of(dirfd, path) : std::string();
  if (leaf.empty()) return real.utimensat(dirfd, path, times, flags);
  int r = real.utimensat(dirfd, path, times, flags);
  if (r == 0) {
    KeepErrno keep;
    Guard g;
    struct stat st{};
    auto it = g_state->names.find(leaf);
    if (it != g_state->names.end() && fstatat(dirfd, path, &st, flags & AT_SYMLINK_NOFOLLOW) == 0)
      record(Op::set_mtime, it->second,
             static_cast<std::uint64_t>(st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec), 0);
  }
  return r;
}

int fchmod(int fd, mode_t mode) noexcept {
  ensure_init();
  return with_meta(fd, [&] { return real.fchmod(fd, mode); });
}

} // extern "C"
