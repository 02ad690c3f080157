// One file of a session, from its OFFER to its FILE_DONE, and the active file's chunks in flight.
#pragma once

#include "base/hash.h"
#include "core/frame.h"
#include "core/send/common.h"
#include "core/source.h"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <vector>

namespace sesscp::send {

// A sync point at least this often (when data was sent since the last):
// on a slow link window/4 can take minutes, and progress and the resume
// point would move only that often. A little under a second, so that a
// sender paced by --bwlimit (a chunk every 500 ms at 2M) does not miss the
// second by microseconds and wait for the next chunk.
constexpr auto k_sync_period = std::chrono::milliseconds(900);

// A file offered in this session: it waits for its RESUME, then for its
// turn to send (the active file), then, FILE_END sent, for its FILE_DONE.
struct OutgoingFile {
  std::size_t entry = 0; // in the plan
  std::optional<SourceFile> source;
  frame::Resume resume;
  std::uint64_t size = 0;
  bool small = false; // at most one chunk: no minor sync, the next file may follow before FILE_END
  std::vector<std::uint8_t> bytes; // a file within one fingerprint sample, as read for it (sent from here)

  // The fingerprint's bytes serve the first DATA of each chunk only: they
  // go once chunk `index`, the last of `chunks`, is sent.
  void drop_bytes_after(std::uint64_t index, std::uint64_t chunks) {
    if (!bytes.empty() && index + 1 == chunks) std::vector<std::uint8_t>().swap(bytes);
  }
};

// The active file's transfer: which chunks are sent and confirmed, and the
// hashes of those sent and not yet confirmed. One for the session, reset
// for each active file (its containers keep what they allocated).
struct Transfer {
  std::uint32_t chunk_size = 0;
  std::uint64_t chunks = 0;     // chunks in the file
  std::uint64_t first = 0;      // first chunk sent this session
  std::uint64_t confirmed = 0;  // every chunk below is durable at the receiver
  std::uint64_t sent = 0;       // every chunk below has been sent once
  std::uint64_t serial = 1;
  std::uint64_t last_sync = 0;
  Clock::time_point last_sync_time{}; // a slow link still gets a sync point every k_sync_period
  bool file_end_sent = false;
  std::deque<Hash128> unconfirmed; // hashes of chunks [confirmed, sent)
  std::optional<RootBuilder> session_root;
  // --streams: the chunks written beyond `sent` (out of order, by any connection).
  std::map<std::uint64_t, Hash128> ahead;
  // --checksum: every chunk's hash, for the whole-file root that FILE_DONE
  // returns (the earlier chunks' from the source hasher); else empty.
  std::vector<Hash128> all_hashes;

  // A file becomes active, from the receiver's resume point on.
  void start(const frame::Resume& resume, std::uint64_t size);
  // Chunk `index` is sent for the first time, in order.
  void record(std::uint64_t index, const Hash128& hash);
  // --streams: move `sent` over the chunks written contiguously after it.
  void take_ahead();
  // The hash chunk `index` was sent with (unconfirmed, or written ahead).
  const Hash128& sent_hash(std::uint64_t index) const;
  // A minor sync point is due: `every` chunks since the last, the last
  // chunk, or k_sync_period.
  bool sync_due(std::uint64_t every) const;
  // A CHECKPOINT: every chunk below `end` is durable.
  void confirm(std::uint64_t end);
  // Where the window of `window` bytes ends, from the confirmed chunks on.
  std::uint64_t window_end(std::uint64_t window) const;
  bool window_open(std::uint64_t window) const;
};

} // namespace sesscp::send
