// Each file's way through a session: OFFER (ahead of the data), RESUME,
// the active file (its chunks: chunk_path.cpp), FILE_DONE and its report.
#include "core/send/outgoing_file.h"

#include "checkpoint/journal.h"
#include "core/conn.h"
#include "core/send/session.h"

#include <algorithm>
#include <utility>

namespace sesscp::send {

using checkpoint::chunk_count;

void Transfer::start(const frame::Resume& resume, std::uint64_t size) {
  chunk_size = resume.chunk_size;
  chunks = chunk_count(chunk_size, size);
  first = confirmed = sent = last_sync = resume.next_chunk;
  last_sync_time = Clock::now();
  serial = resume.next_serial;
  file_end_sent = false;
  unconfirmed.clear();
  session_root.emplace();
  ahead.clear();
  all_hashes.clear();
}

void Transfer::record(std::uint64_t index, const Hash128& hash) {
  unconfirmed.push_back(hash);
  session_root->add(hash);
  if (!all_hashes.empty()) all_hashes[index] = hash;
}

void Transfer::take_ahead() {
  for (auto it = ahead.begin(); it != ahead.end() && it->first == sent; it = ahead.erase(it)) {
    record(it->first, it->second);
    ++sent;
  }
}

const Hash128& Transfer::sent_hash(std::uint64_t index) const {
  return index < sent ? unconfirmed[index - confirmed] : ahead.at(index);
}

bool Transfer::sync_due(std::uint64_t every) const {
  return sent - last_sync >= every || sent == chunks || Clock::now() - last_sync_time >= k_sync_period;
}

void Transfer::confirm(std::uint64_t end) {
  unconfirmed.erase(unconfirmed.begin(), unconfirmed.begin() + static_cast<std::ptrdiff_t>(end - confirmed));
  confirmed = end;
}

std::uint64_t Transfer::window_end(std::uint64_t window) const {
  return std::min(chunks, confirmed + window_chunks(window, chunk_size));
}

bool Transfer::window_open(std::uint64_t window) const { return sent - confirmed < window_chunks(window, chunk_size); }

bool Session::can_top_up() const {
  // Asked for the token: nothing new is offered, so the next point where
  // everything offered is confirmed comes soon; the token passes there.
  if (!m_turn && m_machine.token_asked()) return false;
  return m_next < m_todo.size() && m_awaiting_resume.size() + m_ready.size() < k_offer_pipeline &&
         m_unfinished.size() < k_max_unfinished;
}

// Offer what comes next, up to the pipeline's depth: directories and links
// need no answer; each file's OFFER gets a RESUME, in order.
Status Session::top_up(Conn& conn) {
  while (can_top_up()) {
    auto index = m_todo[m_next++];
    const auto& e = m_plan.entries[index].source;
    if (e.kind == SourceEntry::Kind::directory) {
      SESSCP_TRY(conn.send_later(frame::encode(frame::Mkdir{e.name, e.mode_bits, e.mtime_ns})));
      continue;
    }
    if (e.kind == SourceEntry::Kind::symlink) {
      SESSCP_TRY(conn.send_later(frame::encode(frame::Symlink{e.name, e.target, e.mtime_ns})));
      continue;
    }
    SESSCP_TRY(offer(conn, index));
  }
  return {};
}

// Open file entry `index` and send its OFFER.
Status Session::offer(Conn& conn, std::size_t index) {
  auto& entry = m_plan.entries[index];
  const auto& e = entry.source;
  auto source = entry.beneath_fd >= 0 ? SourceFile::open_beneath(entry.beneath_fd, entry.beneath_rel, e.name)
                                      : SourceFile::open(e.path);
  if (!source) {
    // Gone since the tree was read: say so and carry on with the others.
    if (source.error().kind != ErrorKind::usage || m_plan.files() == 1) return source.error();
    m_events.info("warning: skipping " + e.path + ": " + source.error().message);
    entry.done = true;
    return {};
  }
  OutgoingFile file;
  file.entry = index;
  file.size = source->size();
  frame::Offer offer;
  offer.name = e.name;
  offer.size = source->size();
  offer.mtime_ns = source->mtime_ns();
  offer.chunk_size = m_opt.chunk_size;
  offer.mode_bits = source->mode_bits();
  auto fp = source->fingerprint(&file.bytes);
  if (!fp) return fp.error();
  offer.fingerprint = *fp;
  file.source.emplace(std::move(*source));
  if (!entry.offered) entry.first_offer = Clock::now();
  entry.offered = true;
  entry.report.size = file.size;
  // Offers, like FILE_END and a small file's DATA, leave with the next
  // frame sent or before this side waits (Conn::send_later).
  SESSCP_TRY(conn.send_later(frame::encode(offer)));
  m_events.offered(e.name, offer.size);
  // Only the next file to send waits for its answer: a journaled one may
  // wait while the receiver re-verifies its partial file. Files offered
  // behind the one being sent are not shown as waiting.
  if (chunk_count(m_opt.chunk_size, offer.size) > 1 && !m_active && m_ready.empty() && m_awaiting_resume.empty())
    m_events.phase(e.name, Events::Phase::verifying, "");
  m_awaiting_resume.push_back(std::move(file));
  return {};
}

Status Session::on_resume(Conn& conn, std::span<const std::uint8_t> payload) {
  if (m_awaiting_resume.empty()) return unexpected(conn, frame::Type::resume, "no RESUME (no OFFER is waiting for one)");
  auto resume = frame::decode_resume(payload);
  if (!resume) return resume.error();
  OutgoingFile file = std::move(m_awaiting_resume.front());
  m_awaiting_resume.pop_front();
  auto& entry = m_plan.entries[file.entry];
  auto& r = entry.report;
  bool first = !entry.resumed;
  entry.resumed = true;
  if (resume->status == frame::ResumeStatus::complete) {
    if (first) r.resumed_at = file.size;
    // After a reconnection the rest may have been sent before the break.
    finish_report(file.entry, first ? FileReport::State::already_complete : FileReport::State::complete);
    return {};
  }
  if (resume->next_chunk > chunk_count(resume->chunk_size, file.size))
    return unexpected(conn, frame::Type::resume, "a resume point inside the file");
  auto offset = std::min(resume->next_chunk * resume->chunk_size, file.size);
  if (first) r.resumed_at = offset;
  // Worth a line when it is a resumption: past 0, or offered in an earlier session.
  if (offset > 0 || !first) m_events.resumed(r.name, offset, file.size);
  if (!resume->message.empty()) m_events.info(r.name + ": " + resume->message);
  file.resume = *resume;
  file.small = chunk_count(resume->chunk_size, file.size) <= 1;
  m_ready.push_back(std::move(file));
  return {};
}

// Make the next ready file the active one, and start the stages that read
// it: the ChunkReader (or the stream writers), the SourceHasher (--checksum).
void Session::start_next() {
  m_active = std::move(m_ready.front());
  m_ready.pop_front();
  m_file.start(m_active->resume, m_active->size);
  if (m_buf.size() < m_file.chunk_size) m_buf.resize(m_file.chunk_size);
  m_reader.reset();
  m_hasher.reset();
  const auto chunk_size = m_file.chunk_size;
  if ((m_features & frame::feature::k_checksum) && !m_active->small) {
    m_file.all_hashes.resize(m_file.chunks);
    if (m_file.first > 0) m_hasher = std::make_unique<SourceHasher>(*m_active->source, chunk_size, m_file.first);
  }
  if (!m_pool && !m_active->small && m_file.sent < m_file.chunks)
    m_reader = std::make_unique<ChunkReader>(*m_active->source, chunk_size, m_file.sent, m_file.chunks,
                                             pipeline_buffers(chunk_size));
  if (m_pool && !m_active->small)
    m_pool->start_file(&*m_active->source, chunk_size, m_file.sent, m_file.window_end(m_opt.window));
  if (!m_active->small) m_events.phase(report(*m_active).name, Events::Phase::transferring, "");
}

Status Session::on_file_done(Conn& conn, std::span<const std::uint8_t> payload) {
  auto fd = frame::decode_file_done(payload);
  if (!fd) return fd.error();
  bool active_done = m_active && m_file.file_end_sent && m_unfinished.empty();
  if (!active_done && m_unfinished.empty())
    return unexpected(conn, frame::Type::file_done, "FILE_DONE after a FILE_END");
  OutgoingFile& file = active_done ? *m_active : m_unfinished.front();
  // A major sync point confirms every chunk before it.
  if (fd->size != file.size)
    return unexpected(conn, frame::Type::file_done, "FILE_DONE for the file sent");
  // --checksum: every chunk's hash is known here too (the earlier ones
  // re-hashed from the source), so the whole file is compared end to end.
  if (active_done && !m_file.all_hashes.empty() && hash_list_root(m_file.all_hashes) != fd->file_root)
    return make_error(ErrorKind::integrity, report(file).name + ": the receiver's digest over the whole file differs "
                                                               "from the source's; the receiver kept its partial file");
  report(file).file_root = fd->file_root;
  m_events.progress(report(file).name, file.size, file.size);
  finish_report(file.entry, FileReport::State::complete);
  if (active_done) {
    m_reader.reset();
    m_hasher.reset();
    m_active.reset();
  } else {
    m_unfinished.pop_front();
  }
  return {};
}

void Session::finish_report(std::size_t index, FileReport::State state) {
  auto& entry = m_plan.entries[index];
  auto& r = entry.report;
  r.state = state;
  r.reconnects = m_plan.reconnects;
  // From the file's first offer: with pipelining, the session's start would
  // charge each small file for every file before it.
  auto since = entry.offered ? entry.first_offer : m_plan.start;
  r.seconds = std::chrono::duration<double>(Clock::now() - since).count();
  entry.done = true;
  m_events.file_report(true, r);
}

} // namespace sesscp::send
