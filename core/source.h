// The local sources of a send: the files (identity and chunk reads), and the entries (files, directories, links) a command line names.
#pragma once

#include "base/fd.h"
#include "base/hash.h"
#include "base/result.h"

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace sesscp {

class SourceFile {
public:
  // Open `path` for reading; it must be a regular file.
  static Result<SourceFile> open(const std::string& path);
  // Open `rel` beneath the directory `dir_fd` only: no symbolic link on the
  // way, nothing outside it (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS).
  // `display` names the file in messages.
  static Result<SourceFile> open_beneath(int dir_fd, const std::string& rel, const std::string& display);

  // Return a fingerprint of the content that does not depend on the chunk
  // size: XXH3-128 over the size and three 64 KiB samples (start, middle,
  // end). It catches a file rewritten in place with the same size and mtime
  // in most practical cases without reading the whole file. A file within
  // one sample is read whole: its bytes are moved to `*whole` if given.
  Result<Hash128> fingerprint(std::vector<std::uint8_t>* whole = nullptr) const;

  // Read `out.size()` bytes at `offset` (all of them, or an error).
  Status read_at(std::uint64_t offset, std::span<std::uint8_t> out) const;

  // Fail with ErrorKind::source_changed if size or mtime changed since open.
  Status check_unchanged() const;

  const std::string& path() const { return m_path; }
  int fd() const { return m_fd.get(); }
  std::uint64_t size() const { return m_size; }
  std::int64_t mtime_ns() const { return m_mtime_ns; }
  std::uint32_t mode_bits() const { return m_mode; }

private:
  static Result<SourceFile> from_fd(Fd fd, const std::string& path);
  SourceFile(Fd fd, std::string path) : m_fd(std::move(fd)), m_path(std::move(path)) {}
  Fd m_fd;
  std::string m_path;
  std::uint64_t m_size = 0;
  std::int64_t m_mtime_ns = 0;
  std::uint32_t m_mode = 0;
};

// One thing to send: a file, a directory or a symbolic link, with the
// relative path it gets at the receiver.
struct SourceEntry {
  enum class Kind { file, directory, symlink };
  Kind kind = Kind::file;
  std::string path;         // local path
  std::string name;         // destination path: '/'-separated, relative to the receiver's --dir
  std::uint32_t mode_bits = 0;
  std::int64_t mtime_ns = 0;
  std::string target;       // symlink target, sent as it is (never resolved by the receiver)
};

// Expand the command line's sources into entries, parents before children,
// each directory's entries in byte order of their names. A directory named
// with a trailing '/' (or '.') sends its contents; otherwise it is sent as a
// directory of its own name (rsync's convention). Sources named on the
// command line are followed if they are symlinks; symlinks met inside a
// directory are sent as links unless `follow_links` (then a link to a
// directory already being walked is skipped, so a cycle cannot recurse).
// Special files (FIFOs, sockets, devices) and names the receiver would
// refuse are skipped with a line in `warnings`. Two sources that would land
// on the same destination path are a usage error.
Result<std::vector<SourceEntry>> collect_sources(const std::vector<std::string>& sources, bool follow_links,
                                                 std::vector<std::string>& warnings);

} // namespace sesscp
