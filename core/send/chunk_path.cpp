// The sender's per-chunk pipeline, in the order a chunk goes:
//
//   ChunkReader thread    session thread                      the receiver
//   read -> hash  ----->  take -> frame -> send (DATA) ----->  CHECKPOINT,
//   (in order, a few      -> SYNC every window/4 or 900 ms     RESEND, REPAIR,
//    buffers ahead)       -> FILE_END                          VERIFIED,
//                         <- CHECKPOINT: the window moves      FILE_DONE
//   stream writer         <- RESEND: read again, send again
//   threads (--streams):  <- REPAIR: read, send (earlier
//   claim -> read ->         sessions' chunks)
//   hash -> send (DATA)   -> SOURCE_HASHES
//   on its own connection   ^
//                           |
//   SourceHasher thread (--checksum): the chunks confirmed before this
//   session, read past the page cache and hashed
//
// Without --streams the ChunkReader reads ahead; with it, the writers read
// their own chunks and the session thread reads its share itself. Every
// other read (RESEND, REPAIR) is the session thread's, into one buffer.
#include "core/send/session.h"

#include "checkpoint/journal.h"
#include "core/conn.h"

#include <algorithm>
#include <string>

namespace sesscp::send {

using checkpoint::chunk_length;

// Send the active file's data while the window has room; acknowledgements
// are read in between, so data never waits for a round trip while the
// window is open. After the last chunk, the major sync point request.
Status Session::pump(Conn& conn) {
  std::uint64_t sync_every = sync_interval_chunks(m_opt.window, m_file.chunk_size);
  std::uint64_t max_in_flight = window_chunks(m_opt.window, m_file.chunk_size);
  while (m_file.sent < m_file.chunks && m_file.sent - m_file.confirmed < max_in_flight) {
    SESSCP_TRY(send_next_chunk(conn));
    ++m_file.sent;
    // A file of one chunk has no minor sync point: FILE_END is its only one.
    if (!m_active->small && m_file.sync_due(sync_every)) SESSCP_TRY(send_sync(conn));
    auto ready = conn.wait_readable(-1, 0);
    if (ready && *ready) {
      m_peer_ready = true;
      break;
    }
    if (!ready && ready.error().kind != ErrorKind::timeout) return ready.error();
  }
  if (m_file.sent < m_file.chunks || m_file.file_end_sent) return {};
  auto end = file_end();
  if (!end) return end.error();
  SESSCP_TRY(conn.send_later(frame::encode(*end)));
  m_file.file_end_sent = true;
  if (m_active->small) {
    // Nothing of it can be asked for again: the next file may start now.
    m_active->source.reset();
    m_unfinished.push_back(std::move(*m_active));
    m_active.reset();
  }
  return {};
}

// Chunk `index` of the active file and its hash. Every read of the session
// thread comes here; with Pass::first, release_chunk(index) once it is sent.
Result<Chunk> Session::read_chunk(std::uint64_t index, Pass pass) {
  auto& file = *m_active;
  auto len = chunk_length(index, m_file.chunk_size, file.source->size());
  // In order, the reader's thread has read and hashed it already.
  if (pass == Pass::first && m_reader) return m_reader->take(index);
  if (pass == Pass::first && index == 0 && file.bytes.size() == len && len == file.source->size()) {
    // The whole file was read for its fingerprint a moment ago: no second read.
    return Chunk{file.bytes, xxh3_128(file.bytes)};
  }
  std::span<std::uint8_t> buf(m_buf.data(), len);
  SESSCP_TRY(file.source->read_at(index * m_file.chunk_size, buf));
  return Chunk{buf, xxh3_128(buf)};
}

// The next chunk in order (m_file.sent), for its first DATA.
Status Session::send_next_chunk(Conn& conn) {
  const auto index = m_file.sent;
  auto chunk = read_chunk(index, Pass::first);
  if (!chunk) return chunk.error();
  const auto len = chunk->data.size();
  m_file.record(index, chunk->hash);
  // A small file's only chunk of up to 64 KiB waits for company
  // (Conn::send_data_later): several such files then leave in one send.
  auto sent = m_active->small && len <= 64 * 1024 ? conn.send_data_later({index, chunk->hash}, chunk->data)
                                                   : conn.send_data({index, chunk->hash}, chunk->data);
  release_chunk(index);
  SESSCP_TRY(sent);
  m_active->drop_bytes_after(index, m_file.chunks);
  return sent_bytes(conn, len);
}

// Chunk `index`, read with Pass::first, is sent: the reader may reuse its buffer.
void Session::release_chunk(std::uint64_t index) {
  if (!m_reader) return;
  m_reader->done(index);
  if (index + 1 == m_file.chunks) m_reader.reset(); // every chunk taken: nothing left for its thread
}

// A chunk of `len` bytes is sent: count it, and pace for --bwlimit.
Status Session::sent_bytes(Conn& conn, std::uint64_t len) {
  report(*m_active).bytes += len;
  m_plan.bytes += len;
  if (m_opt.bwlimit) SESSCP_TRY(conn.flush()); // nothing held back while pacing sleeps
  throttle(m_opt.bwlimit, m_plan.bytes - m_bytes_before, m_start, m_opt.stop);
  return {};
}

// A minor sync point over every chunk sent so far.
Status Session::send_sync(Conn& conn) {
  SESSCP_TRY(conn.send(frame::encode(frame::Sync{m_file.serial++, m_file.sent})));
  m_file.last_sync = m_file.sent;
  m_file.last_sync_time = Clock::now();
  return {};
}

// The major sync point, every chunk sent: the source must still be the file we offered.
Result<frame::FileEnd> Session::file_end() {
  if (!m_active->small) m_events.phase(report(*m_active).name, Events::Phase::finalising, "");
  SESSCP_TRY(m_active->source->check_unchanged());
  return frame::FileEnd{m_file.first, m_file.chunks, m_file.session_root->digest()};
}

// --streams: the first connection's share, and FILE_END once every chunk is written.
Status Session::pump_streams(Conn& conn) {
  SESSCP_TRY(collect_streams(conn));
  if (auto index = m_pool->claim()) {
    // No ChunkReader with --streams: read from the source, like the writers.
    auto chunk = read_chunk(*index, Pass::first);
    if (!chunk) return chunk.error();
    SESSCP_TRY(conn.send_data({*index, chunk->hash}, chunk->data));
    m_pool->written(*index, chunk->hash, chunk->data.size());
    m_pool->pace(chunk->data.size());
    SESSCP_TRY(collect_streams(conn));
  }
  if (m_file.sent < m_file.chunks) return {};
  // Every chunk is written: the writers are done with this file.
  m_pool->end_file();
  auto end = file_end();
  if (!end) return end.error();
  SESSCP_TRY(conn.send(frame::encode(*end)));
  m_file.file_end_sent = true;
  return {};
}

// Take what the writers finished; move the contiguous prefix (sent) on
// and ask for a sync point as pump() does, now that every chunk below it is
// fully written to one socket or another.
Status Session::collect_streams(Conn& conn) {
  std::uint64_t bytes = 0;
  SESSCP_TRY(m_pool->take(m_file.ahead, bytes));
  report(*m_active).bytes += bytes;
  m_plan.bytes += bytes;
  m_file.take_ahead();
  if (m_file.sent > m_file.last_sync && m_file.sync_due(sync_interval_chunks(m_opt.window, m_file.chunk_size)))
    SESSCP_TRY(send_sync(conn));
  return {};
}

Status Session::on_checkpoint(Conn& conn, std::span<const std::uint8_t> payload) {
  auto cp = frame::decode_checkpoint(payload);
  if (!cp) return cp.error();
  if (!multi_chunk_active() || cp->end_chunk < m_file.confirmed || cp->end_chunk > m_file.sent)
    return unexpected(conn, frame::Type::checkpoint, "a CHECKPOINT within the chunks sent");
  m_file.confirm(cp->end_chunk);
  if (m_pool && !m_file.file_end_sent) m_pool->set_limit(m_file.window_end(m_opt.window));
  m_events.progress(report(*m_active).name, std::min(m_file.confirmed * m_file.chunk_size, m_active->size),
                    m_active->size);
  return {};
}

Status Session::on_resend(Conn& conn, std::span<const std::uint8_t> payload) {
  auto rs = frame::decode_resend(payload);
  if (!rs) return rs.error();
  if (streaming()) SESSCP_TRY(collect_streams(conn));
  if (!multi_chunk_active() || rs->chunk < m_file.confirmed ||
      (rs->chunk >= m_file.sent && !m_file.ahead.count(rs->chunk)))
    return unexpected(conn, frame::Type::resend, "a RESEND of an unconfirmed chunk");
  return resend_chunk(conn, rs->chunk);
}

Status Session::resend_chunk(Conn& conn, std::uint64_t index) {
  auto chunk = read_chunk(index, Pass::again);
  if (!chunk) return chunk.error();
  // The receiver saw different bytes than we hashed: resend, unless our own
  // bytes changed, in which case the file is no longer the one we offered.
  // (With --streams the chunk may be written but beyond the contiguous prefix.)
  if (chunk->hash != m_file.sent_hash(index))
    return make_error(ErrorKind::source_changed, m_active->source->path() + " changed while it was being sent");
  m_events.debug("resending chunk " + std::to_string(index) + " at the receiver's request");
  SESSCP_TRY(conn.send_data({index, chunk->hash}, chunk->data));
  m_active->drop_bytes_after(index, m_file.chunks);
  return sent_bytes(conn, chunk->data.size());
}

Status Session::on_repair(Conn& conn, std::span<const std::uint8_t> payload) {
  auto rp = frame::decode_repair(payload);
  if (!rp) return rp.error();
  if (!multi_chunk_active() || rp->chunk >= m_file.first)
    return unexpected(conn, frame::Type::repair, "a REPAIR of a chunk confirmed before this session");
  return send_repair(conn, rp->chunk);
}

// A chunk confirmed in an earlier session that the receiver's partial no
// longer holds (REPAIR): read it from the source and send it again.
Status Session::send_repair(Conn& conn, std::uint64_t index) {
  auto chunk = read_chunk(index, Pass::again);
  if (!chunk) return chunk.error();
  m_events.debug("sending chunk " + std::to_string(index) + " again: the " + m_peer + "'s partial file lost it");
  SESSCP_TRY(conn.send_data({index, chunk->hash}, chunk->data));
  auto& r = report(*m_active);
  ++r.damaged_chunks;
  r.repaired_bytes += chunk->data.size();
  return sent_bytes(conn, chunk->data.size());
}

Status Session::on_verified(Conn& conn, std::span<const std::uint8_t> payload) {
  auto v = frame::decode_verified(payload);
  if (!v) return v.error();
  if (!multi_chunk_active() || v->total != m_file.first)
    return unexpected(conn, frame::Type::verified, "a VERIFIED of the chunks confirmed before this session");
  const auto& name = report(*m_active).name;
  const auto chunk_size = m_file.chunk_size;
  m_events.verify_progress(name, std::min(v->checked * chunk_size, m_active->size),
                           std::min(v->total * chunk_size, m_active->size));
  if (v->checked == v->total)
    m_events.debug(name + ": the " + std::string(m_peer) + " re-verified " + std::to_string(v->total) +
                   " chunks of its partial file, " + std::to_string(v->damaged) + " damaged");
  return {};
}

// --checksum: send the source hashes the hasher has ready.
Status Session::send_source_hashes(Conn& conn) {
  for (;;) {
    auto batch = m_hasher->take();
    if (!batch) return batch.error();
    if (!*batch) return {};
    for (std::size_t k = 0; k < (*batch)->hashes.size(); ++k)
      m_file.all_hashes[(*batch)->first_chunk + k] = (*batch)->hashes[k];
    SESSCP_TRY(m_machine.on_send(frame::Type::source_hashes));
    SESSCP_TRY(conn.send(frame::encode(**batch)));
  }
}

} // namespace sesscp::send
