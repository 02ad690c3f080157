// The sender's pipeline stages on threads of their own: the ChunkReader (read ahead) and the SourceHasher (--checksum).
#pragma once

#include "base/aligned.h"
#include "base/fd.h"
#include "base/hash.h"
#include "base/result.h"
#include "base/worker.h"
#include "checkpoint/verify.h"
#include "core/frame.h"
#include "core/source.h"

#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace sesscp::send {

// A chunk as it goes out: its bytes (valid until the next read of the same
// kind) and their hash.
struct Chunk {
  std::span<const std::uint8_t> data;
  Hash128 hash;
};

// Reads and hashes the active file's chunks ahead of the network thread, on
// a thread of its own, so one chunk is read from the page cache (or disk)
// and hashed while the one before is encrypted and sent. Chunks are taken
// strictly in order; a few buffers cycle between the two threads, so the
// read-ahead is bounded by them, not by the window: the read of chunk
// i + buffers is queued when chunk i is done with.
class ChunkReader {
public:
  ChunkReader(const SourceFile& source, std::uint32_t chunk_size, std::uint64_t first, std::uint64_t end,
              std::size_t buffers);

  // Chunk `index`, the next in order after the last one taken; valid until done(index).
  Result<Chunk> take(std::uint64_t index);
  void done(std::uint64_t index);

private:
  struct Slot {
    AlignedBuffer buf;
    std::size_t len = 0;
    Hash128 hash{};
    Status status;
  };
  // The reader's thread: read and hash chunk `index` into its slot.
  void read(std::uint64_t index);

  const SourceFile& m_source;
  std::uint32_t m_chunk_size;
  std::uint64_t m_first;
  std::uint64_t m_end;
  std::vector<Slot> m_slots;
  Status m_reads; // the reader's thread only: ok until a read fails, then that failure for every later chunk
  // Last: its thread stops (the read under way ends, the queued ones are
  // dropped) before the slots go.
  Worker<std::uint64_t> m_worker;
};

// --checksum: hashes the source's chunks [0, end), the ones the receiver
// confirmed in earlier sessions, on a thread of its own while the rest is
// sent, for SOURCE_HASHES. Read like the receiver's re-verification of its
// partial (checkpoint::PartReader: no page cache), so an old source file of
// many GiB does not push the chunks being sent out of the cache.
class SourceHasher {
public:
  SourceHasher(const SourceFile& source, std::uint32_t chunk_size, std::uint64_t end);

  // The next hashes ready (at most one frame's worth), if any.
  Result<std::optional<frame::SourceHashes>> take();
  bool all_taken();
  int wake_fd() const { return m_wake.get(); }

private:
  // The hasher's thread: hash the batch of chunks from `first` on, and
  // queue the next batch, until the end or an error.
  void hash_batch(std::uint64_t first);

  checkpoint::PartReader m_reader;
  std::string m_path;
  std::uint64_t m_end;
  Fd m_wake;
  std::mutex m_mutex;
  std::deque<Hash128> m_ready;
  std::uint64_t m_taken = 0;
  std::optional<Error> m_error;
  // Last: its thread stops (the batch under way ends) before the rest goes.
  Worker<std::uint64_t> m_worker;
};

} // namespace sesscp::send
