// The sidecar journal: NAME.sesscp.journal beside NAME.sesscp.part.
// Byte layout and crash rules: docs/JOURNAL.md.
#pragma once

#include "base/fd.h"
#include "base/hash.h"
#include "base/result.h"

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace sesscp::checkpoint {

inline constexpr std::uint16_t k_format_version = 1;
// Bound on one record's payload, checked before any allocation on replay.
inline constexpr std::uint32_t k_max_record_payload = 1u << 20;
// Most chunk hashes one checkpoint record can hold (20-byte fixed part).
inline constexpr std::uint64_t k_max_record_hashes = (k_max_record_payload - 20) / 16;

// What a journal is a journal of. A journal is only ever used for an offer
// whose identity is equal to the one in its header.
struct Identity {
  std::string name;            // destination name, as offered (for status output)
  std::uint64_t size = 0;      // source size in bytes
  std::int64_t mtime_ns = 0;   // source mtime, nanoseconds since the epoch
  std::uint32_t chunk_size = 0;
  Hash128 fingerprint{};       // the sender's fingerprint of the source

  bool operator==(const Identity&) const = default;
};

// Describe the first field in which `journal` and `offer` differ, e.g.
// "size differs (journal 100, offer 200)", or "" when they are equal.
// chunk_size is not compared: the receiver tells the sender to use the
// journal's chunk size.
std::string identity_mismatch(const Identity& journal, const Identity& offer);

// One minor synchronisation point: chunks [first_chunk, first_chunk +
// hashes.size()) are durable in the partial file and had these hashes.
struct CheckpointRecord {
  std::uint64_t serial = 0;
  std::uint64_t first_chunk = 0;
  std::vector<Hash128> hashes;
};

// What replaying a journal proved.
struct Replay {
  Identity identity;
  std::vector<Hash128> chunk_hashes; // confirmed chunks 0..n-1, in order
  std::uint64_t last_serial = 0;     // serial of the last valid record (0: none)
  std::uint64_t valid_length = 0;    // bytes of the journal file that replayed cleanly
  std::uint64_t file_length = 0;     // bytes in the journal file
  std::string tail_problem;          // why replay stopped early, "" if it read to the end

  // Bytes of the source confirmed durable (min(chunks * chunk_size, size)).
  std::uint64_t confirmed_bytes() const;
};

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

// Return the size of chunk `index` of a file of `file_size` bytes.
std::uint64_t chunk_length(std::uint64_t index, std::uint32_t chunk_size, std::uint64_t file_size);

// Return the number of chunks in a file of `file_size` bytes.
std::uint64_t chunk_count(std::uint32_t chunk_size, std::uint64_t file_size);

} // namespace sesscp::checkpoint
