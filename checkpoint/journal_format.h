// The journal's format: its records, their encoding and their replay, without file I/O.
// Byte layout: docs/JOURNAL.md; the file I/O: checkpoint/journal.h.
#pragma once

#include "base/hash.h"
#include "base/result.h"

#include <cstdint>
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

// ErrorKind::internal when `identity` could not be read back by
// parse_journal (name too long, invalid chunk size); ok otherwise.
Status check_encodable(const Identity& identity);

// The start of a journal: magic, format version and the header record for
// `identity` (which check_encodable must have accepted).
std::vector<std::uint8_t> encode_journal_start(const Identity& identity);

// One checkpoint record, checksummed, as appended after the start.
std::vector<std::uint8_t> encode_checkpoint(const CheckpointRecord& record);

// Replay journal bytes: an unusable preamble or header is ErrorKind::corrupt;
// a torn or corrupt record after it ends the replay (Replay::tail_problem).
Result<Replay> parse_journal(std::span<const std::uint8_t> bytes);

// Return the size of chunk `index` of a file of `file_size` bytes.
std::uint64_t chunk_length(std::uint64_t index, std::uint32_t chunk_size, std::uint64_t file_size);

// Return the number of chunks in a file of `file_size` bytes.
std::uint64_t chunk_count(std::uint32_t chunk_size, std::uint64_t file_size);

} // namespace sesscp::checkpoint
