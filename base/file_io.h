// File I/O that every layer needs: whole writes and reads at an offset,
// directory syncs, and path pieces.
#pragma once

#include "base/result.h"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace sesscp {

// pwrite all of `data` at `offset`, retrying short writes and EINTR. A
// failure is ErrorKind::io with `what` and the errno text.
Status pwrite_all(int fd, std::span<const std::uint8_t> data, std::uint64_t offset, const std::string& what);

// pread up to out.size() bytes at `offset`, retrying short reads and EINTR;
// fewer only at the end of the file.
Result<std::size_t> pread_full(int fd, std::span<std::uint8_t> out, std::uint64_t offset, const std::string& what);

// Make a directory's entries durable (a new or renamed file's name), by
// path or by an open descriptor (`dir` then only names it in the error).
Status fsync_dir(const std::string& dir);
Status fsync_dir(int dir_fd, const std::string& dir);

// The last component of `path` ("b" of "a/b"; `path` itself without a slash).
std::string basename_of(const std::string& path);

// Everything before the last slash: "." without one, "/" for "/name".
std::string dirname_of(const std::string& path);

} // namespace sesscp
