#include "core/receiver.h"

#include "checkpoint/journal.h"
#include "core/conn.h"
#include "core/frame.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace sesscp {

namespace {

using Clock = std::chrono::steady_clock;
using checkpoint::chunk_count;
using checkpoint::chunk_length;

// Bound on chunks verified but not yet journaled: the sender's window keeps
// far below this; a peer that goes past it is broken or hostile.
constexpr std::size_t k_max_pending_chunks = checkpoint::k_max_record_hashes;
// A chunk that arrives corrupt this many times is not a transient fault.
constexpr int k_max_resends_per_chunk = 3;

std::string part_suffix(const std::string& name) { return name + ".sesscp.part"; }
std::string journal_suffix(const std::string& name) { return name + ".sesscp.journal"; }

Status fsync_dir(int dir_fd, const std::string& dir) {
  if (fsync(dir_fd) != 0) return errno_error(ErrorKind::io, "fsync directory " + dir, errno);
  return {};
}

Status write_all_at(int fd, std::span<const std::uint8_t> data, std::uint64_t offset, const std::string& what) {
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = pwrite(fd, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_error(ErrorKind::io, "write " + what, errno);
    }
    done += static_cast<std::size_t>(n);
  }
  return {};
}

// A batch of verified chunks to make durable and journal as one sync point.
struct Job {
  std::uint64_t serial = 0;
  std::uint64_t first_chunk = 0;
  std::vector<Hash128> hashes;
};

// Makes sync points durable off the network thread, in order: fdatasync the
// data, then append and sync the journal record, then report the serial as
// confirmed. Jobs that queue up while a sync runs are merged into one record,
// so a slow disk costs fewer syncs rather than more latency.
class Syncer {
public:
  Syncer(int part_fd, checkpoint::Journal& journal, std::string part_path)
      : m_part_fd(part_fd), m_journal(journal), m_part_path(std::move(part_path)),
        m_wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)), m_thread([this] { loop(); }) {}
  ~Syncer() {
    {
      std::lock_guard lock(m_mutex);
      m_quit = true;
    }
    m_cv.notify_all();
    m_thread.join();
  }

  void submit(Job job) {
    {
      std::lock_guard lock(m_mutex);
      m_jobs.push_back(std::move(job));
    }
    m_cv.notify_all();
  }

  // Wait until every submitted job is durable (or failed).
  void drain() {
    std::unique_lock lock(m_mutex);
    m_cv.wait(lock, [&] { return (m_jobs.empty() && !m_busy) || m_error; });
  }

  bool idle() {
    std::lock_guard lock(m_mutex);
    return m_jobs.empty() && !m_busy;
  }

  // The newest confirmed (serial, end chunk) not yet taken, if any.
  std::optional<std::pair<std::uint64_t, std::uint64_t>> take_confirmed() {
    std::uint64_t v;
    (void)!read(m_wake.get(), &v, sizeof v);
    std::lock_guard lock(m_mutex);
    return std::exchange(m_confirmed, std::nullopt);
  }

  // True once after a sync point finished or failed. The network thread asks
  // on every frame, so this costs neither a lock nor a syscall.
  bool take_news() { return m_news.exchange(false, std::memory_order_acquire); }

  std::optional<Error> error() {
    std::lock_guard lock(m_mutex);
    return m_error;
  }

  int wake_fd() const { return m_wake.get(); }

private:
  void loop() {
    std::unique_lock lock(m_mutex);
    for (;;) {
      m_cv.wait(lock, [&] { return m_quit || !m_jobs.empty(); });
      if (m_jobs.empty() || m_error) {
        if (m_quit) return;
        m_jobs.clear();
        continue;
      }
      Job merged = std::move(m_jobs.front());
      m_jobs.pop_front();
      while (!m_jobs.empty() &&
             merged.hashes.size() + m_jobs.front().hashes.size() <= checkpoint::k_max_record_hashes) {
        auto& next = m_jobs.front();
        merged.hashes.insert(merged.hashes.end(), next.hashes.begin(), next.hashes.end());
        merged.serial = next.serial;
        m_jobs.pop_front();
      }
      m_busy = true;
      lock.unlock();
      auto status = make_durable(merged);
      lock.lock();
      m_busy = false;
      if (!status) m_error = status.error();
      else m_confirmed = {merged.serial, merged.first_chunk + merged.hashes.size()};
      m_news.store(true, std::memory_order_release);
      std::uint64_t one = 1;
      (void)!write(m_wake.get(), &one, sizeof one);
      m_cv.notify_all();
    }
  }

  Status make_durable(const Job& job) {
    // fdatasync before the journal append: a record must never point past
    // durable data, or a power cut could leave the journal vouching for
    // bytes the disk never got.
    if (fdatasync(m_part_fd) != 0) return errno_error(ErrorKind::io, "fdatasync " + m_part_path, errno);
    return m_journal.append({job.serial, job.first_chunk, job.hashes});
  }

  int m_part_fd;
  checkpoint::Journal& m_journal;
  std::string m_part_path;
  Fd m_wake;
  std::mutex m_mutex;
  std::condition_variable m_cv;
  std::deque<Job> m_jobs;
  bool m_busy = false;
  bool m_quit = false;
  std::optional<Error> m_error;
  std::optional<std::pair<std::uint64_t, std::uint64_t>> m_confirmed;
  std::atomic<bool> m_news{false};
  std::thread m_thread; // last: starts after every member above exists
};

