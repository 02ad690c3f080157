// The sender's view of the file it sends: identity and chunk reads.
#pragma once

#include "core/fd.h"
#include "core/hash.h"
#include "core/result.h"

#include <cstdint>
#include <span>
#include <string>

namespace sesscp {

class SourceFile {
public:
  // Open `path` for reading; it must be a regular file.
  static Result<SourceFile> open(const std::string& path);

  // Return a fingerprint of the content that does not depend on the chunk
  // size: XXH3-128 over the size and three 64 KiB samples (start, middle,
  // end). It catches a file rewritten in place with the same size and mtime
  // in most practical cases without reading the whole file.
  Result<Hash128> fingerprint() const;

  // Read `out.size()` bytes at `offset` (all of them, or an error).
  Status read_at(std::uint64_t offset, std::span<std::uint8_t> out) const;

  // Fail with ErrorKind::source_changed if size or mtime changed since open.
  Status check_unchanged() const;

  const std::string& path() const { return m_path; }
  std::uint64_t size() const { return m_size; }
  std::int64_t mtime_ns() const { return m_mtime_ns; }
  std::uint32_t mode_bits() const { return m_mode; }

private:
  SourceFile(Fd fd, std::string path) : m_fd(std::move(fd)), m_path(std::move(path)) {}
  Fd m_fd;
  std::string m_path;
  std::uint64_t m_size = 0;
  std::int64_t m_mtime_ns = 0;
  std::uint32_t m_mode = 0;
};

} // namespace sesscp
