// ChunkWriter: the stage that writes a journaled file's verified chunks on a thread of its own.
#pragma once

#include "base/aligned.h"
#include "base/hash.h"
#include "base/result.h"
#include "base/worker.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace sesscp::recv {

// Writes the verified chunks of one file on a thread of its own, so the
// network thread reads and hashes the next chunk while the disk takes this
// one (an O_DIRECT write waits for the device). A few chunk buffers cycle
// between the two threads; the network thread waits for a free one, which
// is the back-pressure. Chunks are recorded (and so journaled) only once
// written.
class ChunkWriter {
public:
  struct Chunk {
    std::uint64_t index = 0;
    std::uint64_t offset = 0;
    Hash128 hash{};
  };
  // On the writer's thread, each chunk in order: write `data` at the
  // chunk's offset, then record it. After the first failure (handed to
  // `failed`) the rest are dropped.
  using Store = std::function<Status(std::span<const std::uint8_t> data, const Chunk& chunk)>;
  using Failed = std::function<void(Error)>;

  ChunkWriter(std::size_t buffers, std::size_t buffer_size, Store store, Failed failed);

  // The network thread only (acquire, give_back, submit). A free buffer of
  // at least the chunk size (waits while all are queued): the one freed
  // last, like a stack, so the same few buffers' pages stay warm.
  AlignedBuffer* acquire() {
    // A buffer is free once its last write (its ticket) has run, and writes
    // run in order: wait until the oldest buffer's has, which leaves at
    // least one free, then take the free one written last.
    const auto oldest = std::min_element(m_ticket.begin(), m_ticket.end());
    const std::uint64_t done = m_worker.wait(*oldest);
    std::size_t pick = static_cast<std::size_t>(oldest - m_ticket.begin());
    for (std::size_t i = 0; i < m_buffers.size(); ++i)
      if (m_ticket[i] <= done && m_ticket[i] >= m_ticket[pick]) pick = i;
    return &m_buffers[pick];
  }
  // A buffer not submitted after all (its chunk failed its hash): it stays
  // free, as nothing was queued on it.
  void give_back(AlignedBuffer*) {}
  void submit(AlignedBuffer* b, std::size_t len, std::uint64_t index, std::uint64_t offset, const Hash128& hash) {
    m_submitted = m_worker.submit({b, len, {index, offset, hash}});
    m_ticket[static_cast<std::size_t>(b - m_buffers.data())] = m_submitted;
  }
  // True while at least half the buffers wait for the disk: the partial's
  // re-verification then lets the writer have it (checkpoint::Reverifier).
  bool backlogged() { return 2 * m_worker.pending() >= m_buffers.size(); }
  // Wait until every submitted chunk is written and recorded (or dropped
  // after a failure).
  void drain() { m_worker.drain(); }

private:
  struct Item {
    AlignedBuffer* buf;
    std::size_t len;
    Chunk chunk;
  };
  void run(std::vector<Item>& items);

  Store m_store;
  Failed m_failed;
  std::vector<AlignedBuffer> m_buffers;
  std::vector<std::uint64_t> m_ticket; // per buffer: the ticket of its last write (0: none yet)
  std::uint64_t m_submitted = 0;       // the last ticket
  bool m_dropping = false;             // the writer's thread: after a failed write the rest are dropped
  // Last: its thread uses every member above; at destruction the chunks
  // still queued are dropped.
  Worker<Item> m_worker;
};

} // namespace sesscp::recv