// Exclusive right to write one destination name, held for the whole file.
// It is an flock on the journal path; the inode check closes the race with a
// session that unlinks the journal at completion.
// Open `name` inside the directory and nowhere else: openat2 with
// RESOLVE_BENEATH and no symlinks where the kernel has it, O_NOFOLLOW on a
// single checked path component otherwise.
int open_beneath(int dir_fd, const std::string& name, int flags, mode_t mode) {
  open_how how{};
  how.flags = static_cast<std::uint64_t>(flags | O_NOFOLLOW | O_CLOEXEC);
  how.mode = (flags & O_CREAT) ? mode : 0;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  long fd = syscall(SYS_openat2, dir_fd, name.c_str(), &how, sizeof how);
  if (fd >= 0 || errno != ENOSYS) return static_cast<int>(fd);
  return openat(dir_fd, name.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode);
}

// Refuse a file we did not create: a regular file owned by this user only.
Status check_own_file(int fd, const std::string& name) {
  struct stat st{};
  if (fstat(fd, &st) != 0) return errno_error(ErrorKind::io, "stat " + name, errno);
  if (!S_ISREG(st.st_mode)) return make_error(ErrorKind::cannot_create, name + " is not a regular file");
  if (st.st_uid != geteuid())
    return make_error(ErrorKind::cannot_create, name + " is owned by uid " + std::to_string(st.st_uid) +
                                                    ", not by this receiver (uid " + std::to_string(geteuid()) + ")");
  return {};
}

Result<Fd> lock_destination(int dir_fd, const std::string& journal_name) {
  for (int attempt = 0; attempt < 5; ++attempt) {
    Fd fd(open_beneath(dir_fd, journal_name, O_RDWR | O_CREAT, 0600));
    if (!fd) return errno_error(ErrorKind::cannot_create, "cannot create " + journal_name, errno);
    SESSCP_TRY(check_own_file(fd.get(), journal_name));
    if (flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK)
        return make_error(ErrorKind::busy, "destination is being written by another session");
      return errno_error(ErrorKind::io, "flock " + journal_name, errno);
    }
    struct stat held{}, now{};
    if (fstat(fd.get(), &held) == 0 && fstatat(dir_fd, journal_name.c_str(), &now, AT_SYMLINK_NOFOLLOW) == 0 &&
        held.st_ino == now.st_ino && held.st_dev == now.st_dev)
      return fd;
  }
  return make_error(ErrorKind::busy, "destination is being written by another session");
}

