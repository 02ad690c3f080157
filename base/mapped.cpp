#include "base/mapped.h"

#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstdlib>
#include <mutex>

namespace sesscp {

namespace {

// Set while this thread hashes a mapping: where a SIGBUS there returns to.
thread_local sigjmp_buf* t_guard = nullptr;
struct sigaction g_previous{};

void on_sigbus(int sig, siginfo_t* info, void* context) {
  if (sigjmp_buf* guard = t_guard) {
    t_guard = nullptr;
    siglongjmp(*guard, 1);
  }
  // Not a fault of ours: the disposition from before, which then sees the
  // fault again when the faulting instruction repeats (SIG_DFL: the core dump).
  if ((g_previous.sa_flags & SA_SIGINFO) && g_previous.sa_sigaction) {
    g_previous.sa_sigaction(sig, info, context);
    return;
  }
  sigaction(SIGBUS, &g_previous, nullptr);
}

void install_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa{};
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &g_previous);
  });
}

// The hash of mapped bytes, false if reading them faulted. Nothing here is
// modified between sigsetjmp and a jump back but through `out`.
bool hash_guarded(const std::uint8_t* data, std::size_t len, Hash128* out) {
  sigjmp_buf guard;
  if (sigsetjmp(guard, 1) != 0) return false;
  t_guard = &guard;
  *out = xxh3_128({data, len});
  t_guard = nullptr;
  return true;
}

} // namespace

Result<Hash128> xxh3_128_of_range(int fd, std::uint64_t offset, std::size_t len, const std::string& what) {
  if (len == 0) return xxh3_128({});
  if (std::getenv("SESSCP_PREAD")) {
    alignas(64) static thread_local std::uint8_t piece[128 << 10];
    RootBuilder b;
    for (std::size_t done = 0; done < len;) {
      ssize_t n = pread(fd, piece, std::min(sizeof piece, len - done), static_cast<off_t>(offset + done));
      if (n <= 0) return make_error(ErrorKind::io, what);
      b.update({piece, static_cast<std::size_t>(n)});
      done += static_cast<std::size_t>(n);
    }
    return b.digest();
  }
  install_handler();
  static const auto page = static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
  const std::uint64_t start = offset - offset % page;
  const std::size_t span = len + static_cast<std::size_t>(offset - start);
  // MAP_POPULATE: the pages are in the page cache (just written), so one
  // call maps them all instead of a fault per few pages.
  void* map = mmap(nullptr, span, PROT_READ, MAP_SHARED | (std::getenv("SESSCP_NOPOP") ? 0 : MAP_POPULATE), fd, static_cast<off_t>(start));
  if (map == MAP_FAILED) return errno_error(ErrorKind::io, what, errno);
  Hash128 hash{};
  const bool ok = hash_guarded(static_cast<const std::uint8_t*>(map) + (offset - start), len, &hash);
  munmap(map, span);
  if (!ok) return make_error(ErrorKind::io, what + ": the file could not be read back (truncated while in use?)");
  return hash;
}

} // namespace sesscp
