#include "core/send/stages.h"

#include "checkpoint/journal.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

namespace sesscp::send {

using checkpoint::chunk_length;

ChunkReader::ChunkReader(const SourceFile& source, std::uint32_t chunk_size, std::uint64_t first, std::uint64_t end,
                         std::size_t buffers)
    : m_source(source), m_chunk_size(chunk_size), m_first(first), m_end(end), m_slots(buffers),
      m_worker([this](std::vector<std::uint64_t>& batch) { read(batch.front()); },
               Worker<std::uint64_t>::OnQuit::drop) {
  for (auto& slot : m_slots) slot.buf.resize(chunk_size);
  for (auto i = m_first; i < m_end && i - m_first < m_slots.size(); ++i) m_worker.submit(i);
}

Result<Chunk> ChunkReader::take(std::uint64_t index) {
  if (index < m_first || index >= m_end) return make_error(ErrorKind::internal, "chunk read out of order");
  // Chunks are queued in order, one ticket each: chunk `index` has ticket index - first + 1.
  m_worker.wait(index - m_first + 1);
  Slot& slot = m_slots[index % m_slots.size()];
  if (!slot.status) return slot.status.error();
  return Chunk{{slot.buf.data(), slot.len}, slot.hash};
}

void ChunkReader::done(std::uint64_t index) {
  // Its buffer is free: the reader's thread may read ahead into it.
  if (auto next = index + m_slots.size(); next < m_end) m_worker.submit(next);
}

void ChunkReader::read(std::uint64_t index) {
  Slot& slot = m_slots[index % m_slots.size()];
  if (!m_reads) {
    slot.status = m_reads; // the network thread reports it when it gets there
    return;
  }
  slot.len = static_cast<std::size_t>(chunk_length(index, m_chunk_size, m_source.size()));
  slot.status = m_source.read_at(index * m_chunk_size, slot.buf.span(slot.len));
  slot.hash = slot.status ? xxh3_128(slot.buf.span(slot.len)) : Hash128{};
  if (!slot.status) m_reads = slot.status;
}

SourceHasher::SourceHasher(const SourceFile& source, std::uint32_t chunk_size, std::uint64_t end)
    : m_reader(source.fd(), chunk_size, source.size()), m_path(source.path()), m_end(end),
      m_wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
      m_worker([this](std::vector<std::uint64_t>& batch) { hash_batch(batch.front()); },
               Worker<std::uint64_t>::OnQuit::drop) {
  if (m_end > 0) m_worker.submit(0);
}

Result<std::optional<frame::SourceHashes>> SourceHasher::take() {
  std::uint64_t v;
  (void)!read(m_wake.get(), &v, sizeof v);
  std::lock_guard lock(m_mutex);
  if (m_error) return *m_error;
  if (m_ready.empty()) return std::optional<frame::SourceHashes>();
  frame::SourceHashes out;
  out.first_chunk = m_taken;
  auto n = std::min(m_ready.size(), frame::k_max_source_hashes);
  out.hashes.assign(m_ready.begin(), m_ready.begin() + static_cast<std::ptrdiff_t>(n));
  m_ready.erase(m_ready.begin(), m_ready.begin() + static_cast<std::ptrdiff_t>(n));
  m_taken += n;
  return std::optional(std::move(out));
}

bool SourceHasher::all_taken() {
  std::lock_guard lock(m_mutex);
  return m_taken == m_end;
}

void SourceHasher::hash_batch(std::uint64_t first) {
  const auto n = std::min(m_reader.batch(), m_end - first);
  auto hashes = m_reader.hash_chunks(first, n);
  {
    std::lock_guard lock(m_mutex);
    if (hashes) {
      for (const auto& h : *hashes) {
        if (h) m_ready.push_back(*h);
        else if (!m_error) m_error = make_error(ErrorKind::source_changed, m_path + " is shorter than when it was offered");
      }
    } else {
      m_error = hashes.error();
    }
    std::uint64_t one = 1;
    (void)!write(m_wake.get(), &one, sizeof one);
    if (m_error) return;
  }
  // One batch at a time, as a loop over the file would: a quit drops the next one.
  if (first + n < m_end) m_worker.submit(first + n);
}

} // namespace sesscp::send
