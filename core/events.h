// What the engine tells its user interface; cli/ implements it.
#pragma once

#include "base/hash.h"

#include <cstdint>
#include <string>

namespace sesscp {

struct FileReport {
  enum class State { complete, already_complete, interrupted, failed };
  std::string name;
  State state = State::failed;
  std::uint64_t size = 0;       // bytes in the file
  std::uint64_t resumed_at = 0; // offset this run started from
  std::uint64_t bytes = 0;      // file bytes carried in DATA frames this run (sent or received)
  double seconds = 0;
  int reconnects = 0;           // sessions re-established after a failure (send --retry)
  // Resume re-verification (docs/JOURNAL.md): bytes of the partial read back
  // and re-hashed this run (receiving side), chunks found damaged or missing
  // at rest, or changed at the source (--checksum), and the bytes of `bytes`
  // that were sent again for them (both sides).
  std::uint64_t reverified_bytes = 0;
  std::uint64_t damaged_chunks = 0;
  std::uint64_t repaired_bytes = 0;
  Hash128 file_root{};          // set when complete
};

const char* to_string(FileReport::State state);

// Called from any session thread; implementations must be thread-safe.
class Events {
public:
  virtual ~Events() = default;
  // A line for the person running the command (resume point, restarts, ...).
  virtual void info(const std::string& line) = 0;
  // Protocol-level detail, shown with -v.
  virtual void debug(const std::string& line) = 0;
  // Bytes of `name` confirmed so far, out of `total`.
  virtual void progress(const std::string& name, std::uint64_t done, std::uint64_t total) = 0;
  // One file finished, in whatever state. `sending` tells the side.
  virtual void file_report(bool sending, const FileReport& report) = 0;

  // Structured hooks for progress displays and --json. Default: ignored.
  enum class Phase { connecting, verifying, transferring, finalising, reconnecting };
  // `name` is the file (empty before a file is known); `detail` is free text.
  virtual void phase(const std::string& name, Phase phase, const std::string& detail) {
    (void)name, (void)phase, (void)detail;
  }
  // The sender lost its session and will try again after `delay_s` seconds.
  // `attempt` is 1-based; `limit` is the --retry count, or -1 when only
  // --retry-for bounds it. `reason` is the failure that caused it.
  virtual void reconnecting(int attempt, int limit, double delay_s, const std::string& reason) {
    (void)attempt, (void)limit, (void)delay_s, (void)reason;
  }
  // The transfer of `name` (re)starts at `offset` of `size` bytes; offset 0
  // is a fresh start.
  virtual void resumed(const std::string& name, std::uint64_t offset, std::uint64_t size) {
    (void)name, (void)offset, (void)size;
  }
  // `name` (`size` bytes) is offered: by this sender, or to this receiver.
  virtual void offered(const std::string& name, std::uint64_t size) { (void)name, (void)size; }
  // The receiver has re-hashed `done` of the `total` bytes it re-verifies
  // before it names a resume point (the last window of the partial file).
  virtual void verify_progress(const std::string& name, std::uint64_t done, std::uint64_t total) {
    (void)name, (void)done, (void)total;
  }
};

const char* to_string(Events::Phase phase);

} // namespace sesscp
