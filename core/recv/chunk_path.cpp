// IncomingFile: the way of one chunk, from the socket to its CHECKPOINT, in pipeline order.
//
//  stage        thread                    here
//  -----------  ------------------------  ---------------------------------------
//  receive      network (session)         on_data: read_claim -> claim_chunk,
//                                         read into a ChunkWriter buffer
//  verify       network                   xxh3_128 against the DATA prefix;
//                                         chunk_failed -> RESEND (REPAIR again);
//                                         check_repair for a repaired chunk
//  write        ChunkWriter               write_chunk (page cache + writeback;
//                                         O_DIRECT with SESSCP_DIRECT_IO=1)
//  record       ChunkWriter               record_chunk (m_mx) -> dispatch
//  make durable Syncer                    a SYNC's chunks all recorded: dispatch
//                                         -> Syncer: fdatasync, journal append
//  acknowledge  network                   flush_confirmed: CHECKPOINT (woken by
//                                         the Syncer's eventfd)
//
//   network ──DATA──► verify ──submit──► ChunkWriter ──record/dispatch──► Syncer
//      ▲                                                                    │
//      └──────────────── wake: take_confirmed → CHECKPOINT ◄────────────────┘
//
//  Also: an extra stream's thread (--streams) runs receive, verify, write and
//  record itself (on_stream_data). A small file's only chunk is written on
//  the SmallWriter thread (write_small) and made durable with its batch by
//  the Committer thread (small_files.cpp). The Reverifier threads read back
//  the chunks of earlier sessions meanwhile (earlier_chunks.cpp), yielding
//  to the writer while it is backlogged, and wake the network thread through
//  the Syncer (poke).
#include "core/recv/incoming_file.h"

#include "core/conn.h"
#include "core/recv/destination.h"

#include <fcntl.h>

#include <algorithm>

