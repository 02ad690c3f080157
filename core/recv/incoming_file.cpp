// IncomingFile: the offer (lease, resume point), begin, and the major sync point.
#include "core/recv/incoming_file.h"

#include "core/conn.h"
#include "core/recv/destination.h"

#include <fcntl.h>
#include <sys/statvfs.h>

#include <algorithm>

namespace sesscp::recv {

using checkpoint::chunk_count;

Result<frame::Resume> IncomingFile::open(const frame::Offer& offer) {
  m_offer = offer;
  m_report.name = offer.name;
  m_report.size = offer.size;
  auto slash = offer.name.find_last_of('/');
  m_leaf = slash == std::string::npos ? offer.name : offer.name.substr(slash + 1);
  m_part_name = part_suffix(m_leaf);
  m_journal_name = journal_suffix(m_leaf);
  m_small = chunk_count(offer.chunk_size, offer.size) <= 1;
  // Take the destination, then agree on the resume point. A journaled file's
  // lease is its journal (and its part, below); a small file's is its part,
  // which saves creating and removing a journal per file.
  m_events.offered(offer.name, offer.size);
  auto lock = lock_destination(m_dir_fd, m_small ? m_part_name : m_journal_name, &m_lease_created);
  if (!lock) return lock.error();
  (m_small ? m_part : m_lock) = std::move(*lock);
  auto resume = plan(offer);
  if (!resume) return resume.error();
  // (A file of one chunk is not worth an fstatfs: its one write says ENOSPC.)
  if (resume->status == frame::ResumeStatus::transfer && !m_small) SESSCP_TRY(check_free_space(*resume));
  if (resume->status == frame::ResumeStatus::complete) {
    m_report.resumed_at = offer.size;
    m_report.state = FileReport::State::already_complete;
  }
  return resume;
}

Result<frame::Resume> IncomingFile::plan(const frame::Offer& offer) {
  m_identity = {offer.name, offer.size, offer.mtime_ns, offer.chunk_size, offer.fingerprint};
  struct stat lease{}; // only its size is used: a lease this session created is empty
  if (!m_lease_created && fstat(m_small ? m_part.get() : m_lock.get(), &lease) != 0)
    return errno_error(ErrorKind::io, "stat lease", errno);
  bool have_journal = !m_small && lease.st_size > 0;
  auto final_matches = inspect_final(offer, lease);
  if (!final_matches) return final_matches.error();
  if (*final_matches && (m_small || !have_journal || faccessat(m_dir_fd, m_part_name.c_str(), F_OK, 0) != 0)) {
    // The lease (and any stale journal: no other session can hold it while
    // this one holds the part) is not needed any more.
    if (m_small) unlinkat(m_dir_fd, m_part_name.c_str(), 0);
    unlinkat(m_dir_fd, m_journal_name.c_str(), 0);
    return frame::Resume{frame::ResumeStatus::complete, frame::ResumeWhy::already_complete, 0, 0, 0, ""};
  }
  if (m_small) return plan_small(offer, lease);
  return plan_journaled(have_journal);
}

Result<bool> IncomingFile::inspect_final(const frame::Offer& offer, struct stat& lease) {
  // Already complete: the final file is the offered one (size and mtime, as
  // set by our own major sync) and no journal says otherwise.
  struct stat fst{};
  bool have_final = fstatat(m_dir_fd, m_leaf.c_str(), &fst, AT_SYMLINK_NOFOLLOW) == 0;
  if (have_final && !S_ISREG(fst.st_mode))
    return make_error(ErrorKind::cannot_create, offer.name + " exists and is not a regular file");
  m_had_final = have_final;
  // A power cut between publishing NAME and removing the part leaves the
  // part a second name of NAME's inode: not a partial file, and writing it
  // would change NAME (and any other link to it) in place. Drop that name.
  struct stat pst{};
  if (have_final && fstatat(m_dir_fd, m_part_name.c_str(), &pst, AT_SYMLINK_NOFOLLOW) == 0 &&
      pst.st_ino == fst.st_ino && pst.st_dev == fst.st_dev) {
    if (unlinkat(m_dir_fd, m_part_name.c_str(), 0) != 0)
      return errno_error(ErrorKind::io, "remove " + m_part_name, errno);
    if (m_small) {
      // The lease was that inode: take it again on a part of our own.
      auto lock = lock_destination(m_dir_fd, m_part_name);
      if (!lock) return lock.error();
      m_part = std::move(*lock);
      if (fstat(m_part.get(), &lease) != 0) return errno_error(ErrorKind::io, "stat lease", errno);
      m_lease_created = false;
    }
  }
  return have_final && static_cast<std::uint64_t>(fst.st_size) == offer.size && mtime_of(fst) == offer.mtime_ns;
}

Result<frame::Resume> IncomingFile::plan_small(const frame::Offer& offer, const struct stat& lease) {
  // One chunk or none: nothing worth journaling, so always from zero.
  // (Not O_TMPFILE: on ext4 its orphan-list updates made each file cost
  // ~1.5 ms more here.)
  bool part_existed = lease.st_size > 0;
  if (part_existed && ftruncate(m_part.get(), 0) != 0)
    return errno_error(ErrorKind::io, "truncate " + m_part_name, errno);
  m_identity.chunk_size = offer.chunk_size;
  return frame::Resume{frame::ResumeStatus::transfer,
                       part_existed ? frame::ResumeWhy::journal_unusable : frame::ResumeWhy::fresh,
                       offer.chunk_size, 0, 1, ""};
}

Result<frame::Resume> IncomingFile::plan_journaled(bool have_journal) {
  bool part_existed = faccessat(m_dir_fd, m_part_name.c_str(), F_OK, 0) == 0;
  // The part is leased too, so a small file's session (whose lease is the
  // part) and a journaled one never write one destination at once.
  auto part = lock_destination(m_dir_fd, m_part_name);
  if (!part) return part.error();
  m_part = std::move(*part);
  // Chunks go through the page cache unless O_DIRECT is asked for: with
  // writeback started per chunk and each synced range dropped from the cache
  // (Syncer), 2 GiB to this machine's disk took 1.3 s against O_DIRECT's
  // 2.0-2.5 s, whose one write at a time waits for the device
  // (docs/PERFORMANCE.md, "Receiver writes").
  if (direct_writes_requested()) m_direct = reopen_direct(m_part.get(), O_WRONLY);

  if (!have_journal)
    return start_fresh(part_existed ? frame::ResumeWhy::journal_unusable : frame::ResumeWhy::fresh,
                       part_existed ? "a partial file without a journal is not trusted; restarting from zero" : "");
  checkpoint::Replay replay;
  auto journal = checkpoint::Journal::open(path(m_journal_name), replay);
  if (!journal)
    return start_fresh(frame::ResumeWhy::journal_unusable,
                       "journal unusable (" + journal.error().message + "); restarting from zero");
  if (auto diff = checkpoint::identity_mismatch(replay.identity, m_identity); !diff.empty())
    return start_fresh(frame::ResumeWhy::source_changed,
                       "source changed since the partial transfer (" + diff + "); restarting from zero");
  return resume_from(replay, journal);
}

Result<frame::Resume> IncomingFile::start_fresh(frame::ResumeWhy why, const std::string& message) {
  auto journal = checkpoint::Journal::create(path(m_journal_name), m_identity);
  if (!journal) return journal.error();
  m_journal.emplace(std::move(*journal));
  if (ftruncate(m_part.get(), 0) != 0) return errno_error(ErrorKind::io, "truncate " + m_part_name, errno);
  return frame::Resume{frame::ResumeStatus::transfer, why, m_identity.chunk_size, 0, 1, message};
}

Result<frame::Resume> IncomingFile::resume_from(checkpoint::Replay& replay, Result<checkpoint::Journal>& journal) {
  m_identity.chunk_size = replay.identity.chunk_size;
  std::string note = "journal confirms " + std::to_string(replay.chunk_hashes.size()) + " chunks";
  if (!replay.tail_problem.empty()) note += "; ignored a damaged journal tail";
  std::uint64_t proven = replay.chunk_hashes.size();
  m_trust_earlier = !background_check() || proven == 0;
  if (!m_trust_earlier) {
    // Read back in the background while the rest arrives (start_reverifier):
    // the resume point stays where the journal says, the first new byte
    // leaves at once, and only what proves damaged is sent again.
    note += "; re-verifying them against the partial file while the rest arrives";
  } else if (proven > 0) {
    auto checked = verify_now(replay);
    if (!checked) return checked.error();
    proven = *checked;
  }
  if (proven < replay.chunk_hashes.size()) {
    note += "; " + std::to_string(replay.chunk_hashes.size() - proven) + " chunks failed re-verification";
    SESSCP_TRY(truncate_journal(replay, proven, journal));
  }
  m_journal.emplace(std::move(*journal));
  m_hashes = std::move(replay.chunk_hashes);
  return frame::Resume{frame::ResumeStatus::transfer, frame::ResumeWhy::journal, m_identity.chunk_size,
                       m_hashes.size(), replay.last_serial + 1, note};
}

Result<std::uint64_t> IncomingFile::verify_now(const checkpoint::Replay& replay) {
  // Before answering: the last 64 MiB only (--verify-resume tail: the
  // earlier chunks are trusted), or every chunk when the sender cannot
  // be asked for chunks below the resume point (an older sesscp).
  const auto& name = m_offer.name;
  m_events.phase(name, Events::Phase::verifying, "");
  auto progress = [&](std::uint64_t done, std::uint64_t total) { m_events.verify_progress(name, done, total); };
  if (m_opt.verify_resume == checkpoint::ResumeCheck::tail)
    return checkpoint::verify_tail(m_part.get(), m_identity.chunk_size, m_offer.size, replay.chunk_hashes,
                                   m_opt.verify_tail_bytes, [&](std::uint64_t done, std::uint64_t total) {
                                     m_report.reverified_bytes = done;
                                     progress(done, total);
                                   });
  auto damaged = checkpoint::verify_chunks(m_part.get(), m_identity.chunk_size, m_offer.size, replay.chunk_hashes,
                                           progress);
  if (!damaged) return damaged.error();
  m_report.reverified_bytes = replay.confirmed_bytes();
  m_report.damaged_chunks = damaged->size();
  return damaged->empty() ? replay.chunk_hashes.size() : damaged->front();
}

Status IncomingFile::truncate_journal(checkpoint::Replay& replay, std::uint64_t proven,
                                      Result<checkpoint::Journal>& journal) {
  replay.chunk_hashes.resize(proven);
  auto fresh = checkpoint::Journal::rewrite(path(m_journal_name), m_identity, replay.chunk_hashes);
  if (!fresh) return fresh.error();
  replay.last_serial = fresh->last_serial();
  journal = std::move(fresh);
  return {};
}

Status IncomingFile::check_free_space(const frame::Resume& resume) const {
  // Refuse up front rather than fail hours later: the bytes still to come
  // must fit (what the partial already holds is counted as allocated).
  struct statvfs vfs{};
  if (fstatvfs(m_dir_fd, &vfs) != 0) return {}; // cannot tell: let writes decide
  std::uint64_t have = std::min<std::uint64_t>(resume.next_chunk * resume.chunk_size, m_offer.size);
  std::uint64_t need = m_offer.size - have;
  std::uint64_t avail = static_cast<std::uint64_t>(vfs.f_bavail) * vfs.f_frsize;
  if (need > avail)
    return make_error(ErrorKind::no_space, "not enough space in " + m_dir_path + " for " + m_offer.name + " (" +
                                               std::to_string(need) + " bytes to come, " + std::to_string(avail) +
                                               " free)");
  return {};
}

void IncomingFile::begin(const frame::Resume& resume) {
  m_chunk_size = resume.chunk_size;
  m_chunks = chunk_count(m_chunk_size, m_offer.size);
  m_first = m_dispatched = m_contiguous = m_last_sync_end = resume.next_chunk;
  m_next_serial = resume.next_serial;
  m_last_serial = resume.next_serial - 1;
  m_report.resumed_at = std::min(m_first * m_chunk_size, m_offer.size);
  if (!resume.message.empty()) m_events.info(m_offer.name + ": " + resume.message);
  if (m_report.resumed_at > 0) m_events.resumed(m_offer.name, m_report.resumed_at, m_offer.size);
  // A small file is one write and a batch commit: no phases of its own.
  // A resumed file's earlier chunks are read back while it transfers.
  if (!m_small && !m_trust_earlier) m_events.phase(m_offer.name, Events::Phase::verifying, "in the background");
  if (!m_small) m_events.phase(m_offer.name, Events::Phase::transferring, "");
  m_start = Clock::now();
  if (!m_small) {
    start_pipeline();
    if (m_checksum) m_hashes.resize(m_chunks);
    else
      for (std::uint64_t i = 0; i < m_first; ++i) m_file_root.add(m_hashes[i]);
    m_earlier.assign(m_first, m_trust_earlier ? Earlier::good : Earlier::unchecked);
    m_earlier_good = m_trust_earlier ? m_first : 0;
    if (!m_trust_earlier) start_reverifier();
  }
}

void IncomingFile::save_progress() {
  // The summary line of an interrupted file shows how long it ran, too.
  m_report.seconds = std::chrono::duration<double>(Clock::now() - m_start).count();
  // Every chunk that arrived whole and verified is worth keeping: checkpoint
  // it now, so a killed sender re-sends at most the chunk it was cut in.
  if (!m_syncer) return;
  if (m_writer) m_writer->drain(); // chunks read before the break are written and recorded
  {
    std::lock_guard lock(m_mx);
    m_syncs.clear();
    if (m_contiguous > m_dispatched) m_syncs.push_back({m_last_serial + 1, m_contiguous});
    dispatch();
  }
  m_syncer->drain();
  if (auto err = m_syncer->error()) m_events.info(m_report.name + ": could not save progress: " + err->message);
}

Status IncomingFile::finish_file() {
  m_events.phase(m_offer.name, Events::Phase::finalising, "");
  auto session_root = m_session_root.digest();
  if (session_root != m_file_end->session_root)
    return make_error(ErrorKind::integrity, "digest over this session's chunk hashes differs from the sender's");
  {
    std::lock_guard lock(m_mx);
    if (!earlier_proven()) return make_error(ErrorKind::internal, "file end before every chunk was proven");
  }
  m_reverifier.reset(); // done: every earlier chunk is proven
  m_writer.reset();     // idle: every chunk is recorded and durable
  m_syncer.reset();
  // The file root: every entry was checked against the bytes in the file in
  // this run (read back and matched, or hashed from the buffer written).
  m_report.file_root = m_checksum ? hash_list_root(m_hashes) : m_file_root.digest();
  // Major sync point: exact size, metadata, fsync, atomic rename, directory
  // fsync, and only then drop the journal. A crash before the rename leaves
  // a resumable partial; after it, the final file and a stale journal that
  // the next offer recognises as complete.
  int fd = m_part.get();
  SESSCP_TRY(set_size(fd, m_offer.size, m_part_name));
  SESSCP_TRY(set_mode_and_mtime(fd, m_offer, m_umask, m_part_name));
  if (fsync(fd) != 0) return errno_error(ErrorKind::io, "fsync " + m_part_name, errno);
  // Clean now: drop what is left in the cache (the tail, repaired chunks), as
  // each sync point did for its chunks, so a large copy does not evict the
  // machine's working set.
  (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  SESSCP_TRY(publish());
  SESSCP_TRY(fsync_dir(m_dir_fd, m_dir_path));
  m_journal.reset();
  if (unlinkat(m_dir_fd, m_journal_name.c_str(), 0) != 0)
    return errno_error(ErrorKind::io, "remove " + m_journal_name, errno);
  SESSCP_TRY(fsync_dir(m_dir_fd, m_dir_path));
  return send_file_done();
}

Status IncomingFile::publish() {
  // Publish the inode we wrote, not whatever the part's path names now (a
  // local user could have swapped it for a symlink): link it by descriptor.
  // NAME absent at the offer (the common case): link it as NAME directly; a
  // link never replaces anything, so a NAME created meanwhile (EEXIST) is
  // replaced below like an old one.
  std::string self = "/proc/self/fd/" + std::to_string(m_part.get());
  auto drop_part = [&] {
    if (names_file(m_dir_fd, m_part_name, m_part.get())) unlinkat(m_dir_fd, m_part_name.c_str(), 0);
    else m_events.info(m_part_name + " was replaced during the transfer; published the data received, left it alone");
  };
  if (!m_had_final) {
    if (linkat(AT_FDCWD, self.c_str(), m_dir_fd, m_leaf.c_str(), AT_SYMLINK_FOLLOW) == 0) {
      drop_part();
      return {};
    }
    // Only "NAME appeared" and "no /proc or no hard links here" fall back.
    int err = errno;
    if (err != EEXIST && err != ENOENT && err != EPERM && err != EOPNOTSUPP && err != ENOSYS)
      return errno_error(ErrorKind::io, "link " + m_part_name + " as " + m_offer.name, err);
  }
  // NAME exists: link under a temporary name, then rename that over NAME
  // atomically.
  std::string tmp = m_leaf + ".sesscp.publish";
  unlinkat(m_dir_fd, tmp.c_str(), 0); // a leftover from a crash at this very step
  if (linkat(AT_FDCWD, self.c_str(), m_dir_fd, tmp.c_str(), AT_SYMLINK_FOLLOW) == 0) {
    if (renameat(m_dir_fd, tmp.c_str(), m_dir_fd, m_leaf.c_str()) != 0)
      return errno_error(ErrorKind::io, "rename " + tmp + " to " + m_offer.name, errno);
    // After a power cut between this rename and the part's unlink, NAME and
    // the part are one inode; renaming a link over another link of the same
    // inode does nothing and succeeds (rename(2)), which would leave tmp.
    unlinkat(m_dir_fd, tmp.c_str(), 0);
    drop_part();
    return {};
  }
  // No /proc: rename by path, after checking the path is still our file.
  if (!names_file(m_dir_fd, m_part_name, m_part.get()))
    return make_error(ErrorKind::cannot_create, m_part_name + " was replaced during the transfer; not publishing it");
  if (renameat(m_dir_fd, m_part_name.c_str(), m_dir_fd, m_leaf.c_str()) != 0)
    return errno_error(ErrorKind::io, "rename " + m_part_name + " to " + m_offer.name, errno);
  return {};
}

Status IncomingFile::prepare_small() {
  for (const auto& [index, hash] : m_verified) {
    m_file_root.add(hash);
    m_session_root.add(hash);
  }
  m_verified.clear();
  if (m_session_root.digest() != m_file_end->session_root)
    return make_error(ErrorKind::integrity, m_offer.name + ": digest over the chunk hashes differs from the sender's");
  // Its one chunk (the whole file) is written at 0 to an empty part, with
  // the metadata, by the small-file writer (on_data); an empty file has none.
  if (m_write_ticket != 0) return {};
  return set_mode_and_mtime(m_part.get(), m_offer, m_umask, m_part_name);
}

Status IncomingFile::publish_small() {
  SESSCP_TRY(publish());
  // A journal left by an earlier, journaled attempt of this name (no other
  // session can hold it while this one holds the part).
  unlinkat(m_dir_fd, m_journal_name.c_str(), 0);
  return {};
}

Status IncomingFile::send_file_done() {
  if (m_small) m_report.file_root = m_file_root.digest();
  m_report.state = FileReport::State::complete;
  m_report.seconds = std::chrono::duration<double>(Clock::now() - m_start).count();
  // Queued: a batch's FILE_DONEs leave together (Conn::send_later).
  return m_conn.send_later(frame::encode(frame::FileDone{m_offer.size, m_report.file_root}));
}

} // namespace sesscp::recv
