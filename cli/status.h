// `sesscp status PATH`: what is partial at a destination (a file, its journal, a directory), read-only.
#pragma once

#include "cli/output.h"

#include <optional>
#include <string>

namespace sesscp::cli {

// Whether a session holds the destination's lock (an flock on its journal),
// read from /proc/locks so that looking never takes, nor waits for, the lock.
// Return the holder's pid, 0 when nobody holds it, nullopt when unknown.
std::optional<long> journal_lock_holder(const std::string& journal_path);

// Report on `path` (a destination file, its .sesscp.journal or .sesscp.part,
// or a directory) and return the exit code: 0 report printed, 64 nothing
// there, 74 cannot read it. With `verify`, also re-hash every confirmed chunk
// of each partial against its journal (read-only, no lease): 65 if any chunk
// is damaged or missing.
int run_status(const std::string& path, Output& out, bool verify = false);

} // namespace sesscp::cli
