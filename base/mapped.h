// Hashing a range of a file through a read-only mapping of it, without
// copying the bytes into a buffer first.
#pragma once

#include "base/hash.h"
#include "base/result.h"

#include <cstddef>
#include <cstdint>
#include <string>

namespace sesscp {

// XXH3-128 of `len` bytes of `fd` (opened for reading) at `offset`, read
// through a mapping of just that range. A page that cannot be read (the file
// was truncated meanwhile, or an I/O error: SIGBUS) is ErrorKind::io with
// `what`, not a crash: the SIGBUS handler this installs (once, for the
// process) turns a fault inside the hash into that error and leaves any
// other SIGBUS to the disposition it replaced. Variants measured in the
// splice experiment (docs/PERFORMANCE.md): SESSCP_NOPOP=1 maps without
// MAP_POPULATE; SESSCP_PREAD=1 preads 128 KiB pieces instead of mapping.
Result<Hash128> xxh3_128_of_range(int fd, std::uint64_t offset, std::size_t len, const std::string& what);

} // namespace sesscp