namespace sesscp::recv {

namespace {

using checkpoint::chunk_length;

// Bound on chunks verified but not yet journaled: the sender's window keeps
// far below this; a peer that goes past it is broken or hostile.
constexpr std::size_t k_max_pending_chunks = checkpoint::k_max_record_hashes;
// A chunk that arrives corrupt this many times is not a transient fault.
constexpr int k_max_resends_per_chunk = 3;

} // namespace

void IncomingFile::start_pipeline() {
  m_syncer.emplace(m_part.get(), m_chunk_size, *m_journal, m_part_name);
  m_writer.emplace(pipeline_buffers(m_chunk_size), m_chunk_size,
                   ChunkWriter::Hooks{[this](std::span<const std::uint8_t> chunk, std::uint64_t offset) {
                                        return write_chunk(chunk, offset);
                                      },
                                      [this](std::uint64_t index, const Hash128& hash) {
                                        std::lock_guard lock(m_mx);
                                        record_chunk(index, hash);
                                      },
                                      [this](Error error) { m_syncer->fail(std::move(error)); }});
}

// Receive.

Result<IncomingFile::Claim> IncomingFile::read_claim(Conn& conn, const frame::Header& header) {
  std::uint8_t raw[frame::k_data_prefix];
  if (header.length < frame::k_data_prefix) return make_error(ErrorKind::protocol, "DATA shorter than its prefix");
  SESSCP_TRY(conn.read_exact(raw));
  auto prefix = frame::decode_data_prefix(raw);
  if (!prefix) return prefix.error();
  std::lock_guard lock(m_mx);
  auto len = claim_chunk(prefix->chunk, header.length);
  if (!len) return len.error();
  return Claim{*prefix, *len};
}

Result<std::uint64_t> IncomingFile::claim_chunk(std::uint64_t index, std::uint32_t length) {
  const bool repair = index < m_first && !m_small && m_earlier[index] == Earlier::asked;
  if ((index < m_dispatched && !repair) || index >= m_chunks || m_verified.count(index) || m_inflight.count(index))
    return make_error(ErrorKind::protocol, "DATA for chunk " + std::to_string(index) + " that is not outstanding");
  if (m_verified.size() + m_inflight.size() >= k_max_pending_chunks)
    return make_error(ErrorKind::protocol, "sender exceeded the unconfirmed-chunk limit");
  auto len = chunk_length(index, m_chunk_size, m_offer.size);
  if (length != frame::k_data_prefix + len)
    return make_error(ErrorKind::protocol, "DATA length does not match chunk " + std::to_string(index));
  m_inflight.insert(index);
  return len;
}

Status IncomingFile::on_data(const frame::Header& header) {
  auto claim = read_claim(m_conn, header);
  if (!claim) return claim.error();
  const auto index = claim->prefix.chunk;
  const auto len = claim->len;
  // A journaled file's chunk goes into one of its writer's buffers, a small
  // file's into one of the small-file writer's, no longer than the file
  // (a zero-filled megabyte per small file was measured to cost page faults).
  AlignedBuffer* slot = m_writer ? m_writer->acquire() : nullptr;
  SmallWriter::Buffer small = slot ? nullptr : m_small_writer.acquire(len);
  std::span<std::uint8_t> chunk(slot ? slot->data() : small->data(), len);
  auto read = m_conn.read_exact(chunk);
  // Verify. Hashed before taking the lock: stream readers claim chunks meanwhile.
  const bool good = read && xxh3_128(chunk) == claim->prefix.hash;
  if (!good) {
    if (slot) m_writer->give_back(slot);
    else m_small_writer.give_back(std::move(small));
  }
  if (!read) return read.error();
  std::unique_lock lock(m_mx);
  m_report.bytes += len;
  if (!good) {
    // A file of one chunk may already be followed by the next file's frames
    // (docs/PROTOCOL.md, pipelining), so its chunk cannot be asked for again.
    if (m_small)
      return make_error(ErrorKind::integrity, m_offer.name + ": its only chunk arrived corrupt; re-run to send it again");
    // Never journal a chunk whose bytes do not match the sender's hash.
    SESSCP_TRY(chunk_failed(index));
    lock.unlock();
    m_events.debug(m_report.name + ": chunk " + std::to_string(index) + " failed its hash; asking again");
    if (index < m_first) return send_repairs(); // a repair: REPAIR again, not RESEND
    return m_conn.send(frame::encode(frame::Resend{index}));
  }
  if (index < m_first) {
    if (auto wrong = check_repair(index, claim->prefix.hash); !wrong) {
      m_inflight.erase(index);
      lock.unlock();
      m_writer->give_back(slot);
      return wrong;
    }
  }
  lock.unlock();
  if (slot) {
    // Write, then record, on the writer's thread.
    m_writer->submit(slot, len, index, index * m_chunk_size, claim->prefix.hash);
    return {};
  }
  // A small file's only chunk (claim_chunk refuses a second): written with
  // its metadata on the small-file writer's thread; its group commit waits
  // for that (written()).
  lock.lock();
  record_chunk(index, claim->prefix.hash);
  lock.unlock();
  m_write_ticket = m_small_writer.submit(*this, std::move(small), len);
  return {};
}

Result<std::optional<std::uint64_t>> IncomingFile::on_stream_data(Conn& conn, const frame::Header& header,
                                                                  AlignedBuffer& buf) {
  auto claim = read_claim(conn, header);
  if (!claim) return claim.error();
  const auto index = claim->prefix.chunk;
  const auto len = claim->len;
  // Allocated only now, once the length is known to be the chunk's.
  if (buf.size() < len) buf.resize(len);
  std::span<std::uint8_t> chunk(buf.data(), len);
  auto read = conn.read_exact(chunk);
  bool good = read && xxh3_128(chunk) == claim->prefix.hash;
  Status written = good ? write_chunk(chunk, index * m_chunk_size) : Status{};
  std::lock_guard lock(m_mx);
  if (!read) {
    m_inflight.erase(index);
    return read.error();
  }
  m_report.bytes += len;
  if (!good) {
    SESSCP_TRY(chunk_failed(index));
    return std::optional<std::uint64_t>(index);
  }
  if (!written) {
    m_inflight.erase(index);
    return written.error();
  }
  record_chunk(index, claim->prefix.hash);
  return std::optional<std::uint64_t>();
}

// Verify.

Status IncomingFile::chunk_failed(std::uint64_t index) {
  m_inflight.erase(index);
  if (index < m_first) {
    // A repair that arrived corrupt: asked for again, like any chunk.
    m_earlier[index] = Earlier::wanted;
    --m_repairs_out;
    m_repair_queue.push_front(index);
  }
  if (++m_resends[index] > k_max_resends_per_chunk)
    return make_error(ErrorKind::integrity, "chunk " + std::to_string(index) + " arrived corrupt " +
                                                std::to_string(k_max_resends_per_chunk + 1) + " times");
  return {};
}

Status IncomingFile::check_repair(std::uint64_t index, const Hash128& hash) {
  // The source's hash now (--checksum, where it differs from the journal),
  // else the journal's. With --checksum a chunk whose source hash has not
  // arrived yet is taken as sent; SOURCE_HASHES checks it when it comes.
  auto it = m_expect.find(index);
  const Hash128& want = it != m_expect.end() ? it->second : m_hashes[index];
  if (hash == want || (m_checksum && index >= m_source_next)) return {};
  return make_error(ErrorKind::integrity,
                    m_offer.name + ": chunk " + std::to_string(index) + " of the source no longer matches the copy " +
                        "sent before the interruption: the source changed without changing its size or mtime; " +
                        "re-run the send with --checksum to find and re-send every changed chunk");
}

// Write.

void IncomingFile::write_small(std::span<const std::uint8_t> data) {
  // Its only chunk, chunk 0, into the empty part; then its metadata.
  m_write_status = pwrite_all(m_part.get(), data, 0, "write " + m_part_name);
  if (m_write_status) m_write_status = set_mode_and_mtime(m_part.get(), m_offer, m_umask, m_part_name);
}

Status IncomingFile::write_chunk(std::span<const std::uint8_t> chunk, std::uint64_t offset) {
  if (m_direct && m_direct_ok.load(std::memory_order_relaxed) && direct_aligned(chunk, offset)) {
    ssize_t n;
    do n = pwrite(m_direct.get(), chunk.data(), chunk.size(), static_cast<off_t>(offset));
    while (n < 0 && errno == EINTR);
    if (n == static_cast<ssize_t>(chunk.size())) return {};
    if (n < 0 && errno != EINVAL) return errno_error(ErrorKind::io, "write " + m_part_name, errno);
    if (n < 0) {
      m_direct_ok = false; // alignment or file system refused: through the cache from now on
    } else {
      chunk = chunk.subspan(static_cast<std::size_t>(n)); // a short write: the rest through the cache
      offset += static_cast<std::uint64_t>(n);
    }
  }
  SESSCP_TRY(pwrite_all(m_part.get(), chunk, offset, "write " + m_part_name));
  // Start writeback now rather than at the next sync point, so the disk works
  // while data keeps arriving and fdatasync finds little left to do.
  sync_file_range(m_part.get(), static_cast<off_t>(offset), static_cast<off_t>(chunk.size()), SYNC_FILE_RANGE_WRITE);
  return {};
}

// Record.

void IncomingFile::record_chunk(std::uint64_t index, const Hash128& hash) {
  m_inflight.erase(index);
  if (index < m_first) {
    // A repaired chunk, written: proven by the buffer it was written from.
    m_hashes[index] = hash;
    m_earlier[index] = Earlier::good;
    ++m_earlier_good;
    --m_repairs_out;
    m_report.repaired_bytes += chunk_length(index, m_chunk_size, m_offer.size);
    m_syncer->poke(); // room for more REPAIRs
    return;
  }
  m_verified.emplace(index, hash);
  while (m_contiguous < m_chunks && m_verified.count(m_contiguous)) ++m_contiguous;
  dispatch();
}

// Make durable.

Status IncomingFile::on_sync(std::span<const std::uint8_t> payload) {
  auto sync = frame::decode_sync(payload);
  if (!sync) return sync.error();
  if (m_small) return make_error(ErrorKind::protocol, "SYNC for a file of at most one chunk");
  if (sync->serial != m_next_serial)
    return make_error(ErrorKind::protocol, "SYNC serial " + std::to_string(sync->serial) + ", expected " +
                                               std::to_string(m_next_serial));
  if (sync->end_chunk <= m_last_sync_end || sync->end_chunk > m_chunks)
    return make_error(ErrorKind::protocol, "SYNC end chunk out of order");
  if (sync->end_chunk - m_last_sync_end > checkpoint::k_max_record_hashes)
    return make_error(ErrorKind::protocol, "SYNC spans more chunks than one journal record holds");
  ++m_next_serial;
  m_last_sync_end = sync->end_chunk;
  std::lock_guard lock(m_mx);
  m_syncs.push_back(*sync);
  dispatch();
  return {};
}

void IncomingFile::dispatch() {
  if (m_small) return; // verified chunks wait for FILE_END
  while (!m_syncs.empty() && m_syncs.front().end_chunk <= m_contiguous) {
    auto sync = m_syncs.front();
    m_syncs.pop_front();
    Job job{sync.serial, m_dispatched, {}};
    job.hashes.reserve(sync.end_chunk - m_dispatched);
    for (auto it = m_verified.begin(); it != m_verified.end() && it->first < sync.end_chunk;) {
      job.hashes.push_back(it->second);
      if (m_checksum) m_hashes[it->first] = it->second;
      else m_file_root.add(it->second);
      m_session_root.add(it->second);
      it = m_verified.erase(it);
    }
    m_dispatched = sync.end_chunk;
    m_last_serial = sync.serial;
    m_syncer->submit(std::move(job));
  }
}

// Acknowledge.

Status IncomingFile::flush_confirmed() {
  if (!m_syncer || !m_syncer->take_news()) return {};
  if (auto err = m_syncer->error()) return *err;
  if (!m_trust_earlier) SESSCP_TRY(send_repairs());
  if (auto confirmed = m_syncer->take_confirmed()) {
    SESSCP_TRY(m_conn.send(frame::encode(frame::Checkpoint{confirmed->first, confirmed->second})));
    m_events.progress(m_report.name, std::min(confirmed->second * m_chunk_size, m_offer.size), m_offer.size);
  }
  return {};
}

// The file's end: FILE_END, then (once every chunk is durable) the major sync point.

Status IncomingFile::on_file_end(std::span<const std::uint8_t> payload) {
  auto end = frame::decode_file_end(payload);
  if (!end) return end.error();
  std::lock_guard lock(m_mx);
  if (m_file_end || end->chunk_count != m_chunks || end->first_chunk != m_first ||
      (!m_small && m_last_sync_end != m_chunks) || (m_small && m_contiguous != m_chunks))
    return make_error(ErrorKind::protocol, "FILE_END does not match the offer and sync points");
  m_file_end = *end;
  return {};
}

bool IncomingFile::ready_to_finish() {
  if (!m_file_end) return false;
  if (m_small) return true;
  std::lock_guard lock(m_mx);
  return m_dispatched == m_chunks && m_syncer->idle() && earlier_proven();
}

} // namespace sesscp::recv
