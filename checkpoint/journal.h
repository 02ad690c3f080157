// The sidecar journal: NAME.sesscp.journal beside NAME.sesscp.part.
// Its file I/O (create, open, append, fsync) and verify_tail here; its byte
// layout in checkpoint/journal_format.h. Crash rules: docs/JOURNAL.md.
#pragma once

#include "base/fd.h"
#include "base/hash.h"
#include "base/result.h"
#include "checkpoint/journal_format.h"

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace sesscp::checkpoint {

class Journal {
public:
  // Create (or replace) the journal at `path` with mode 0600, write the
  // header for `identity`, fdatasync it and fsync its directory.
  static Result<Journal> create(const std::string& path, const Identity& identity);

  // Open an existing journal for appending: replay it, cut a torn or corrupt
  // tail off the file (so appends follow the last valid record), and return
  // what it proved. A missing file is ErrorKind::io with ENOENT in the
  // message; an unreadable header is ErrorKind::corrupt.
  static Result<Journal> open(const std::string& path, Replay& replay);

  // Replay the journal at `path` without modifying it (for `status`).
  static Result<Replay> read(const std::string& path);

  // Replay journal bytes already in memory (the parser; fuzzed and unit-tested).
  static Result<Replay> parse(std::span<const std::uint8_t> bytes);

  // Append `record` and make it durable (write + fdatasync) before returning.
  // The caller must have made the chunks' data durable first.
  // Records must be contiguous: record.first_chunk equals the number of chunks
  // confirmed so far, and serials increase.
  Status append(const CheckpointRecord& record);

  // Append `hashes`, the hashes of the chunks after the confirmed ones, as
  // records of at most k_max_record_hashes each, every one durable before
  // the next; `serial` is the last serial used and advances with each
  // record. On a failure the records before the failing one stay appended
  // (confirmed_chunks() says how far it got).
  Status append_chunks(std::span<const Hash128> hashes, std::uint64_t& serial);

  // Replace the journal at `path` by one for `identity` that confirms exactly
  // `hashes` (chunks 0..n-1, serials from 1): how a resume drops the chunks
  // that failed re-verification. The caller must hold the destination's lock.
  static Result<Journal> rewrite(const std::string& path, const Identity& identity,
                                 std::span<const Hash128> hashes);

  std::uint64_t confirmed_chunks() const { return m_chunks; }
  std::uint64_t last_serial() const { return m_last_serial; }
  const std::string& path() const { return m_path; }
  int fd() const { return m_fd.get(); }

private:
  Journal(Fd fd, std::string path, std::uint64_t chunks, std::uint64_t serial, std::uint64_t end);
  Fd m_fd;
  std::string m_path;
  std::uint64_t m_chunks = 0;
  std::uint64_t m_last_serial = 0;
  std::uint64_t m_end = 0; // file offset where the next record goes
};

// Re-hash the confirmed chunks of the partial file that cover the last
// `max_bytes` of `hashes` (whole chunks, at least the last one) and compare
// them with the journal. Return how many leading chunks of `hashes` remain
// proven: hashes.size() when the tail matches, fewer when a chunk in the
// tail is short or differs (everything from the first bad chunk on is
// dropped). Reads at most max_bytes + one chunk: resume stays O(journal).
// `on_progress(done, total)`, if set, is called after each chunk read.
using VerifyProgress = std::function<void(std::uint64_t done, std::uint64_t total)>;
Result<std::uint64_t> verify_tail(int part_fd, std::uint32_t chunk_size, std::uint64_t file_size,
                                  std::span<const Hash128> hashes, std::uint64_t max_bytes,
                                  const VerifyProgress& on_progress = {});

} // namespace sesscp::checkpoint
