// Direct I/O: heap buffers aligned for O_DIRECT, and O_DIRECT descriptors.
#pragma once

#include "base/fd.h"

#include <fcntl.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <string_view>

namespace sesscp {

inline constexpr std::size_t k_direct_align = 4096;

class AlignedBuffer {
public:
  // Keep the first min(size, n) bytes' storage only when no growth is needed;
  // growing gives fresh (uninitialised) storage.
  void resize(std::size_t n) {
    if (n > m_capacity) {
      std::size_t cap = (n + k_direct_align - 1) / k_direct_align * k_direct_align;
      auto* p = static_cast<std::uint8_t*>(std::aligned_alloc(k_direct_align, cap));
      if (!p) throw std::bad_alloc();
      m_data.reset(p);
      m_capacity = cap;
    }
    m_size = n;
  }
  std::uint8_t* data() { return m_data.get(); }
  std::size_t size() const { return m_size; }
  std::size_t capacity() const { return m_capacity; }
  std::span<std::uint8_t> span(std::size_t n) { return {m_data.get(), n}; }

private:
  struct Free {
    void operator()(std::uint8_t* p) const { std::free(p); }
  };
  std::unique_ptr<std::uint8_t, Free> m_data;
  std::size_t m_capacity = 0;
  std::size_t m_size = 0;
};

// A second descriptor of the open file `fd` with O_DIRECT and `access`
// (O_RDONLY or O_WRONLY), or none where the file system or /proc refuses it
// (the caller then goes through the page cache). Through /proc: the same
// inode, whatever has happened to its name since. SESSCP_DIRECT_IO=0 in the
// environment turns direct I/O off (reads included), to compare.
inline Fd reopen_direct(int fd, int access) {
  if (const char* env = std::getenv("SESSCP_DIRECT_IO"); env && std::string_view(env) == "0") return Fd();
  std::string self = "/proc/self/fd/" + std::to_string(fd);
  return Fd(::open(self.c_str(), access | O_DIRECT | O_CLOEXEC));
}

// True when the receiver should write a journaled file's chunks with
// O_DIRECT (SESSCP_DIRECT_IO=1) rather than through the page cache, the
// default: on this machine's disk the page cache, with writeback started per
// chunk and the synced range dropped after each sync point, measured 1.5x
// as fast (docs/PERFORMANCE.md, "Receiver writes").
inline bool direct_writes_requested() {
  const char* env = std::getenv("SESSCP_DIRECT_IO");
  return env && std::string_view(env) == "1";
}

// True when a write of `data` at `offset` meets O_DIRECT's alignment.
inline bool direct_aligned(std::span<const std::uint8_t> data, std::uint64_t offset) {
  return reinterpret_cast<std::uintptr_t>(data.data()) % k_direct_align == 0 && offset % k_direct_align == 0 &&
         data.size() % k_direct_align == 0;
}

// Chunk buffers cycling between two threads of one file (the sender's reader,
// the receiver's writer): up to 8 MiB of chunks in flight, at least two.
inline std::size_t pipeline_buffers(std::uint32_t chunk_size) {
  return std::clamp<std::size_t>((8u << 20) / chunk_size, 2, 8);
}

} // namespace sesscp
