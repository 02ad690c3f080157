// Destination confinement: names opened beneath --dir, leases, ownership checks and metadata.
#pragma once

#include "base/fd.h"
#include "base/result.h"
#include "core/frame.h"

#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace sesscp::recv {

inline std::string part_suffix(const std::string& name) { return name + ".sesscp.part"; }
inline std::string journal_suffix(const std::string& name) { return name + ".sesscp.journal"; }

// Open `name` inside the directory and nowhere else: openat2 with
// RESOLVE_BENEATH and no symlinks where the kernel has it, O_NOFOLLOW on a
// single checked path component otherwise.
int open_beneath(int dir_fd, const std::string& name, int flags, mode_t mode);

// Refuse a file we did not create: a regular file owned by this user only.
Status check_own_file(int fd, const std::string& name);

// Exclusive right to write one destination name, held for the whole file.
// It is an flock on the journal path; the inode check closes the race with a
// session that unlinks the journal at completion.
// `*created` (if given) says whether this call created the file (empty, ours).
Result<Fd> lock_destination(int dir_fd, const std::string& journal_name, bool* created = nullptr);

// True while `name` in `dir_fd` is the file open as `fd` (nobody swapped it).
bool names_file(int dir_fd, const std::string& name, int fd);

std::int64_t mtime_of(const struct stat& st);

// utimensat's times that leave the atime and set the mtime to `mtime_ns`
// (leave it too when negative: not known).
inline std::array<timespec, 2> mtime_times(std::int64_t mtime_ns) {
  if (mtime_ns < 0) return {{{0, UTIME_OMIT}, {0, UTIME_OMIT}}};
  return {{{0, UTIME_OMIT},
           {static_cast<time_t>(mtime_ns / 1'000'000'000), static_cast<long>(mtime_ns % 1'000'000'000)}}};
}

// Give the part the offered size (no sync). ftruncate costs a journal
// transaction on ext4 even to the same size, so it runs only when needed.
Status set_size(int fd, std::uint64_t size, const std::string& part_name);
// Give the part its permission bits and mtime (no sync).
Status set_mode_and_mtime(int fd, const frame::Offer& offer, unsigned umask, const std::string& part_name);

// Create (if missing) every directory of `rel` beneath the directory
// `root_fd` (named `root_path`) and open the last one. Each component is
// opened with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) from its
// parent's descriptor: a symlink anywhere on the way (planted, or sent by
// SYMLINK) is refused, never followed.
Result<Fd> make_dirs(int root_fd, const std::string& root_path, std::string_view rel);

// Make `link` as `leaf` in `dir_fd`: under a temporary name, renamed over
// the old entry atomically. The target is text to store, never a path this
// side resolves.
Status place_symlink(int dir_fd, const std::string& leaf, const frame::Symlink& link);

} // namespace sesscp::recv