std::int64_t mtime_of(const struct stat& st) {
  return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

// The receiving half of one file (an activity): resume planning, the data
// path, minor sync points, and the major sync point.
class IncomingFile {
public:
  IncomingFile(int dir_fd, const ReceiveOptions& opt, unsigned umask, Events& events, Conn& conn,
               FileReport& report)
      : m_dir_fd(dir_fd), m_opt(opt), m_umask(umask), m_events(events), m_conn(conn), m_report(report) {}

  // Handle an OFFER through FILE_DONE (or until the session breaks).
  Status run(const frame::Offer& offer);

private:
  Result<frame::Resume> plan(const frame::Offer& offer);
  Status start_fresh(frame::ResumeWhy why, const std::string& message, frame::Resume& resume);
  Status receive();
  Status on_data(const frame::Header& header);
  Status on_sync(std::span<const std::uint8_t> payload);
  Status on_file_end(std::span<const std::uint8_t> payload);
  void dispatch();
  Status flush_confirmed();
  Status finish_file();
  Status publish();
  bool part_path_is_ours() const;
  void save_progress();
  Status check_free_space(const frame::Resume& resume) const;
  std::string path(const std::string& leaf) const { return m_opt.dir + "/" + leaf; }

  int m_dir_fd;
  const ReceiveOptions& m_opt;
  unsigned m_umask;
  Events& m_events;
  Conn& m_conn;
  FileReport& m_report;

  frame::Offer m_offer;
  std::string m_part_name, m_journal_name;
  Fd m_lock;
  Fd m_part;
  std::optional<checkpoint::Journal> m_journal;
  std::optional<Syncer> m_syncer;
  checkpoint::Identity m_identity;
  std::uint32_t m_chunk_size = 0;
  std::uint64_t m_chunks = 0;

  std::uint64_t m_first = 0;           // first chunk of this session
  std::uint64_t m_dispatched = 0;      // chunks below are handed to the syncer (or journaled before)
  std::uint64_t m_contiguous = 0;      // chunks below are verified (or dispatched)
  std::uint64_t m_last_sync_end = 0;   // end chunk of the last SYNC received
  std::uint64_t m_next_serial = 1;     // serial the next SYNC must carry
  std::uint64_t m_last_serial = 0;     // last serial handed to the syncer
  std::map<std::uint64_t, Hash128> m_verified; // verified, not yet dispatched
  std::deque<frame::Sync> m_syncs;     // SYNCs waiting for their chunks
  std::map<std::uint64_t, int> m_resends;
  std::optional<frame::FileEnd> m_file_end;
  RootBuilder m_file_root;
  RootBuilder m_session_root;
  std::vector<std::uint8_t> m_buf;
  bool m_done = false;
};

Status IncomingFile::start_fresh(frame::ResumeWhy why, const std::string& message, frame::Resume& resume) {
  auto journal = checkpoint::Journal::create(path(m_journal_name), m_identity);
  if (!journal) return journal.error();
  m_journal.emplace(std::move(*journal));
  if (ftruncate(m_part.get(), 0) != 0) return errno_error(ErrorKind::io, "truncate " + m_part_name, errno);
  resume = {frame::ResumeStatus::transfer, why, m_identity.chunk_size, 0, 1, message};
  return {};
}

Result<frame::Resume> IncomingFile::plan(const frame::Offer& offer) {
  m_identity = {offer.name, offer.size, offer.mtime_ns, offer.chunk_size, offer.fingerprint};
  frame::Resume resume;
  struct stat jst{};
  if (fstat(m_lock.get(), &jst) != 0) return errno_error(ErrorKind::io, "stat " + m_journal_name, errno);
  bool have_journal = jst.st_size > 0;

  // Already complete: the final file is the offered one (size and mtime, as
  // set by our own major sync) and no journal says otherwise.
  struct stat fst{};
  bool have_final = fstatat(m_dir_fd, offer.name.c_str(), &fst, AT_SYMLINK_NOFOLLOW) == 0;
  if (have_final && !S_ISREG(fst.st_mode))
    return make_error(ErrorKind::cannot_create, offer.name + " exists and is not a regular file");
  bool final_matches = have_final && static_cast<std::uint64_t>(fst.st_size) == offer.size &&
                       mtime_of(fst) == offer.mtime_ns;
  if (final_matches && (!have_journal || faccessat(m_dir_fd, m_part_name.c_str(), F_OK, 0) != 0)) {
    unlinkat(m_dir_fd, m_journal_name.c_str(), 0);
    return frame::Resume{frame::ResumeStatus::complete, frame::ResumeWhy::already_complete, 0, 0, 0, ""};
  }

  bool part_existed = faccessat(m_dir_fd, m_part_name.c_str(), F_OK, 0) == 0;
  m_part.reset(open_beneath(m_dir_fd, m_part_name, O_RDWR | O_CREAT, 0600));
  if (!m_part) return errno_error(ErrorKind::cannot_create, "cannot create " + m_part_name, errno);
  SESSCP_TRY(check_own_file(m_part.get(), m_part_name));

  if (!have_journal) {
    SESSCP_TRY(start_fresh(part_existed ? frame::ResumeWhy::journal_unusable : frame::ResumeWhy::fresh,
                           part_existed ? "a partial file without a journal is not trusted; restarting from zero" : "",
                           resume));
    return resume;
  }
  checkpoint::Replay replay;
  auto journal = checkpoint::Journal::open(path(m_journal_name), replay);
  if (!journal) {
    SESSCP_TRY(start_fresh(frame::ResumeWhy::journal_unusable,
                           "journal unusable (" + journal.error().message + "); restarting from zero", resume));
    return resume;
  }
  if (auto diff = checkpoint::identity_mismatch(replay.identity, m_identity); !diff.empty()) {
    SESSCP_TRY(start_fresh(frame::ResumeWhy::source_changed,
                           "source changed since the partial transfer (" + diff + "); restarting from zero", resume));
    return resume;
  }
  // The journal proves everything but what a lying disk might have lost:
  // re-read only the last window of confirmed chunks, never the whole file.
  m_identity.chunk_size = replay.identity.chunk_size;
  m_events.phase(offer.name, Events::Phase::verifying, "");
  auto proven = checkpoint::verify_tail(m_part.get(), m_identity.chunk_size, offer.size, replay.chunk_hashes,
                                        m_opt.verify_tail_bytes, [&](std::uint64_t done, std::uint64_t total) {
                                          m_events.verify_progress(offer.name, done, total);
                                        });
  if (!proven) return proven.error();
  std::string note = "journal confirms " + std::to_string(replay.chunk_hashes.size()) + " chunks";
  if (!replay.tail_problem.empty()) note += "; ignored a damaged journal tail";
  if (*proven < replay.chunk_hashes.size()) {
    // Rewrite the journal so it claims only what was proven.
    note += "; " + std::to_string(replay.chunk_hashes.size() - *proven) + " chunks failed re-verification";
    replay.chunk_hashes.resize(*proven);
    auto fresh = checkpoint::Journal::create(path(m_journal_name), m_identity);
    if (!fresh) return fresh.error();
    std::uint64_t serial = 0;
    for (std::uint64_t first = 0; first < *proven; first += checkpoint::k_max_record_hashes) {
      auto end = std::min<std::uint64_t>(*proven, first + checkpoint::k_max_record_hashes);
      SESSCP_TRY(fresh->append({++serial, first, {replay.chunk_hashes.begin() + static_cast<std::ptrdiff_t>(first),
                                                  replay.chunk_hashes.begin() + static_cast<std::ptrdiff_t>(end)}}));
    }
    replay.last_serial = serial;
    journal = std::move(fresh);
  }
  m_journal.emplace(std::move(*journal));
  for (const auto& h : replay.chunk_hashes) m_file_root.add(h);
  resume = {frame::ResumeStatus::transfer, frame::ResumeWhy::journal, m_identity.chunk_size,
            replay.chunk_hashes.size(), replay.last_serial + 1, note};
  return resume;
}

Status IncomingFile::run(const frame::Offer& offer) {
  m_offer = offer;
  m_report.name = offer.name;
  m_report.size = offer.size;
  m_part_name = part_suffix(offer.name);
  m_journal_name = journal_suffix(offer.name);
  // Take the destination, then agree on the resume point.
  m_events.offered(offer.name, offer.size);
  auto lock = lock_destination(m_dir_fd, m_journal_name);
  if (!lock) return lock.error();
  m_lock = std::move(*lock);
  auto resume = plan(offer);
  if (!resume) return resume.error();
  if (resume->status == frame::ResumeStatus::transfer) SESSCP_TRY(check_free_space(*resume));
  SESSCP_TRY(m_conn.send(frame::encode(*resume)));
  if (resume->status == frame::ResumeStatus::complete) {
    m_report.resumed_at = offer.size;
    m_report.state = FileReport::State::already_complete;
    return {};
  }
  m_chunk_size = resume->chunk_size;
  m_chunks = chunk_count(m_chunk_size, offer.size);
  m_first = m_dispatched = m_contiguous = m_last_sync_end = resume->next_chunk;
  m_next_serial = resume->next_serial;
  m_last_serial = resume->next_serial - 1;
  m_report.resumed_at = std::min(m_first * m_chunk_size, offer.size);
  if (!resume->message.empty()) m_events.info(offer.name + ": " + resume->message);
  if (m_report.resumed_at > 0) m_events.resumed(offer.name, m_report.resumed_at, offer.size);
  m_events.phase(offer.name, Events::Phase::transferring, "");
  m_buf.resize(m_chunk_size);
  m_syncer.emplace(m_part.get(), *m_journal, m_part_name);
  // Receive data and sync points until the major sync point.
  auto status = receive();
  if (!status) save_progress();
  return status;
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
    return make_error(ErrorKind::no_space, "not enough space in " + m_opt.dir + " for " + m_offer.name + " (" +
                                               std::to_string(need) + " bytes to come, " + std::to_string(avail) +
                                               " free)");
  return {};
}

void IncomingFile::save_progress() {
  // Every chunk that arrived whole and verified is worth keeping: checkpoint
  // it now, so a killed sender re-sends at most the chunk it was cut in.
  if (!m_syncer) return;
  m_syncs.clear();
  if (m_contiguous > m_dispatched) m_syncs.push_back({m_last_serial + 1, m_contiguous});
  dispatch();
  m_syncer->drain();
  if (auto err = m_syncer->error()) m_events.info(m_report.name + ": could not save progress: " + err->message);
}

void IncomingFile::dispatch() {
  while (!m_syncs.empty() && m_syncs.front().end_chunk <= m_contiguous) {
    auto sync = m_syncs.front();
    m_syncs.pop_front();
    Job job{sync.serial, m_dispatched, {}};
    job.hashes.reserve(sync.end_chunk - m_dispatched);
    for (auto it = m_verified.begin(); it != m_verified.end() && it->first < sync.end_chunk;) {
      job.hashes.push_back(it->second);
      m_file_root.add(it->second);
      m_session_root.add(it->second);
      it = m_verified.erase(it);
    }
    m_dispatched = sync.end_chunk;
    m_last_serial = sync.serial;
    m_syncer->submit(std::move(job));
  }
}

Status IncomingFile::flush_confirmed() {
  if (!m_syncer->take_news()) return {};
  if (auto err = m_syncer->error()) return *err;
  if (auto confirmed = m_syncer->take_confirmed()) {
    SESSCP_TRY(m_conn.send(frame::encode(frame::Checkpoint{confirmed->first, confirmed->second})));
    m_events.progress(m_report.name, std::min(confirmed->second * m_chunk_size, m_offer.size), m_offer.size);
  }
  return {};
}

Status IncomingFile::on_data(const frame::Header& header) {
  std::uint8_t raw[frame::k_data_prefix];
  if (header.length < frame::k_data_prefix) return make_error(ErrorKind::protocol, "DATA shorter than its prefix");
  SESSCP_TRY(m_conn.read_exact(raw));
  auto prefix = frame::decode_data_prefix(raw);
  if (!prefix) return prefix.error();
  auto index = prefix->chunk;
  if (index < m_dispatched || index >= m_chunks || m_verified.count(index))
    return make_error(ErrorKind::protocol, "DATA for chunk " + std::to_string(index) + " that is not outstanding");
  if (m_verified.size() >= k_max_pending_chunks)
    return make_error(ErrorKind::protocol, "sender exceeded the unconfirmed-chunk limit");
  auto len = chunk_length(index, m_chunk_size, m_offer.size);
  if (header.length != frame::k_data_prefix + len)
    return make_error(ErrorKind::protocol, "DATA length does not match chunk " + std::to_string(index));
  std::span<std::uint8_t> chunk(m_buf.data(), len);
  SESSCP_TRY(m_conn.read_exact(chunk));
  m_report.bytes += len;
  if (xxh3_128(chunk) != prefix->hash) {
    // Never journal a chunk whose bytes do not match the sender's hash.
    if (++m_resends[index] > k_max_resends_per_chunk)
      return make_error(ErrorKind::integrity, "chunk " + std::to_string(index) + " arrived corrupt " +
                                                  std::to_string(k_max_resends_per_chunk + 1) + " times");
    m_events.debug(m_report.name + ": chunk " + std::to_string(index) + " failed its hash; asking again");
    return m_conn.send(frame::encode(frame::Resend{index}));
  }
  SESSCP_TRY(write_all_at(m_part.get(), chunk, index * m_chunk_size, m_part_name));
  // Start writeback now rather than at the next sync point, so the disk works
  // while data keeps arriving and fdatasync finds little left to do.
  sync_file_range(m_part.get(), static_cast<off_t>(index * m_chunk_size), static_cast<off_t>(len),
                  SYNC_FILE_RANGE_WRITE);
  m_verified.emplace(index, prefix->hash);
  while (m_contiguous < m_chunks && m_verified.count(m_contiguous)) ++m_contiguous;
  dispatch();
  return {};
}

Status IncomingFile::on_sync(std::span<const std::uint8_t> payload) {
  auto sync = frame::decode_sync(payload);
  if (!sync) return sync.error();
  if (sync->serial != m_next_serial)
    return make_error(ErrorKind::protocol, "SYNC serial " + std::to_string(sync->serial) + ", expected " +
                                               std::to_string(m_next_serial));
  if (sync->end_chunk <= m_last_sync_end || sync->end_chunk > m_chunks)
    return make_error(ErrorKind::protocol, "SYNC end chunk out of order");
  if (sync->end_chunk - m_last_sync_end > checkpoint::k_max_record_hashes)
    return make_error(ErrorKind::protocol, "SYNC spans more chunks than one journal record holds");
  ++m_next_serial;
  m_last_sync_end = sync->end_chunk;
  m_syncs.push_back(*sync);
  dispatch();
  return {};
}

Status IncomingFile::on_file_end(std::span<const std::uint8_t> payload) {
  auto end = frame::decode_file_end(payload);
  if (!end) return end.error();
  if (end->chunk_count != m_chunks || end->first_chunk != m_first || m_last_sync_end != m_chunks)
    return make_error(ErrorKind::protocol, "FILE_END does not match the offer and sync points");
  m_file_end = *end;
  return {};
}

Status IncomingFile::receive() {
  std::uint32_t max_data = frame::k_data_prefix + m_chunk_size;
  while (!m_done) {
    SESSCP_TRY(flush_confirmed());
    // Major sync point once every chunk is durable and journaled.
    if (m_file_end && m_dispatched == m_chunks && m_syncer->idle()) {
      SESSCP_TRY(flush_confirmed());
      return finish_file();
    }
    auto ready = m_conn.wait_readable(m_syncer->wake_fd(), m_conn.timeout_ms());
    if (!ready) return ready.error();
    if (!*ready) continue;
    auto header = m_conn.read_header(max_data);
    if (!header) return header.error();
    if (header->type == frame::Type::data) {
      SESSCP_TRY(on_data(*header));
      continue;
    }
    auto payload = m_conn.read_control_payload(*header);
    if (!payload) return payload.error();
    switch (header->type) {
    case frame::Type::sync: SESSCP_TRY(on_sync(*payload)); break;
    case frame::Type::file_end: SESSCP_TRY(on_file_end(*payload)); break;
    case frame::Type::abort: {
      auto abort = frame::decode_abort(*payload);
      if (!abort) return abort.error();
      return make_error(frame::error_kind_for(abort->reason),
                        std::string("sender aborted: ") + frame::to_string(abort->reason) +
                            (abort->message.empty() ? "" : ": " + abort->message));
    }
    default:
      return make_error(ErrorKind::protocol, std::string(frame::to_string(header->type)) +
                                                 " while receiving a file");
    }
  }
  return {};
}

bool IncomingFile::part_path_is_ours() const {
  struct stat ours{}, there{};
  return fstat(m_part.get(), &ours) == 0 &&
         fstatat(m_dir_fd, m_part_name.c_str(), &there, AT_SYMLINK_NOFOLLOW) == 0 && ours.st_ino == there.st_ino &&
         ours.st_dev == there.st_dev;
}

Status IncomingFile::publish() {
  // Publish the inode we wrote, not whatever the part's path names now (a
  // local user could have swapped it for a symlink): link it by descriptor
  // under a temporary name, then rename that over NAME atomically.
  std::string tmp = m_offer.name + ".sesscp.publish";
  unlinkat(m_dir_fd, tmp.c_str(), 0); // a leftover from a crash at this very step
  std::string self = "/proc/self/fd/" + std::to_string(m_part.get());
  if (linkat(AT_FDCWD, self.c_str(), m_dir_fd, tmp.c_str(), AT_SYMLINK_FOLLOW) == 0) {
    if (renameat(m_dir_fd, tmp.c_str(), m_dir_fd, m_offer.name.c_str()) != 0)
      return errno_error(ErrorKind::io, "rename " + tmp + " to " + m_offer.name, errno);
    if (part_path_is_ours()) unlinkat(m_dir_fd, m_part_name.c_str(), 0);
    else m_events.info(m_part_name + " was replaced during the transfer; published the data received, left it alone");
    return {};
  }
  // No /proc: rename by path, after checking the path is still our file.
  if (!part_path_is_ours())
    return make_error(ErrorKind::cannot_create, m_part_name + " was replaced during the transfer; not publishing it");
  if (renameat(m_dir_fd, m_part_name.c_str(), m_dir_fd, m_offer.name.c_str()) != 0)
    return errno_error(ErrorKind::io, "rename " + m_part_name + " to " + m_offer.name, errno);
  return {};
}

Status IncomingFile::finish_file() {
  m_events.phase(m_offer.name, Events::Phase::finalising, "");
  auto session_root = m_session_root.digest();
  if (session_root != m_file_end->session_root)
    return make_error(ErrorKind::integrity, "digest over this session's chunk hashes differs from the sender's");
  m_syncer.reset();
  // Major sync point: exact size, metadata, fsync, atomic rename, directory
  // fsync, and only then drop the journal. A crash before the rename leaves
  // a resumable partial; after it, the final file and a stale journal that
  // the next offer recognises as complete.
  int fd = m_part.get();
  if (ftruncate(fd, static_cast<off_t>(m_offer.size)) != 0)
    return errno_error(ErrorKind::io, "truncate " + m_part_name, errno);
  fchmod(fd, m_offer.mode_bits & 0777 & ~m_umask);
  timespec times[2] = {{0, UTIME_OMIT},
                       {static_cast<time_t>(m_offer.mtime_ns / 1'000'000'000),
                        static_cast<long>(m_offer.mtime_ns % 1'000'000'000)}};
  if (m_offer.mtime_ns < 0) times[1] = {0, UTIME_OMIT};
  if (futimens(fd, times) != 0) return errno_error(ErrorKind::io, "set mtime of " + m_part_name, errno);
  if (fsync(fd) != 0) return errno_error(ErrorKind::io, "fsync " + m_part_name, errno);
  SESSCP_TRY(publish());
  SESSCP_TRY(fsync_dir(m_dir_fd, m_opt.dir));
  m_journal.reset();
  if (unlinkat(m_dir_fd, m_journal_name.c_str(), 0) != 0)
    return errno_error(ErrorKind::io, "remove " + m_journal_name, errno);
  SESSCP_TRY(fsync_dir(m_dir_fd, m_opt.dir));
  m_report.file_root = m_file_root.digest();
  m_report.state = FileReport::State::complete;
  SESSCP_TRY(m_conn.send(frame::encode(frame::FileDone{m_offer.size, m_report.file_root})));
  m_done = true;
  return {};
}

// One connection: establishment, files, release.
class Session {
public:
  Session(int dir_fd, const ReceiveOptions& opt, unsigned umask, Events& events, const tls::Context* tls,
          Fd socket)
      : m_dir_fd(dir_fd), m_opt(opt), m_umask(umask), m_events(events), m_tls(tls),
        m_peer(net::peer_name(socket.get())), m_conn(std::move(socket), opt.stop, opt.handshake_timeout_ms) {}

  Status run();
  // Refuse before establishment (e.g. too many sessions).
  void refuse(frame::Reason reason, const std::string& message) {
    (void)m_conn.send(frame::encode(frame::Refuse{reason, frame::k_protocol_version, message}));
  }

private:
  Status authenticate();
  Status establish();
  Status serve_files();
  Status receive_file(std::span<const std::uint8_t> payload);

  int m_dir_fd;
  const ReceiveOptions& m_opt;
  unsigned m_umask;
  Events& m_events;
  const tls::Context* m_tls;
  std::string m_peer;
  Conn m_conn;
};

Status Session::authenticate() {
  // Look at the first bytes without consuming them: a plaintext HELLO or a
  // TLS ClientHello on the wrong kind of receiver gets a precise refusal.
  auto ready = m_conn.wait_readable(-1, m_opt.handshake_timeout_ms);
  if (!ready) return ready.error();
  std::uint8_t first[4] = {};
  ssize_t n = recv(m_conn.fd(), first, sizeof first, MSG_PEEK | MSG_DONTWAIT);
  bool plaintext_hello = n >= 4 && first[0] == static_cast<std::uint8_t>(frame::Type::hello) && first[1] == 0 &&
                         first[2] == 0 && first[3] == 0;
  bool tls_hello = n >= 1 && first[0] == 0x16;
  if (!m_tls) {
    if (tls_hello)
      return make_error(ErrorKind::auth, "authentication failed: the sender speaks TLS but this receiver runs with --insecure");
    return {};
  }
  if (plaintext_hello) {
    refuse(frame::Reason::auth, "this receiver requires TLS; the sender must use --key-file or --cert, not --insecure");
    return make_error(ErrorKind::auth, "authentication failed: the sender sent a plaintext HELLO (--insecure); this receiver requires TLS");
  }
  auto ssl = m_tls->wrap(m_conn.fd(), "");
  if (!ssl) return ssl.error();
  SESSCP_TRY(m_conn.start_tls(std::move(*ssl), true));
  return m_tls->check_peer(m_conn.ssl());
}

Status Session::establish() {
  auto header = m_conn.read_header(0);
  if (!header) return header.error();
  if (header->type != frame::Type::hello && header->type != frame::Type::abort)
    return make_error(ErrorKind::protocol, std::string("expected HELLO, got ") + frame::to_string(header->type));
  auto payload = m_conn.read_control_payload(*header);
  if (!payload) return payload.error();
  if (header->type == frame::Type::abort) {
    // The sender gave up before HELLO, e.g. it does not trust our certificate.
    auto abort = frame::decode_abort(*payload);
    if (!abort) return abort.error();
    return make_error(frame::error_kind_for(abort->reason), std::string("sender aborted: ") +
                                                                frame::to_string(abort->reason) + ": " + abort->message);
  }
  auto hello = frame::decode_hello(*payload);
  if (!hello) return hello.error();
  if (hello->version != frame::k_protocol_version) {
    std::string msg = "sender speaks protocol version " + std::to_string(hello->version) + ", this sesscp speaks " +
                      std::to_string(frame::k_protocol_version);
    refuse(frame::Reason::version, msg);
    return make_error(ErrorKind::version, msg + "; install the same sesscp version on both hosts");
  }
  frame::Accept accept;
  accept.features = hello->features & frame::feature::k_all;
  accept.identity = "sesscp/" SESSCP_VERSION;
  SESSCP_TRY(m_conn.send(frame::encode(accept)));
  m_events.debug(m_peer + ": session established with " + hello->identity);
  m_conn.set_timeout(m_opt.timeout_ms);
  return {};
}

Status Session::receive_file(std::span<const std::uint8_t> payload) {
  auto offer = frame::decode_offer(payload);
  if (!offer) return offer.error();
  if (auto why = frame::check_name(offer->name); !why.empty()) {
    m_conn.send_abort(frame::Reason::bad_name, why);
    return make_error(ErrorKind::refused, "refused name '" + offer->name + "': " + why);
  }
  if (m_opt.max_size && offer->size > m_opt.max_size) {
    std::string why = "file of " + std::to_string(offer->size) + " bytes exceeds the receiver's --max-size " +
                      std::to_string(m_opt.max_size);
    m_conn.send_abort(frame::Reason::too_large, why);
    return make_error(ErrorKind::refused, "refused " + offer->name + ": " + why);
  }
  FileReport report;
  report.name = offer->name;
  auto start = Clock::now();
  IncomingFile file(m_dir_fd, m_opt, m_umask, m_events, m_conn, report);
  auto status = file.run(*offer);
  report.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (!status) {
    auto kind = status.error().kind;
    report.state = exit_code_for(kind) == exit_code::k_temp_fail ? FileReport::State::interrupted
                                                                 : FileReport::State::failed;
    // Tell the sender why, unless it is the one who left (protocol errors are
    // reported once, by Session::run).
    if (kind != ErrorKind::disconnected && kind != ErrorKind::timeout && kind != ErrorKind::protocol)
      m_conn.send_abort(kind == ErrorKind::interrupted ? frame::Reason::shutting_down : frame::reason_for(kind),
                        status.error().message);
  }
  m_events.file_report(false, report);
  return status;
}

Status Session::serve_files() {
  for (;;) {
    auto ready = m_conn.wait_readable(-1, m_opt.timeout_ms);
    if (!ready) return ready.error();
    auto header = m_conn.read_header(0);
    if (!header) return header.error();
    auto payload = m_conn.read_control_payload(*header);
    if (!payload) return payload.error();
    switch (header->type) {
    case frame::Type::offer: SESSCP_TRY(receive_file(*payload)); break;
    case frame::Type::release:
      SESSCP_TRY(frame::decode_empty(*payload));
      // Nothing is unconfirmed between files, so release is always accepted here.
      SESSCP_TRY(m_conn.send(frame::encode_empty(frame::Type::release_ack)));
      m_conn.shutdown_write();
      return {};
    case frame::Type::abort: {
      auto abort = frame::decode_abort(*payload);
      if (!abort) return abort.error();
      return make_error(frame::error_kind_for(abort->reason),
                        std::string("sender aborted: ") + frame::to_string(abort->reason));
    }
    default:
      return make_error(ErrorKind::protocol, std::string("expected OFFER or RELEASE, got ") +
                                                 frame::to_string(header->type));
    }
  }
}

Status Session::run() {
  // Authenticate the peer (TLS), then establish the session.
  auto status = authenticate();
  if (!status) {
    m_events.info(m_peer + ": refused: " + status.error().message);
    return status;
  }
  status = establish();
  // Serve files until release.
  if (status) status = serve_files();
  if (!status && status.error().kind == ErrorKind::protocol)
    m_conn.send_abort(frame::Reason::protocol, status.error().message);
  if (!status) m_events.info(m_peer + ": session ended: " + status.error().message);
  return status;
}

} // namespace

Result<Receiver> Receiver::create(const ReceiveOptions& options, Events& events) {
  Fd dir(open(options.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return errno_error(ErrorKind::cannot_create, "cannot open directory " + options.dir, errno);
  if (faccessat(dir.get(), ".", W_OK, AT_EACCESS) != 0)
    return errno_error(ErrorKind::cannot_create, "cannot write to " + options.dir, errno);
  auto listener = net::listen_tcp(options.listen);
  if (!listener) return listener.error();
  unsigned mask = ::umask(0);
  ::umask(mask);
  std::optional<tls::Context> tls;
  if (!options.tls.insecure) {
    auto ctx = tls::Context::create(options.tls, true);
    if (!ctx) return ctx.error();
    tls.emplace(std::move(*ctx));
  }
  return Receiver(options, events, std::move(*listener), std::move(dir), mask, std::move(tls));
}

std::string Receiver::address() const { return net::local_name(m_listener.get()); }

Status Receiver::handle_connection(Fd socket) {
  Session session(m_dir.get(), m_opt, m_umask, m_events, m_tls ? &*m_tls : nullptr, std::move(socket));
  return session.run();
}

std::string Receiver::security() const {
  return m_tls ? m_tls->describe() : "PLAINTEXT (--insecure): data is neither encrypted nor authenticated";
}

Status Receiver::serve() {
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::list<Worker> workers;
  auto reap = [&](bool all) {
    for (auto it = workers.begin(); it != workers.end();) {
      if (all || it->done->load()) { it->thread.join(); it = workers.erase(it); }
      else ++it;
    }
  };
  Status result;
  const tls::Context* tls_ptr = m_tls ? &*m_tls : nullptr;
  while (!(m_opt.stop && m_opt.stop->load())) {
    pollfd p{m_listener.get(), POLLIN, 0};
    if (poll(&p, 1, 200) <= 0) { reap(false); continue; }
    Fd sock(accept4(m_listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!sock) continue;
    net::tune_socket(sock.get());
    reap(false);
    if (m_opt.once) {
      result = handle_connection(std::move(sock));
      break;
    }
    if (workers.size() >= static_cast<std::size_t>(m_opt.max_sessions)) {
      // Plaintext REFUSE only where the peer speaks plaintext; a TLS peer
      // just sees the connection close before the handshake.
      m_events.info(net::peer_name(sock.get()) + ": refused: too many sessions (--max-sessions " +
                    std::to_string(m_opt.max_sessions) + ")");
      if (!tls_ptr)
        Session(m_dir.get(), m_opt, m_umask, m_events, tls_ptr, std::move(sock))
            .refuse(frame::Reason::busy, "too many sessions; retry later");
      continue;
    }
    auto done = std::make_shared<std::atomic<bool>>(false);
    auto session = std::make_unique<Session>(m_dir.get(), m_opt, m_umask, m_events, tls_ptr, std::move(sock));
    workers.push_back({std::thread([session = std::move(session), done] {
                         (void)session->run();
                         done->store(true);
                       }),
                       done});
  }
  reap(true);
  return result;
}

} // namespace sesscp
