#include "core/recv/receiver.h"

#include "base/file_io.h"
#include "checkpoint/journal.h"
#include "checkpoint/verify.h"
#include "base/aligned.h"
#include "core/conn.h"
#include "core/duplex.h"
#include "core/frame.h"
#include "core/session_state.h"

#include <fcntl.h>
#include <openssl/rand.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string_view>
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
// REPAIRs awaiting their DATA at once: enough to keep a link busy when a
// whole partial was replaced, few enough that the sender is never flooded.
constexpr std::size_t k_max_repairs_out = 64;
// A VERIFIED at least this often while the partial is being read back: the
// sender shows it, and it is the receiver's heartbeat after FILE_END.
constexpr auto k_verified_period = std::chrono::milliseconds(500);

std::string part_suffix(const std::string& name) { return name + ".sesscp.part"; }
std::string journal_suffix(const std::string& name) { return name + ".sesscp.journal"; }

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

  // Another stage of the same file has news for the network thread (the
  // re-verification of the partial, a repaired chunk written): wake it.
  void poke() {
    m_news.store(true, std::memory_order_release);
    std::uint64_t one = 1;
    (void)!write(m_wake.get(), &one, sizeof one);
  }

  // Another stage of the same file failed: report it as this one's failure
  // and wake the network thread to read it.
  void fail(Error error) {
    {
      std::lock_guard lock(m_mutex);
      if (!m_error) m_error = std::move(error);
    }
    m_news.store(true, std::memory_order_release);
    std::uint64_t one = 1;
    (void)!write(m_wake.get(), &one, sizeof one);
    m_cv.notify_all();
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

// Writes the verified chunks of one file on a thread of its own, so the
// network thread reads and hashes the next chunk while the disk takes this
// one (an O_DIRECT write waits for the device). A few chunk buffers cycle
// between the two threads; the network thread waits for a free one, which
// is the back-pressure. Chunks are recorded (and so journaled) only once
// written.
class ChunkWriter {
public:
  struct Hooks {
    std::function<Status(std::span<const std::uint8_t>, std::uint64_t)> write;
    std::function<void(std::uint64_t, const Hash128&)> written;
    std::function<void(Error)> failed;
  };

  ChunkWriter(std::size_t buffers, std::size_t buffer_size, Hooks hooks) : m_hooks(std::move(hooks)) {
    m_buffers.resize(buffers);
    for (auto& b : m_buffers) {
      b.resize(buffer_size);
      m_free.push_back(&b);
    }
    m_thread = std::thread([this] { loop(); });
  }
  ~ChunkWriter() {
    {
      std::lock_guard lock(m_mutex);
      m_quit = true;
    }
    m_cv.notify_all();
    m_thread.join();
  }

  // A free buffer of at least the chunk size (waits while all are queued).
  AlignedBuffer* acquire() {
    std::unique_lock lock(m_mutex);
    m_cv.wait(lock, [&] { return !m_free.empty(); });
    auto* b = m_free.back();
    m_free.pop_back();
    return b;
  }
  void give_back(AlignedBuffer* b) {
    {
      std::lock_guard lock(m_mutex);
      m_free.push_back(b);
    }
    m_cv.notify_all();
  }
  void submit(AlignedBuffer* b, std::size_t len, std::uint64_t index, std::uint64_t offset, const Hash128& hash) {
    {
      std::lock_guard lock(m_mutex);
      m_queue.push_back({b, len, index, offset, hash});
    }
    m_cv.notify_all();
  }
  // True while at least half the buffers wait for the disk: the partial's
  // re-verification then lets the writer have it (checkpoint::Reverifier).
  bool backlogged() {
    std::lock_guard lock(m_mutex);
    return 2 * (m_queue.size() + (m_busy ? 1 : 0)) >= m_buffers.size();
  }
  // Wait until every submitted chunk is written and recorded (or dropped
  // after a failure).
  void drain() {
    std::unique_lock lock(m_mutex);
    m_cv.wait(lock, [&] { return m_queue.empty() && !m_busy; });
  }

private:
  struct Item {
    AlignedBuffer* buf;
    std::size_t len;
    std::uint64_t index;
    std::uint64_t offset;
    Hash128 hash;
  };

  void loop() {
    std::unique_lock lock(m_mutex);
    for (;;) {
      m_cv.wait(lock, [&] { return m_quit || !m_queue.empty(); });
      if (m_quit) return;
      Item item = m_queue.front();
      m_queue.pop_front();
      m_busy = true;
      bool failed = m_failed;
      lock.unlock();
      if (!failed) {
        auto status = m_hooks.write(item.buf->span(item.len), item.offset);
        if (status) m_hooks.written(item.index, item.hash);
        else {
          failed = true;
          m_hooks.failed(status.error());
        }
      }
      lock.lock();
      m_failed = m_failed || failed;
      m_busy = false;
      m_free.push_back(item.buf);
      m_cv.notify_all();
    }
  }

  Hooks m_hooks;
  std::vector<AlignedBuffer> m_buffers;
  std::mutex m_mutex;
  std::condition_variable m_cv;
  std::vector<AlignedBuffer*> m_free;
  std::deque<Item> m_queue;
  bool m_busy = false;
  bool m_failed = false; // after a failed write the rest are dropped
  bool m_quit = false;
  std::thread m_thread; // last: starts after every member above exists
};

// Writes small files (each one chunk, docs/PROTOCOL.md) on a thread of its
// own, in the order they arrived, so the session thread goes on reading
// and creating the next files: copying the data into the page cache was
// half of that thread's time on a tree of small files. The session thread
// takes a buffer (waiting while k_budget bytes of buffers are queued), reads
// and verifies the chunk into it, and submits it with the work to do; the
// group commit waits for a file's work before making it durable. The thread
// starts with the first submission.
class SmallWriter {
public:
  using Buffer = std::unique_ptr<AlignedBuffer>;
  using Work = std::function<void(std::span<const std::uint8_t>)>;
  static constexpr std::size_t k_budget = 16u << 20;

  ~SmallWriter() {
    {
      std::lock_guard lock(m_mutex);
      m_quit = true;
    }
    m_cv.notify_all();
    if (m_thread.joinable()) m_thread.join();
  }
  // A buffer of `len` bytes (recycled: fresh pages are slow to fault in).
  Buffer acquire(std::size_t len) {
    std::unique_lock lock(m_mutex);
    m_cv.wait(lock, [&] { return m_held == 0 || m_held + len <= k_budget; });
    Buffer b;
    if (!m_free.empty()) {
      b = std::move(m_free.back());
      m_free.pop_back();
      m_free_bytes -= b->capacity();
    } else {
      b = std::make_unique<AlignedBuffer>();
    }
    lock.unlock();
    b->resize(len);
    lock.lock();
    m_held += b->capacity();
    return b;
  }
  // A buffer not submitted after all (its chunk failed its hash).
  void give_back(Buffer buf) {
    {
      std::lock_guard lock(m_mutex);
      recycle(std::move(buf));
    }
    m_cv.notify_all();
  }
  // Queue `work` on `buf`'s first `len` bytes; returns its ticket for wait().
  std::uint64_t submit(Buffer buf, std::size_t len, Work work) {
    std::uint64_t ticket;
    {
      std::lock_guard lock(m_mutex);
      if (!m_thread.joinable()) m_thread = std::thread([this] { loop(); });
      m_queue.push_back({std::move(buf), len, std::move(work)});
      ticket = ++m_submitted;
    }
    m_cv.notify_all();
    return ticket;
  }
  // Until the work with `ticket` (and all before it) has run.
  void wait(std::uint64_t ticket) {
    std::unique_lock lock(m_mutex);
    m_cv.wait(lock, [&] { return m_done >= ticket; });
  }

private:
  struct Item {
    Buffer buf;
    std::size_t len;
    Work work;
  };
  void loop() {
    std::unique_lock lock(m_mutex);
    for (;;) {
      m_cv.wait(lock, [&] { return m_quit || !m_queue.empty(); });
      if (m_queue.empty()) return; // quit, once nothing waits to be written
      Item item = std::move(m_queue.front());
      m_queue.pop_front();
      lock.unlock();
      item.work(item.buf->span(item.len));
      lock.lock();
      ++m_done;
      recycle(std::move(item.buf));
      m_cv.notify_all();
    }
  }
  // Under m_mutex: a buffer is free again; at most a budget's worth is kept.
  void recycle(Buffer buf) {
    m_held -= buf->capacity();
    if (m_free_bytes + buf->capacity() > k_budget) return;
    m_free_bytes += buf->capacity();
    m_free.push_back(std::move(buf));
  }

  std::mutex m_mutex;
  std::condition_variable m_cv;
  std::deque<Item> m_queue;
  std::vector<Buffer> m_free;
  std::size_t m_free_bytes = 0; // capacity of m_free
  std::size_t m_held = 0;       // capacity of the buffers acquired and not yet free
  std::uint64_t m_submitted = 0;
  std::uint64_t m_done = 0;
  bool m_quit = false;
  std::thread m_thread;
};

// Exclusive right to write one destination name, held for the whole file.
// It is an flock on the journal path; the inode check closes the race with a
// session that unlinks the journal at completion.
// Open `name` inside the directory and nowhere else: openat2 with
// RESOLVE_BENEATH and no symlinks where the kernel has it, O_NOFOLLOW on a
// single checked path component otherwise.
int open_beneath(int dir_fd, const std::string& name, int flags, mode_t mode) {
  int fd = openat2_beneath(dir_fd, name.c_str(), flags, mode);
  if (fd >= 0 || errno != ENOSYS) return fd;
  return openat(dir_fd, name.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode);
}

// Refuse a file we did not create: a regular file owned by this user only.
Status check_own_file(int fd, const std::string& name) {
  struct stat st{};
  if (fstat(fd, &st) != 0) return errno_error(ErrorKind::io, "stat " + name, errno);
  if (!S_ISREG(st.st_mode)) return make_error(ErrorKind::cannot_create, name + " is not a regular file");
  static const uid_t euid = geteuid();
  if (st.st_uid != euid)
    return make_error(ErrorKind::cannot_create, name + " is owned by uid " + std::to_string(st.st_uid) +
                                                    ", not by this receiver (uid " + std::to_string(euid) + ")");
  return {};
}

// `*created` (if given) says whether this call created the file (empty, ours).
Result<Fd> lock_destination(int dir_fd, const std::string& journal_name, bool* created = nullptr) {
  for (int attempt = 0; attempt < 5; ++attempt) {
    // Usually absent: creating it exclusively proves it is a new, empty
    // regular file of ours without a stat.
    Fd fd(open_beneath(dir_fd, journal_name, O_RDWR | O_CREAT | O_EXCL, 0600));
    bool fresh = static_cast<bool>(fd);
    if (!fd && errno == EEXIST) fd = Fd(open_beneath(dir_fd, journal_name, O_RDWR | O_CREAT, 0600));
    if (!fd) return errno_error(ErrorKind::cannot_create, "cannot create " + journal_name, errno);
    if (!fresh) SESSCP_TRY(check_own_file(fd.get(), journal_name));
    if (created) *created = fresh;
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

// Give the part its final size, permission bits and mtime (no sync).
// `sized`: the part is known to hold exactly the offered size already.
static Status apply_metadata(int fd, const frame::Offer& offer, unsigned umask, const std::string& part_name,
                             bool sized = false) {
  // ftruncate costs a journal transaction on ext4 even to the same size.
  struct stat st{};
  if (!sized && (fstat(fd, &st) != 0 || static_cast<std::uint64_t>(st.st_size) != offer.size) &&
      ftruncate(fd, static_cast<off_t>(offer.size)) != 0)
    return errno_error(ErrorKind::io, "truncate " + part_name, errno);
  fchmod(fd, offer.mode_bits & 0777 & ~umask);
  timespec times[2] = {{0, UTIME_OMIT},
                       {static_cast<time_t>(offer.mtime_ns / 1'000'000'000),
                        static_cast<long>(offer.mtime_ns % 1'000'000'000)}};
  if (offer.mtime_ns < 0) times[1] = {0, UTIME_OMIT};
  if (futimens(fd, times) != 0) return errno_error(ErrorKind::io, "set mtime of " + part_name, errno);
  return {};
}

// The receiving half of one file (an activity): resume planning, the data
// path, minor sync points, and the major sync point. The session drives it
// frame by frame. A file of at most one chunk is never journaled (there is
// no minor sync point to keep); its major sync point is committed together
// with other small files' (Session::commit_batch).
class IncomingFile {
public:
  // `dir_fd` is the file's parent directory (opened beneath --dir, no
  // symlinks), `dir_path` how to name that directory in paths and messages.
  // `small_writer` writes the chunk of a file of one chunk, with its
  // metadata, once verified (the session's files share it).
  IncomingFile(std::shared_ptr<const Fd> dir_fd, std::string dir_path, const ReceiveOptions& opt, unsigned umask,
               Events& events, Conn& conn, SmallWriter& small_writer)
      : m_dir(std::move(dir_fd)), m_dir_fd(m_dir->get()), m_dir_path(std::move(dir_path)), m_opt(opt),
        m_umask(umask), m_events(events), m_conn(conn), m_small_writer(small_writer) {}
  // (Its part may still be being written by the small-file writer.)
  ~IncomingFile() { (void)written(); }

  // Take the destination's lease and decide the resume point for an OFFER.
  Result<frame::Resume> open(const frame::Offer& offer);
  // Get ready for data after RESUME transfer was sent.
  void begin(const frame::Resume& resume);

  Status on_data(const frame::Header& header);
  // An extra stream's DATA (--streams), on that stream's own thread: checked,
  // read, verified and written exactly as on_data does it. Returns the chunk
  // to ask for again when it failed its hash (RESEND goes out on the first
  // connection), else nothing.
  Result<std::optional<std::uint64_t>> on_stream_data(Conn& conn, const frame::Header& header,
                                                       AlignedBuffer& buf);
  // A file whose chunks may come over extra streams: journaled and begun.
  bool streamable() const { return !m_small && m_syncer.has_value(); }
  Status on_sync(std::span<const std::uint8_t> payload);
  Status on_file_end(std::span<const std::uint8_t> payload);
  // --checksum: the source's hashes of chunks confirmed in earlier sessions.
  Status on_source_hashes(std::span<const std::uint8_t> payload);
  // What the session negotiated: REPAIR/VERIFIED (background re-verification)
  // and SOURCE_HASHES (--checksum). Set before open().
  void set_features(bool repair, bool checksum) {
    m_peer_repairs = repair;
    m_checksum = checksum;
  }
  // Send CHECKPOINT for sync points the syncer made durable, and REPAIR and
  // VERIFIED for what the re-verification of the partial found.
  Status flush_confirmed();
  // True once FILE_END arrived and everything before it is verified (and, for
  // a journaled file, durable).
  bool ready_to_finish();
  // Journaled file: the whole major sync point, then FILE_DONE.
  Status finish_file();
  // Small file: verify and set size and metadata (no sync yet) ...
  Status prepare_small();
  // ... wait until the small-file writer wrote it (any thread) ...
  Status written() {
    if (m_write_ticket == 0) return {};
    m_small_writer.wait(m_write_ticket);
    return m_write_status;
  }
  // ... make its data durable (any thread) ...
  Status sync_data() {
    if (fdatasync(m_part.get()) != 0) return errno_error(ErrorKind::io, "fdatasync " + m_part_name, errno);
    return {};
  }
  // ... then publish it, and make its directory entry durable ...
  Status publish_small();
  Status sync_dir() { return fsync_dir(m_dir_fd, m_dir_path); }
  int dir_fd() const { return m_dir_fd; }
  // ... and once the names are durable, confirm it.
  Status send_file_done();
  // Checkpoint every verified chunk after the session broke.
  void save_progress();

  bool small() const { return m_small; }
  int wake_fd() const { return m_syncer ? m_syncer->wake_fd() : -1; }
  std::uint32_t max_data() const { return frame::k_data_prefix + m_chunk_size; }
  FileReport& report() { return m_report; }

private:
  // A chunk confirmed in an earlier session, until this run proved it.
  enum class Earlier : std::uint8_t { unchecked, good, wanted, asked };

  Result<frame::Resume> plan(const frame::Offer& offer);
  // Under m_mx: chunk `index` may arrive now with a DATA payload of `length`
  // bytes; it is marked in flight. Returns the chunk's length.
  Result<std::uint64_t> claim_chunk(std::uint64_t index, std::uint32_t length);
  // Read a DATA frame's prefix from `conn` and claim its chunk (claim_chunk,
  // taking m_mx): the prefix and the chunk's length.
  struct Claim {
    frame::DataPrefix prefix;
    std::uint64_t len = 0;
  };
  Result<Claim> read_claim(Conn& conn, const frame::Header& header);
  // Under m_mx: a claimed chunk arrived whole and verified (and is written).
  void record_chunk(std::uint64_t index, const Hash128& hash);
  // Under m_mx: a claimed chunk failed its hash (or could not be read).
  Status chunk_failed(std::uint64_t index);
  Status start_fresh(frame::ResumeWhy why, const std::string& message, frame::Resume& resume);
  // Resume from a journal: check the confirmed chunks now (tail, or an
  // older peer) or plan their check in the background; the resume point.
  Result<frame::Resume> resume_from(checkpoint::Replay& replay, Result<checkpoint::Journal>& journal);
  // Rewrite the journal so it claims only the first `proven` chunks.
  Status truncate_journal(checkpoint::Replay& replay, std::uint64_t proven, Result<checkpoint::Journal>& journal);
  // Re-verification of the chunks confirmed in earlier sessions.
  bool background_check() const {
    return m_peer_repairs && m_opt.verify_resume == checkpoint::ResumeCheck::full;
  }
  void start_reverifier();
  // Under m_mx: what the re-verification found; REPAIRs to send.
  void take_reverified();
  Status send_repairs();
  // Under m_mx: chunk `index` (< m_first) must be sent again.
  void want_repair(std::uint64_t index);
  // Under m_mx: a repaired chunk's DATA matches what it must hold.
  Status check_repair(std::uint64_t index, const Hash128& hash);
  // Under m_mx: every chunk below the resume point is proven this run.
  bool earlier_proven() const {
    return m_earlier_good == m_first && (!m_checksum || m_source_next == m_first);
  }
  // Write a verified chunk of a journaled file: O_DIRECT when it can, else
  // through the page cache with writeback started at once.
  Status write_chunk(std::span<const std::uint8_t> chunk, std::uint64_t offset);
  void dispatch();
  Status publish();
  bool part_path_is_ours() const;
  Status check_free_space(const frame::Resume& resume) const;
  std::string path(const std::string& leaf) const { return m_dir_path + "/" + leaf; }

  std::shared_ptr<const Fd> m_dir; // shared by the files of one directory
  int m_dir_fd;
  std::string m_dir_path;
  const ReceiveOptions& m_opt;
  unsigned m_umask;
  Events& m_events;
  Conn& m_conn;
  FileReport m_report;
  Clock::time_point m_start = Clock::now();

  frame::Offer m_offer;
  std::string m_leaf; // the file's name in its directory
  std::string m_part_name, m_journal_name;
  bool m_small = false;
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
  std::set<std::uint64_t> m_inflight;  // claimed by a stream, being read
  // The chunk state above (and m_report.bytes) is shared with the threads of
  // the extra streams (--streams); without them it is never contended.
  std::mutex m_mx;
  std::optional<frame::FileEnd> m_file_end;
  RootBuilder m_file_root;             // a small file's, or streamed (see m_hashes)
  RootBuilder m_session_root;
  // Verified resume (docs/JOURNAL.md, "Re-verification on resume"). Chunks
  // below m_first were confirmed in an earlier session: each is read back
  // from the part and matched against the journal, or sent again (REPAIR),
  // before the file may be published. m_hashes holds the earlier chunks'
  // hashes (the journal's; with --checksum every chunk's, since a repair
  // may change one), and a chunk's entry counts only once this run has
  // checked it against the bytes in the file. Without --checksum the file
  // root streams: the earlier hashes first (each must be proven before the
  // file is published), then this session's in order, so a fresh transfer
  // keeps no per-chunk state, as before.
  bool m_peer_repairs = false;         // the session negotiated REPAIR and VERIFIED
  bool m_checksum = false;             // ... and SOURCE_HASHES (send --checksum)
  bool m_trust_earlier = true;         // earlier chunks already proven (or trusted: tail)
  std::vector<Hash128> m_hashes;       // chunks below m_first (--checksum: every chunk)
  std::vector<Earlier> m_earlier;      // per chunk below m_first
  std::uint64_t m_earlier_good = 0;    // of them, proven
  std::uint64_t m_source_next = 0;     // --checksum: source hashes received for chunks below this
  std::map<std::uint64_t, Hash128> m_expect; // --checksum: what the source holds where it differs
  std::deque<std::uint64_t> m_repair_queue; // wanted, REPAIR not sent yet
  std::size_t m_repairs_out = 0;       // REPAIR sent, DATA not yet written
  std::uint64_t m_verify_checked = 0;  // the reverifier's progress, of m_first chunks
  std::uint64_t m_verify_damaged = 0;  // of m_verify_checked, found damaged
  bool m_verify_done = true;
  Clock::time_point m_last_verified{}; // last VERIFIED sent
  SmallWriter& m_small_writer;         // writes a small file's only chunk (see the constructor)
  std::uint64_t m_write_ticket = 0;    // its ticket there, once submitted
  Status m_write_status;               // set on the writer's thread, read after written() waited
  bool m_had_final = false;            // NAME existed when the file was offered
  bool m_lease_created = false;        // open() created the lease file (so it was empty)
  Fd m_direct;                         // the part with O_DIRECT, if allowed
  std::atomic<bool> m_direct_ok{true}; // false after the file system refused a direct write
  // Its thread records chunks into the members above, so it stops first ...
  std::optional<ChunkWriter> m_writer;
  // ... after this one, which asks the writer and the syncer (poke).
  std::unique_ptr<checkpoint::Reverifier> m_reverifier;
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
  struct stat jst{}; // only its size is used: a lease this session created is empty
  if (!m_lease_created && fstat(m_small ? m_part.get() : m_lock.get(), &jst) != 0)
    return errno_error(ErrorKind::io, "stat lease", errno);
  bool have_journal = !m_small && jst.st_size > 0;

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
      if (fstat(m_part.get(), &jst) != 0) return errno_error(ErrorKind::io, "stat lease", errno);
      m_lease_created = false;
    }
  }
  bool final_matches = have_final && static_cast<std::uint64_t>(fst.st_size) == offer.size &&
                       mtime_of(fst) == offer.mtime_ns;
  if (final_matches && (m_small || !have_journal || faccessat(m_dir_fd, m_part_name.c_str(), F_OK, 0) != 0)) {
    // The lease (and any stale journal: no other session can hold it while
    // this one holds the part) is not needed any more.
    if (m_small) unlinkat(m_dir_fd, m_part_name.c_str(), 0);
    unlinkat(m_dir_fd, m_journal_name.c_str(), 0);
    return frame::Resume{frame::ResumeStatus::complete, frame::ResumeWhy::already_complete, 0, 0, 0, ""};
  }

  if (m_small) {
    // One chunk or none: nothing worth journaling, so always from zero.
    // (Not O_TMPFILE: on ext4 its orphan-list updates made each file cost
    // ~1.5 ms more here.)
    bool part_existed = jst.st_size > 0;
    if (part_existed && ftruncate(m_part.get(), 0) != 0)
      return errno_error(ErrorKind::io, "truncate " + m_part_name, errno);
    m_identity.chunk_size = offer.chunk_size;
    return frame::Resume{frame::ResumeStatus::transfer,
                         part_existed ? frame::ResumeWhy::journal_unusable : frame::ResumeWhy::fresh,
                         offer.chunk_size, 0, 1, ""};
  }

  bool part_existed = faccessat(m_dir_fd, m_part_name.c_str(), F_OK, 0) == 0;
  // The part is leased too, so a small file's session (whose lease is the
  // part) and a journaled one never write one destination at once.
  auto part = lock_destination(m_dir_fd, m_part_name);
  if (!part) return part.error();
  m_part = std::move(*part);
  // Direct writes skip the copy into the page cache and the writeback that
  // fdatasync waits for: measured here, 2 GiB in 1.3 s instead of 5.9 s
  // (docs/PERFORMANCE.md).
  m_direct = reopen_direct(m_part.get(), O_WRONLY);

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
  return resume_from(replay, journal);
}

Result<frame::Resume> IncomingFile::resume_from(checkpoint::Replay& replay, Result<checkpoint::Journal>& journal) {
  m_identity.chunk_size = replay.identity.chunk_size;
  const auto& name = m_offer.name;
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
    // Before answering: the last 64 MiB only (--verify-resume tail: the
    // earlier chunks are trusted), or every chunk when the sender cannot
    // be asked for chunks below the resume point (an older sesscp).
    m_events.phase(name, Events::Phase::verifying, "");
    auto progress = [&](std::uint64_t done, std::uint64_t total) { m_events.verify_progress(name, done, total); };
    const bool tail = m_opt.verify_resume == checkpoint::ResumeCheck::tail;
    auto checked = tail ? checkpoint::verify_tail(m_part.get(), m_identity.chunk_size, m_offer.size,
                                                  replay.chunk_hashes, m_opt.verify_tail_bytes,
                                                  [&](std::uint64_t done, std::uint64_t total) {
                                                    m_report.reverified_bytes = done;
                                                    progress(done, total);
                                                  })
                        : [&]() -> Result<std::uint64_t> {
                            auto damaged = checkpoint::verify_chunks(m_part.get(), m_identity.chunk_size,
                                                                     m_offer.size, replay.chunk_hashes, progress);
                            if (!damaged) return damaged.error();
                            m_report.reverified_bytes = replay.confirmed_bytes();
                            m_report.damaged_chunks = damaged->size();
                            return damaged->empty() ? replay.chunk_hashes.size() : damaged->front();
                          }();
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

Status IncomingFile::truncate_journal(checkpoint::Replay& replay, std::uint64_t proven,
                                      Result<checkpoint::Journal>& journal) {
  replay.chunk_hashes.resize(proven);
  auto fresh = checkpoint::Journal::create(path(m_journal_name), m_identity);
  if (!fresh) return fresh.error();
  std::uint64_t serial = 0;
  for (std::uint64_t first = 0; first < proven; first += checkpoint::k_max_record_hashes) {
    auto end = std::min<std::uint64_t>(proven, first + checkpoint::k_max_record_hashes);
    SESSCP_TRY(fresh->append({++serial, first, {replay.chunk_hashes.begin() + static_cast<std::ptrdiff_t>(first),
                                                replay.chunk_hashes.begin() + static_cast<std::ptrdiff_t>(end)}}));
  }
  replay.last_serial = serial;
  journal = std::move(fresh);
  return {};
}

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
    m_syncer.emplace(m_part.get(), *m_journal, m_part_name);
    m_writer.emplace(pipeline_buffers(m_chunk_size), m_chunk_size,
                     ChunkWriter::Hooks{[this](std::span<const std::uint8_t> chunk, std::uint64_t offset) {
                                          return write_chunk(chunk, offset);
                                        },
                                        [this](std::uint64_t index, const Hash128& hash) {
                                          std::lock_guard lock(m_mx);
                                          record_chunk(index, hash);
                                        },
                                        [this](Error error) { m_syncer->fail(std::move(error)); }});
    if (m_checksum) m_hashes.resize(m_chunks);
    else
      for (std::uint64_t i = 0; i < m_first; ++i) m_file_root.add(m_hashes[i]);
    m_earlier.assign(m_first, m_trust_earlier ? Earlier::good : Earlier::unchecked);
    m_earlier_good = m_trust_earlier ? m_first : 0;
    if (!m_trust_earlier) start_reverifier();
  }
}

void IncomingFile::start_reverifier() {
  m_verify_done = false;
  m_reverifier = std::make_unique<checkpoint::Reverifier>(
      m_part.get(), m_chunk_size, m_offer.size, std::vector<Hash128>(m_hashes.begin(), m_hashes.begin() + m_first),
      [this] { m_syncer->poke(); }, [this] { return m_writer->backlogged(); });
}

void IncomingFile::want_repair(std::uint64_t index) {
  auto& state = m_earlier[index];
  if (state == Earlier::wanted || state == Earlier::asked) return;
  if (state == Earlier::good) --m_earlier_good;
  state = Earlier::wanted;
  m_repair_queue.push_back(index);
  ++m_report.damaged_chunks;
}

void IncomingFile::take_reverified() {
  if (!m_reverifier) return;
  auto news = m_reverifier->take();
  if (news.error) {
    m_syncer->fail(make_error(news.error->kind, m_offer.name + ": " + news.error->message));
    return;
  }
  const std::uint64_t before = m_verify_checked;
  std::size_t damaged = 0;
  auto it = news.damaged.begin();
  for (std::uint64_t i = before; i < news.checked; ++i) {
    bool bad = it != news.damaged.end() && *it == i;
    if (bad) ++it;
    // A chunk already wanted (--checksum) or repaired is not the reader's to judge.
    if (m_earlier[i] != Earlier::unchecked) continue;
    if (bad) {
      want_repair(i);
      ++damaged;
      ++m_verify_damaged;
    } else {
      m_earlier[i] = Earlier::good;
      ++m_earlier_good;
    }
  }
  m_report.reverified_bytes = std::min(news.checked * m_chunk_size, m_offer.size);
  m_verify_checked = news.checked;
  m_verify_done = news.done;
  if (damaged > 0)
    m_events.info(m_offer.name + ": " + std::to_string(damaged) + " chunk(s) of the partial file damaged at rest " +
                  "(from chunk " + std::to_string(news.damaged.front()) + "); asking for them again");
}

Status IncomingFile::send_repairs() {
  std::vector<std::uint64_t> ask;
  bool verified = false;
  frame::Verified progress;
  {
    std::lock_guard lock(m_mx);
    take_reverified();
    while (!m_repair_queue.empty() && m_repairs_out < k_max_repairs_out) {
      auto index = m_repair_queue.front();
      m_repair_queue.pop_front();
      m_earlier[index] = Earlier::asked;
      ++m_repairs_out;
      ask.push_back(index);
    }
    auto now = Clock::now();
    if (m_reverifier && (m_verify_done || now - m_last_verified >= k_verified_period)) {
      m_last_verified = now;
      verified = true;
      progress = {m_verify_checked, m_first, m_verify_damaged};
      if (m_verify_done) m_reverifier.reset(); // its thread has ended
    }
  }
  for (auto index : ask) {
    m_events.debug(m_offer.name + ": chunk " + std::to_string(index) + " damaged in the partial file; REPAIR");
    SESSCP_TRY(m_conn.send(frame::encode(frame::Repair{index})));
  }
  if (verified) {
    m_events.verify_progress(m_offer.name, std::min(progress.checked * m_chunk_size, m_offer.size),
                             std::min(progress.total * m_chunk_size, m_offer.size));
    SESSCP_TRY(m_conn.send(frame::encode(progress)));
  }
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

Status IncomingFile::on_source_hashes(std::span<const std::uint8_t> payload) {
  auto sh = frame::decode_source_hashes(payload);
  if (!sh) return sh.error();
  std::lock_guard lock(m_mx);
  if (!m_checksum || m_small || sh->first_chunk != m_source_next || sh->first_chunk + sh->hashes.size() > m_first)
    return make_error(ErrorKind::protocol, "SOURCE_HASHES out of order or beyond the resume point");
  for (std::size_t k = 0; k < sh->hashes.size(); ++k) {
    const auto index = sh->first_chunk + k;
    const auto& source = sh->hashes[k];
    if (source == m_hashes[index]) continue;
    // The source differs from what the part holds (or is to hold): send again.
    m_expect[index] = source;
    if (m_earlier[index] == Earlier::asked) continue; // its DATA is on the way; checked against `source` then
    want_repair(index);
  }
  m_source_next += sh->hashes.size();
  if (m_syncer) m_syncer->poke();
  return {};
}

bool IncomingFile::ready_to_finish() {
  if (!m_file_end) return false;
  if (m_small) return true;
  std::lock_guard lock(m_mx);
  return m_dispatched == m_chunks && m_syncer->idle() && earlier_proven();
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
  // Hashed before taking the lock: stream readers claim chunks meanwhile.
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
    // Written, then recorded, by the writer's thread.
    m_writer->submit(slot, len, index, index * m_chunk_size, claim->prefix.hash);
    return {};
  }
  // A small file's only chunk (claim_chunk refuses a second): written with
  // its metadata on the small-file writer's thread; its group commit waits
  // for that (written()).
  lock.lock();
  record_chunk(index, claim->prefix.hash);
  lock.unlock();
  m_write_ticket = m_small_writer.submit(std::move(small), len, [this, offset = index * m_chunk_size](auto data) {
    m_write_status = pwrite_all(m_part.get(), data, offset, "write " + m_part_name);
    if (m_write_status) m_write_status = apply_metadata(m_part.get(), m_offer, m_umask, m_part_name, true);
  });
  return {};
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

bool IncomingFile::part_path_is_ours() const {
  struct stat ours{}, there{};
  return fstat(m_part.get(), &ours) == 0 &&
         fstatat(m_dir_fd, m_part_name.c_str(), &there, AT_SYMLINK_NOFOLLOW) == 0 && ours.st_ino == there.st_ino &&
         ours.st_dev == there.st_dev;
}

Status IncomingFile::publish() {
  // Publish the inode we wrote, not whatever the part's path names now (a
  // local user could have swapped it for a symlink): link it by descriptor.
  // NAME absent at the offer (the common case): link it as NAME directly; a
  // link never replaces anything, so a NAME created meanwhile (EEXIST) is
  // replaced below like an old one.
  std::string self = "/proc/self/fd/" + std::to_string(m_part.get());
  auto drop_part = [&] {
    if (part_path_is_ours()) unlinkat(m_dir_fd, m_part_name.c_str(), 0);
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
  if (!part_path_is_ours())
    return make_error(ErrorKind::cannot_create, m_part_name + " was replaced during the transfer; not publishing it");
  if (renameat(m_dir_fd, m_part_name.c_str(), m_dir_fd, m_leaf.c_str()) != 0)
    return errno_error(ErrorKind::io, "rename " + m_part_name + " to " + m_offer.name, errno);
  return {};
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
  SESSCP_TRY(apply_metadata(fd, m_offer, m_umask, m_part_name));
  if (fsync(fd) != 0) return errno_error(ErrorKind::io, "fsync " + m_part_name, errno);
  SESSCP_TRY(publish());
  SESSCP_TRY(fsync_dir(m_dir_fd, m_dir_path));
  m_journal.reset();
  if (unlinkat(m_dir_fd, m_journal_name.c_str(), 0) != 0)
    return errno_error(ErrorKind::io, "remove " + m_journal_name, errno);
  SESSCP_TRY(fsync_dir(m_dir_fd, m_dir_path));
  return send_file_done();
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
  return apply_metadata(m_part.get(), m_offer, m_umask, m_part_name, true);
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

Status make_batch_durable(int root_fd, const std::string& root_path, std::vector<std::unique_ptr<IncomingFile>>& batch);

// Commits batches of small files (make_batch_durable) on its own thread, in
// order, so the session thread goes on creating the next files meanwhile:
// the two halves of the per-file filesystem work then overlap.
class Committer {
public:
  using Batch = std::vector<std::unique_ptr<IncomingFile>>;
  Committer(int root_fd, std::string root_path)
      : m_root_fd(root_fd), m_root_path(std::move(root_path)), m_wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
        m_thread([this] { loop(); }) {}
  ~Committer() {
    {
      std::lock_guard lock(m_mutex);
      m_quit = true;
    }
    m_cv.notify_all();
    m_thread.join();
  }
  void submit(Batch batch) {
    {
      std::lock_guard lock(m_mutex);
      m_todo.push_back(std::move(batch));
    }
    m_cv.notify_all();
  }
  // Wait until every submitted batch is committed (or failed).
  void drain() {
    std::unique_lock lock(m_mutex);
    m_cv.wait(lock, [&] { return m_todo.empty() && !m_busy; });
  }
  bool busy() {
    std::lock_guard lock(m_mutex);
    return !m_todo.empty() || m_busy;
  }
  // True when every batch submitted was committed and confirmed (taken).
  bool all_taken() {
    std::lock_guard lock(m_mutex);
    return m_todo.empty() && !m_busy && m_done.empty();
  }
  std::optional<std::pair<Batch, Status>> take_done() {
    std::uint64_t v;
    (void)!read(m_wake.get(), &v, sizeof v);
    std::lock_guard lock(m_mutex);
    if (m_done.empty()) return std::nullopt;
    auto d = std::move(m_done.front());
    m_done.pop_front();
    return d;
  }
  int wake_fd() const { return m_wake.get(); }

private:
  void loop() {
    std::unique_lock lock(m_mutex);
    for (;;) {
      m_cv.wait(lock, [&] { return m_quit || !m_todo.empty(); });
      if (m_todo.empty()) return; // quit
      Batch batch = std::move(m_todo.front());
      m_todo.pop_front();
      m_busy = true;
      lock.unlock();
      // A file the small-file writer could not write fails the batch from
      // there on; the files before it are committed.
      Batch rest;
      Status written;
      for (std::size_t i = 0; i < batch.size() && written; ++i) {
        written = batch[i]->written();
        if (!written) {
          rest.assign(std::make_move_iterator(batch.begin() + static_cast<std::ptrdiff_t>(i)),
                      std::make_move_iterator(batch.end()));
          batch.resize(i);
        }
      }
      // After a failure nothing later is committed: the files stay partial.
      Status status = m_failed        ? Status(make_error(ErrorKind::io, "an earlier batch failed"))
                      : batch.empty() ? Status{}
                                      : make_batch_durable(m_root_fd, m_root_path, batch);
      lock.lock();
      m_failed = m_failed || !status || !written;
      m_busy = false;
      m_done.emplace_back(std::move(batch), status);
      if (!rest.empty()) m_done.emplace_back(std::move(rest), written);
      std::uint64_t one = 1;
      (void)!write(m_wake.get(), &one, sizeof one);
      m_cv.notify_all();
    }
  }

  int m_root_fd;
  std::string m_root_path;
  Fd m_wake;
  std::mutex m_mutex;
  std::condition_variable m_cv;
  std::deque<Batch> m_todo;
  std::deque<std::pair<Batch, Status>> m_done;
  bool m_busy = false;
  bool m_quit = false;
  bool m_failed = false;
  std::thread m_thread; // last: starts after every member above exists
};

// What a session shares with the extra connections (streams) that joined it
// (send --streams N, docs/PROTOCOL.md "Several connections"): which file
// takes their DATA now, the joined streams' sockets (shut down when the
// session ends, which ends their threads), and what they report back to the
// session's thread (an error, chunks to ask for again), with a descriptor
// that wakes it.
class StreamHub {
public:
  StreamHub(unsigned streams, int timeout_ms)
      : m_streams(streams), m_timeout_ms(timeout_ms), m_wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)),
        m_closing(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}
  StreamHub(const StreamHub&) = delete;
  StreamHub& operator=(const StreamHub&) = delete;

  unsigned streams() const { return m_streams; }
  int wake_fd() const { return m_wake.get(); }
  // Readable once the session has ended (never drained).
  int closing_fd() const { return m_closing.get(); }

  // A connection asks to be stream `index` (1..N-1); "" when it may.
  std::string join(std::uint16_t index, int fd) {
    std::lock_guard lock(m_mutex);
    if (m_closed) return "JOIN for a session that is ending";
    if (index < 1 || index >= m_streams)
      return "JOIN as stream " + std::to_string(index) + ", but the HELLO announced " + std::to_string(m_streams) +
             " streams (1.." + std::to_string(m_streams - 1) + " may join)";
    if (!m_joined.insert(index).second) return "stream " + std::to_string(index) + " joined twice";
    m_fds.push_back(fd);
    return "";
  }
  void leave(int fd) {
    std::lock_guard lock(m_mutex);
    m_fds.erase(std::remove(m_fds.begin(), m_fds.end(), fd), m_fds.end());
  }
  std::size_t joined() {
    std::lock_guard lock(m_mutex);
    return m_joined.size();
  }
  // Streams announced that have not joined yet (0 once the session ends).
  std::size_t outstanding() {
    std::lock_guard lock(m_mutex);
    return m_closed ? 0 : m_streams - 1 - m_joined.size();
  }

  // A stream's thread: the file its DATA goes to (nullptr: none), held
  // until release(); the session never frees a file held.
  IncomingFile* acquire() {
    std::lock_guard lock(m_mutex);
    if (!m_target || m_closed) return nullptr;
    ++m_in_use;
    return m_target;
  }
  void release() {
    std::lock_guard lock(m_mutex);
    --m_in_use;
    m_cv.notify_all();
  }
  // The session: `file` takes the streams' DATA from now on.
  void set_target(IncomingFile* file) {
    std::unique_lock lock(m_mutex);
    if (m_target == file) return;
    m_target = nullptr;
    wait_idle(lock);
    m_target = m_closed ? nullptr : file;
  }

  // A stream's thread: it failed; the whole session ends.
  void fail(const Error& error) {
    std::lock_guard lock(m_mutex);
    if (m_closed || m_error) return;
    m_error = error;
    poke();
  }
  // A stream's thread: ask the sender for this chunk again.
  void resend(std::uint64_t chunk) {
    std::lock_guard lock(m_mutex);
    m_resends.push_back(chunk);
    poke();
  }
  // The session's thread: what the streams reported since the last call.
  std::optional<Error> take(std::vector<std::uint64_t>& resends) {
    std::uint64_t v;
    (void)!read(m_wake.get(), &v, sizeof v);
    std::lock_guard lock(m_mutex);
    resends.swap(m_resends);
    m_resends.clear();
    return m_error;
  }

  bool closed() {
    std::lock_guard lock(m_mutex);
    return m_closed;
  }
  // The session ends: no stream may take more data; their sockets are shut
  // down (which ends their reads at once) and this returns when none holds
  // a file any more.
  void close() {
    std::unique_lock lock(m_mutex);
    if (!m_closed) {
      m_closed = true;
      m_target = nullptr;
      std::uint64_t one = 1;
      (void)!write(m_closing.get(), &one, sizeof one);
      for (int fd : m_fds) ::shutdown(fd, SHUT_RDWR);
    }
    wait_idle(lock);
  }

private:
  void poke() {
    std::uint64_t one = 1;
    (void)!write(m_wake.get(), &one, sizeof one);
  }
  // Wait until no stream holds a file; a stream that does not finish its
  // chunk within the timeout has its socket shut down, which ends its read.
  void wait_idle(std::unique_lock<std::mutex>& lock) {
    auto deadline = Clock::now() + std::chrono::milliseconds(m_timeout_ms);
    bool cut = false;
    while (m_in_use > 0) {
      if (!cut && Clock::now() >= deadline) {
        for (int fd : m_fds) ::shutdown(fd, SHUT_RDWR);
        cut = true;
      }
      m_cv.wait_for(lock, std::chrono::milliseconds(200));
    }
  }

  const unsigned m_streams;
  const int m_timeout_ms;
  Fd m_wake, m_closing;
  std::mutex m_mutex;
  std::condition_variable m_cv;
  std::set<std::uint16_t> m_joined;
  std::vector<int> m_fds;
  IncomingFile* m_target = nullptr;
  int m_in_use = 0;
  bool m_closed = false;
  std::optional<Error> m_error;
  std::vector<std::uint64_t> m_resends;
};

} // namespace

// Live sessions that accepted extra streams, by cookie: where a JOIN finds
// its session. Shared by every connection of one Receiver.
class StreamRegistry {
public:
  Result<frame::Cookie> add(std::shared_ptr<StreamHub> hub) {
    frame::Cookie cookie{};
    if (RAND_bytes(cookie.data(), static_cast<int>(cookie.size())) != 1)
      return make_error(ErrorKind::internal, "no random bytes for a session cookie");
    std::lock_guard lock(m_mutex);
    m_hubs[cookie] = std::move(hub);
    return cookie;
  }
  std::shared_ptr<StreamHub> find(const frame::Cookie& cookie) {
    std::lock_guard lock(m_mutex);
    auto it = m_hubs.find(cookie);
    return it == m_hubs.end() ? nullptr : it->second;
  }
  void remove(const frame::Cookie& cookie) {
    std::lock_guard lock(m_mutex);
    m_hubs.erase(cookie);
  }
  // Extra connections that live sessions still wait for.
  std::size_t outstanding() {
    std::lock_guard lock(m_mutex);
    std::size_t n = 0;
    for (auto& [cookie, hub] : m_hubs) n += hub->outstanding();
    return n;
  }

private:
  std::mutex m_mutex;
  std::map<frame::Cookie, std::shared_ptr<StreamHub>> m_hubs;
};

namespace {

// One connection: establishment, files, release.
class Session {
public:
  // `streams` (may be null) is where sessions with extra streams are found
  // by their JOINs; with `join_only`, a HELLO is refused (busy): a --once
  // receiver already serves its session, only that session's streams join.
  Session(int dir_fd, const ReceiveOptions& opt, unsigned umask, Events& events, const tls::Context* tls,
          Fd socket, int serve_fd = -1, StreamRegistry* streams = nullptr, bool join_only = false,
          std::shared_ptr<std::atomic<bool>> is_stream = nullptr)
      : m_dir_fd(dir_fd), m_serve_fd(serve_fd), m_opt(opt), m_umask(umask), m_events(events), m_tls(tls),
        m_peer(net::peer_name(socket.get())),
        m_own_conn(std::in_place, std::move(socket), opt.stop, opt.handshake_timeout_ms), m_conn(*m_own_conn),
        m_machine(m_own_machine), m_registry(streams), m_join_only(join_only), m_is_stream(std::move(is_stream)) {}
  ~Session() { close_streams(); }
  // Half-duplex: the initiator's turn to receive, over its own session.
  Session(int dir_fd, const ReceiveOptions& opt, unsigned umask, Events& events, Conn& conn,
          session::Machine& machine)
      : m_dir_fd(dir_fd), m_opt(opt), m_umask(umask), m_events(events), m_tls(nullptr), m_peer("fetch"),
        m_conn(conn), m_machine(machine), m_features(opt.turn_features) {}

  Status run();
  // Receive until the peer gives the data token back.
  Status run_turn();
  // Full-duplex: receive until the peer releases this direction.
  Status run_direction();
  // Refuse before establishment (e.g. too many sessions).
  void refuse(frame::Reason reason, const std::string& message) {
    (void)m_conn.send(frame::encode(frame::Refuse{reason, frame::k_protocol_version, message}));
  }

private:
  Status authenticate();
  Status establish();
  Status serve_files();
  Status serve_full_duplex();
  Status serve(Conn& conn, session::Machine& machine, const std::vector<frame::FetchPath>& fetch, Dialog dialog);
  // An extra connection (JOIN): read its DATA into the session it joined.
  Status serve_stream();
  Status read_stream(StreamHub& hub);
  // With extra streams: send the RESENDs they asked for, end on their errors.
  Status poll_streams();
  // Tell the streams which file takes their DATA (the first journaled one).
  void update_target();
  // Stop the streams (the session ends); idempotent.
  void close_streams();
  Status next_step();
  Status on_offer(std::span<const std::uint8_t> payload);
  Status on_mkdir(std::span<const std::uint8_t> payload);
  Status on_symlink(std::span<const std::uint8_t> payload);
  Status on_release();
  Status on_give_token(std::span<const std::uint8_t> payload);
  Status finish_front();
  Status commit_batch();
  Status collect_commits(bool confirm, bool wait);
  Status apply_directory_metadata();
  void end_files(const Error& error);
  Result<Fd> make_dirs(std::string_view rel);
  Status send_ctl(frame::Type type, std::span<const std::uint8_t> frame);

  int m_dir_fd;
  int m_serve_fd = -1; // --serve, exported to half-duplex sessions
  const ReceiveOptions& m_opt;
  unsigned m_umask;
  Events& m_events;
  const tls::Context* m_tls;
  std::string m_peer;
  std::optional<Conn> m_own_conn;
  Conn& m_conn;
  session::Machine m_own_machine{session::Role::responder};
  session::Machine& m_machine;
  std::uint64_t m_features = 0; // negotiated at establishment (frame::feature)
  // Writes small files' chunks (IncomingFile's constructor); before the
  // files, which wait for it when they go.
  SmallWriter m_small_writer;
  // Files offered and planned, in order; the front one receives data.
  std::deque<std::unique_ptr<IncomingFile>> m_files;
  // Small files verified and set up, waiting for one commit (group commit).
  std::vector<std::unique_ptr<IncomingFile>> m_batch;
  Clock::time_point m_batch_start;
  std::optional<Committer> m_committer;
  // Directories of this session, whose mode and mtime are set at release.
  std::vector<frame::Mkdir> m_dirs;
  // The directory of the last file offered.
  std::shared_ptr<const Fd> m_parent;
  std::string m_parent_path;
  // Several connections (--streams): where JOINs find sessions, this
  // session's streams (with the cookie that registers them), or the JOIN
  // this connection opened with.
  StreamRegistry* m_registry = nullptr;
  bool m_join_only = false;
  std::shared_ptr<StreamHub> m_hub;
  frame::Cookie m_cookie{};
  std::optional<frame::Join> m_join;
  // Set once this connection joined a session as an extra stream: the
  // listener does not count it against --max-sessions any more.
  std::shared_ptr<std::atomic<bool>> m_is_stream;
};

// Offers a sender may have outstanding (planned files, each holding a lease
// and a part file), and small files committed together at most (each holds
// its lease and its unnamed part: two descriptors).
constexpr std::size_t k_max_planned_files = 64;
constexpr std::size_t k_max_batch = 512;
// From this many files on, a batch is flushed with syncfs.
constexpr std::size_t k_syncfs_batch = 64;
// How long a batch waits for more small files once the socket is quiet.
constexpr long long k_batch_linger_ms = 5;
// Threads that flush one batch's files at once.
constexpr std::size_t k_sync_threads = 8;

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
  if (header->type != frame::Type::hello && header->type != frame::Type::abort && header->type != frame::Type::join)
    return make_error(ErrorKind::protocol, std::string("expected HELLO, got ") + frame::to_string(header->type));
  auto payload = m_conn.read_control_payload(*header);
  if (!payload) return payload.error();
  if (header->type == frame::Type::join) {
    // An extra connection of an established session (--streams).
    auto join = frame::decode_join(*payload);
    if (!join) return join.error();
    m_join = *join;
    return {};
  }
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
  if (m_join_only) {
    std::string msg = m_opt.once ? "this receiver (--once) is serving a session already"
                                 : "too many sessions (--max-sessions " + std::to_string(m_opt.max_sessions) +
                                       "); retry later";
    refuse(frame::Reason::busy, msg);
    return make_error(ErrorKind::busy, msg);
  }
  SESSCP_TRY(m_machine.on_receive(frame::Type::hello));
  // Dialog control is negotiated here: the initiator asks, ACCEPT confirms.
  if (!session::Machine::supported(hello->mode)) {
    std::string msg = std::string("dialog mode ") + frame::to_string(hello->mode) +
                      " is not supported; this receiver runs simplex and half-duplex sessions";
    refuse(frame::Reason::unsupported_mode, msg);
    return make_error(ErrorKind::refused, msg);
  }
  if (hello->mode != frame::DialogMode::simplex && m_opt.serve_dir.empty()) {
    // A half- or full-duplex session exists to fetch files back: there must be an export.
    std::string msg = std::string(frame::to_string(hello->mode)) +
                      " (--fetch) needs a receiver that exports a directory; this receiver was "
                      "started without --serve DIR";
    refuse(frame::Reason::unsupported_mode, msg);
    return make_error(ErrorKind::refused, msg);
  }
  SESSCP_TRY(m_machine.set_mode(hello->mode));
  frame::Accept accept;
  // --checksum is taken whenever it is offered.
  accept.features = hello->features & (frame::feature::k_all | frame::feature::k_checksum);
  accept.mode = hello->mode;
  accept.identity = "sesscp/" SESSCP_VERSION;
  // Several connections (--streams): a simplex session may have them; the
  // sender opens the others with JOIN and this cookie. Otherwise the bit is
  // not echoed and the sender uses one connection.
  unsigned streams = frame::feature::streams_of(hello->features);
  if (streams > 1 && streams <= frame::feature::k_max_streams && m_registry &&
      hello->mode == frame::DialogMode::simplex) {
    auto hub = std::make_shared<StreamHub>(streams, m_opt.timeout_ms);
    auto cookie = m_registry->add(hub);
    if (!cookie) return cookie.error();
    m_hub = std::move(hub);
    m_cookie = *cookie;
    accept.features |= frame::feature::k_streams;
    accept.cookie = m_cookie;
  }
  SESSCP_TRY(send_ctl(frame::Type::accept, frame::encode(accept)));
  m_features = accept.features;
  m_events.debug(m_peer + ": session established with " + hello->identity + " (" + frame::to_string(accept.mode) +
                 (m_hub ? ", " + std::to_string(streams) + " streams" : std::string()) + ")");
  m_conn.set_timeout(m_opt.timeout_ms);
  return {};
}

Status Session::send_ctl(frame::Type type, std::span<const std::uint8_t> frame) {
  SESSCP_TRY(m_machine.on_send(type));
  return m_conn.send(frame);
}

// Create (if missing) every directory of `rel` beneath --dir and open the
// last one. Each component is opened with openat2(RESOLVE_BENEATH |
// RESOLVE_NO_SYMLINKS) from its parent's descriptor: a symlink anywhere on
// the way (planted, or sent by SYMLINK) is refused, never followed.
Result<Fd> Session::make_dirs(std::string_view rel) {
  // A fresh descriptor of --dir (not a dup: test tools that watch the
  // directory recognise it by the path it was opened with).
  Fd cur(openat(m_dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!cur) return errno_error(ErrorKind::io, "open " + m_opt.dir, errno);
  std::size_t start = 0;
  while (start < rel.size()) {
    auto slash = rel.find('/', start);
    std::string component(rel.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start));
    start = slash == std::string_view::npos ? rel.size() : slash + 1;
    if (mkdirat(cur.get(), component.c_str(), 0755) == 0) {
      // The new entry must survive a crash as much as the files inside it.
      if (fsync(cur.get()) != 0) return errno_error(ErrorKind::io, "fsync directory of " + std::string(rel), errno);
    } else if (errno != EEXIST) {
      return errno_error(ErrorKind::cannot_create, "cannot create directory " + std::string(rel), errno);
    }
    Fd next(open_beneath(cur.get(), component, O_RDONLY | O_DIRECTORY, 0));
    if (!next)
      return errno_error(ErrorKind::cannot_create, "cannot open directory " + std::string(rel) + " (component '" +
                                                       component + "' is not a directory, or is a symlink)", errno);
    cur = std::move(next);
  }
  return cur;
}

Status Session::on_offer(std::span<const std::uint8_t> payload) {
  auto offer = frame::decode_offer(payload);
  if (!offer) return offer.error();
  if (auto why = frame::check_path(offer->name); !why.empty()) {
    m_conn.send_abort(frame::Reason::bad_name, why);
    return make_error(ErrorKind::refused, "refused name '" + offer->name + "': " + why);
  }
  if (m_opt.max_size && offer->size > m_opt.max_size) {
    std::string why = "file of " + std::to_string(offer->size) + " bytes exceeds the receiver's --max-size " +
                      std::to_string(m_opt.max_size);
    m_conn.send_abort(frame::Reason::too_large, why);
    return make_error(ErrorKind::refused, "refused " + offer->name + ": " + why);
  }
  if (m_files.size() >= k_max_planned_files)
    return make_error(ErrorKind::protocol, "more than " + std::to_string(k_max_planned_files) + " files offered ahead");
  // The file's directory, created beneath --dir as needed; consecutive
  // files of one directory share its descriptor.
  auto slash = offer->name.find_last_of('/');
  std::string parent = slash == std::string::npos ? "" : offer->name.substr(0, slash);
  if (!m_parent || m_parent_path != parent) {
    auto dir = make_dirs(parent);
    if (!dir) return dir.error();
    m_parent = std::make_shared<const Fd>(std::move(*dir));
    m_parent_path = parent;
  }
  std::string dir_path = parent.empty() ? m_opt.dir : "/proc/self/fd/" + std::to_string(m_parent->get());
  auto file = std::make_unique<IncomingFile>(m_parent, dir_path, m_opt, m_umask, m_events, m_conn, m_small_writer);
  file->set_features(m_features & frame::feature::k_repair, m_features & frame::feature::k_checksum);
  auto resume = file->open(*offer);
  if (!resume) {
    file->report().name = offer->name;
    m_files.push_back(std::move(file)); // reported with the others when the session ends
    return resume.error();
  }
  if (m_hub && resume->status != frame::ResumeStatus::complete) {
    // With extra streams, the file takes their DATA before the sender can
    // have the RESUME that lets it send any.
    file->begin(*resume);
    m_files.push_back(std::move(file));
    update_target();
    return send_ctl(frame::Type::resume, frame::encode(*resume));
  }
  // Sent at once, not queued (Conn::send_later): the sender waits for it to
  // send the file's data, and holding RESUMEs until this side ran out of
  // input made the two sides take turns; the receiver then found the socket
  // quiet more often and committed small files in batches of a few, at
  // 15-20x the disk writes (measured with bench/manyfiles.sh).
  SESSCP_TRY(send_ctl(frame::Type::resume, frame::encode(*resume)));
  if (resume->status == frame::ResumeStatus::complete) {
    m_events.file_report(false, file->report());
    return {};
  }
  file->begin(*resume);
  m_files.push_back(std::move(file));
  return {};
}

Status Session::on_mkdir(std::span<const std::uint8_t> payload) {
  auto m = frame::decode_mkdir(payload);
  if (!m) return m.error();
  if (auto why = frame::check_path(m->path); !why.empty()) {
    m_conn.send_abort(frame::Reason::bad_name, why);
    return make_error(ErrorKind::refused, "refused directory name '" + m->path + "': " + why);
  }
  auto dir = make_dirs(m->path);
  if (!dir) return dir.error();
  // Files must go in while it is sent; its own mode is applied at release.
  struct stat st{};
  if (fstat(dir->get(), &st) == 0 && (st.st_mode & 0700) != 0700) fchmod(dir->get(), (st.st_mode & 07777) | 0700);
  if (m_dirs.size() >= (1u << 20)) return make_error(ErrorKind::protocol, "too many directories in one session");
  m_dirs.push_back(*m);
  return {};
}

Status Session::on_symlink(std::span<const std::uint8_t> payload) {
  auto m = frame::decode_symlink(payload);
  if (!m) return m.error();
  if (auto why = frame::check_path(m->path); !why.empty()) {
    m_conn.send_abort(frame::Reason::bad_name, why);
    return make_error(ErrorKind::refused, "refused link name '" + m->path + "': " + why);
  }
  auto slash = m->path.find_last_of('/');
  std::string leaf = slash == std::string::npos ? m->path : m->path.substr(slash + 1);
  auto dir = slash == std::string::npos ? make_dirs("") : make_dirs(std::string_view(m->path).substr(0, slash));
  if (!dir) return dir.error();
  // The target is text to store, never a path this side resolves. Made
  // under a temporary name and renamed over the old entry, atomically.
  struct stat st{};
  if (fstatat(dir->get(), leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
    return make_error(ErrorKind::cannot_create, m->path + " exists and is a directory, not a link");
  std::string tmp = leaf + ".sesscp.publish";
  unlinkat(dir->get(), tmp.c_str(), 0);
  if (symlinkat(m->target.c_str(), dir->get(), tmp.c_str()) != 0)
    return errno_error(ErrorKind::cannot_create, "cannot create link " + m->path, errno);
  if (renameat(dir->get(), tmp.c_str(), dir->get(), leaf.c_str()) != 0) {
    int err = errno;
    unlinkat(dir->get(), tmp.c_str(), 0);
    return errno_error(ErrorKind::cannot_create, "cannot create link " + m->path, err);
  }
  timespec times[2] = {{0, UTIME_OMIT},
                       {static_cast<time_t>(m->mtime_ns / 1'000'000'000), static_cast<long>(m->mtime_ns % 1'000'000'000)}};
  if (m->mtime_ns >= 0) utimensat(dir->get(), leaf.c_str(), times, AT_SYMLINK_NOFOLLOW);
  return {};
}

// Group commit of small files: every file's data and metadata durable, then
// their names published and durable, then FILE_DONE for each. A large batch
// takes one syncfs for each step; a small one an fdatasync per file (run on a
// few threads at once, so ext4's journal commits them together) and an fsync
// per directory. Measured on this project's shared disk: syncfs ~50 ms a
// call, fdatasync ~2.4 ms each with 8 in parallel; committing whenever the
// socket was momentarily empty cost two flushes per file.
// Every file of the batch was written (Committer waits for it).
Status make_batch_durable(int root_fd, const std::string& root_path, std::vector<std::unique_ptr<IncomingFile>>& batch) {
  bool whole_fs = batch.size() >= k_syncfs_batch;
  if (whole_fs) {
    if (syncfs(root_fd) != 0) return errno_error(ErrorKind::io, "syncfs " + root_path, errno);
  } else {
    std::atomic<std::size_t> next{0};
    std::mutex mutex;
    std::optional<Error> failed;
    auto work = [&] {
      for (std::size_t i; (i = next++) < batch.size();)
        if (auto st = batch[i]->sync_data(); !st) {
          std::lock_guard lock(mutex);
          if (!failed) failed = st.error();
        }
    };
    std::vector<std::thread> pool;
    for (std::size_t t = 1; t < std::min<std::size_t>(k_sync_threads, batch.size()); ++t) pool.emplace_back(work);
    work();
    for (auto& t : pool) t.join();
    if (failed) return *failed;
  }
  std::vector<std::pair<dev_t, ino_t>> dirs;
  for (auto& f : batch) {
    SESSCP_TRY(f->publish_small());
    if (whole_fs) continue;
    struct stat st{};
    if (fstat(f->dir_fd(), &st) != 0) return errno_error(ErrorKind::io, "stat directory", errno);
    if (std::find(dirs.begin(), dirs.end(), std::make_pair(st.st_dev, st.st_ino)) != dirs.end()) continue;
    dirs.emplace_back(st.st_dev, st.st_ino);
    SESSCP_TRY(f->sync_dir());
  }
  if (whole_fs && syncfs(root_fd) != 0) return errno_error(ErrorKind::io, "syncfs " + root_path, errno);
  return {};
}

// Hand the batch to the committer; its FILE_DONEs go out from collect_commits.
Status Session::commit_batch() {
  if (!m_batch.empty()) {
    if (!m_committer) m_committer.emplace(m_dir_fd, m_opt.dir);
    m_committer->submit(std::move(m_batch));
    m_batch.clear();
  }
  return {};
}

// Confirm the batches the committer finished, in order; with `wait`, all of
// them, after waiting for the ones still being committed.
Status Session::collect_commits(bool confirm, bool wait) {
  if (!m_committer) return {};
  if (wait) m_committer->drain();
  while (auto done = m_committer->take_done()) {
    if (!done->second) return done->second.error();
    for (auto& f : done->first) {
      if (confirm) {
        SESSCP_TRY(m_machine.on_send(frame::Type::file_done));
        SESSCP_TRY(f->send_file_done());
      } else {
        f->report().state = FileReport::State::complete;
      }
      m_events.file_report(false, f->report());
    }
  }
  return {};
}

// The front file's major sync point: journaled files at once (after the
// small files before them, so FILE_DONEs stay in order), small ones into the
// batch.
Status Session::finish_front() {
  auto file = std::move(m_files.front());
  m_files.pop_front();
  // No stream may hold it past this point (it is done, or the session ends).
  update_target();
  if (file->small()) {
    SESSCP_TRY(file->prepare_small());
    if (m_batch.empty()) m_batch_start = Clock::now();
    m_batch.push_back(std::move(file));
    if (m_batch.size() >= k_max_batch) SESSCP_TRY(commit_batch());
    return {};
  }
  SESSCP_TRY(commit_batch());
  SESSCP_TRY(collect_commits(true, true));
  SESSCP_TRY(m_machine.on_send(frame::Type::file_done));
  auto status = file->finish_file();
  if (!status) {
    m_files.push_front(std::move(file));
    return status;
  }
  m_events.file_report(false, file->report());
  return {};
}

Status Session::apply_directory_metadata() {
  // Deepest first: setting a child's metadata touches its parent's mtime.
  for (auto it = m_dirs.rbegin(); it != m_dirs.rend(); ++it) {
    auto dir = make_dirs(it->path);
    if (!dir) return dir.error();
    fchmod(dir->get(), it->mode_bits & 07777 & ~m_umask);
    timespec times[2] = {{0, UTIME_OMIT},
                         {static_cast<time_t>(it->mtime_ns / 1'000'000'000),
                          static_cast<long>(it->mtime_ns % 1'000'000'000)}};
    if (it->mtime_ns >= 0 && futimens(dir->get(), times) != 0)
      return errno_error(ErrorKind::io, "set mtime of " + it->path, errno);
  }
  m_dirs.clear();
  return {};
}

// Negotiated release: accepted only when nothing offered is unfinished.
Status Session::on_release() {
  if (!m_files.empty()) {
    std::string why = std::to_string(m_files.size()) + " offered file(s) not finished";
    m_events.debug(m_peer + ": release refused: " + why);
    return send_ctl(frame::Type::not_finished, frame::encode(frame::NotFinished{why}));
  }
  SESSCP_TRY(commit_batch());
  SESSCP_TRY(collect_commits(true, true));
  SESSCP_TRY(apply_directory_metadata());
  if (syncfs(m_dir_fd) != 0) return errno_error(ErrorKind::io, "syncfs " + m_opt.dir, errno);
  SESSCP_TRY(send_ctl(frame::Type::release_ack, frame::encode_empty(frame::Type::release_ack)));
  m_conn.shutdown_write();
  return {};
}

// Half-duplex: the peer gives the data token, at its major sync point:
// everything it sent must be confirmed already. The initiator's turn to
// receive ends here; a responder now sends what the request names.
Status Session::on_give_token(std::span<const std::uint8_t> payload) {
  auto give = frame::decode_give_token(payload);
  if (!give) return give.error();
  if (!m_files.empty() || !m_batch.empty() || (m_committer && !m_committer->all_taken()))
    return make_error(ErrorKind::protocol, "GIVE_TOKEN while files it sent are unconfirmed: the data token passes "
                                           "only at a major sync point");
  SESSCP_TRY(apply_directory_metadata());
  if (m_machine.role() == session::Role::initiator) return {};
  if (m_serve_fd < 0)
    return make_error(ErrorKind::internal, "half-duplex session without an export");
  m_events.info(m_peer + ": data token received; sending " + std::to_string(give->fetch.size()) + " requested path(s) from " +
                m_opt.serve_dir);
  return serve(m_conn, m_machine, give->fetch, Dialog::half_duplex);
}

// Send the requested paths from the export (--serve) through the serving
// turn the caller wired in (dialog::wire).
Status Session::serve(Conn& conn, session::Machine& machine, const std::vector<frame::FetchPath>& fetch, Dialog dialog) {
  if (!m_opt.serve_turn) return make_error(ErrorKind::internal, "--serve without a sending engine (dialog::wire)");
  TurnOptions turn;
  turn.dir = m_opt.serve_dir;
  turn.serve_fd = m_serve_fd;
  turn.timeout_ms = m_opt.timeout_ms;
  turn.bwlimit = m_opt.serve_bwlimit;
  turn.stop = m_opt.stop;
  return m_opt.serve_turn(conn, machine, turn, fetch, m_events, dialog);
}

// One step of the session: finish what can be finished, then read a frame.
Status Session::next_step() {
  if (m_hub) SESSCP_TRY(poll_streams());
  SESSCP_TRY(collect_commits(true, false));
  IncomingFile* cur = m_files.empty() ? nullptr : m_files.front().get();
  if (cur) {
    SESSCP_TRY(cur->flush_confirmed());
    if (cur->ready_to_finish()) return finish_front();
  }
  // Commit the small files once the sender has had nothing more for us for
  // a moment: committing whenever the socket is momentarily empty would cost
  // two syncfs per file when the receiver keeps up with the sender.
  if (!m_batch.empty()) {
    auto age = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - m_batch_start).count();
    auto ready = m_conn.wait_readable(-1, static_cast<int>(std::max<long long>(0, k_batch_linger_ms - age)));
    if (!ready && ready.error().kind != ErrorKind::timeout) return ready.error();
    if (!ready || !*ready) return commit_batch();
  }
  // Wake for the socket, the front file's syncer, or the committer (one
  // descriptor can be waited on with the socket: the other is polled).
  int wake = cur ? cur->wake_fd() : -1;
  bool committing = m_committer && m_committer->busy();
  if (committing && wake < 0) wake = m_committer->wake_fd();
  auto ready = m_conn.wait_readable(wake, committing && wake != m_committer->wake_fd() ? 5 : m_opt.timeout_ms,
                                    m_hub ? m_hub->wake_fd() : -1);
  if (!ready && committing && ready.error().kind == ErrorKind::timeout) return {};
  if (!ready) return ready.error();
  if (!*ready) return {};
  auto header = m_conn.read_header(cur ? cur->max_data() : 0);
  if (!header) return header.error();
  SESSCP_TRY(m_machine.on_receive(header->type));
  if (header->type == frame::Type::data) {
    if (!cur) return make_error(ErrorKind::protocol, "DATA with no file open");
    return cur->on_data(*header);
  }
  auto payload = m_conn.read_control_payload(*header);
  if (!payload) return payload.error();
  switch (header->type) {
  case frame::Type::sync:
  case frame::Type::file_end:
    if (!cur) return make_error(ErrorKind::protocol, std::string(frame::to_string(header->type)) + " with no file open");
    return header->type == frame::Type::sync ? cur->on_sync(*payload) : cur->on_file_end(*payload);
  case frame::Type::source_hashes:
    if (!cur) return make_error(ErrorKind::protocol, "SOURCE_HASHES with no file open");
    return cur->on_source_hashes(*payload);
  case frame::Type::offer: return on_offer(*payload);
  case frame::Type::mkdir: return on_mkdir(*payload);
  case frame::Type::symlink: return on_symlink(*payload);
  case frame::Type::release: return on_release();
  case frame::Type::give_token: return on_give_token(*payload);
  case frame::Type::please_token: return {}; // recorded by the machine; a receiving side has nothing to grant
  case frame::Type::abort: {
    auto abort = frame::decode_abort(*payload);
    if (!abort) return abort.error();
    return make_error(frame::error_kind_for(abort->reason),
                      std::string(m_machine.role() == session::Role::initiator ? "receiver aborted: " : "sender aborted: ") + frame::to_string(abort->reason) +
                          (abort->message.empty() ? "" : ": " + abort->message));
  }
  default:
    return make_error(ErrorKind::protocol, std::string("unexpected ") + frame::to_string(header->type));
  }
}

// The session broke: keep every verified chunk and every verified small
// file, tell the sender why (unless it is the one who left), and report.
void Session::end_files(const Error& error) {
  auto kind = error.kind;
  // (Refusals were answered where they were decided.)
  if (kind != ErrorKind::disconnected && kind != ErrorKind::timeout && kind != ErrorKind::protocol &&
      kind != ErrorKind::refused) {
    m_conn.send_abort(kind == ErrorKind::interrupted ? frame::Reason::shutting_down : frame::reason_for(kind),
                      error.message);
    // The sender may be mid-chunk: let it read the ABORT rather than a reset.
    if (kind != ErrorKind::interrupted) m_conn.linger_after_abort(2000);
  }
  (void)commit_batch();
  if (auto committed = collect_commits(false, true); !committed)
    m_events.info(m_peer + ": could not keep verified small files: " + committed.error().message);
  m_batch.clear();
  m_committer.reset();
  auto state = exit_code_for(kind) == exit_code::k_temp_fail ? FileReport::State::interrupted
                                                             : FileReport::State::failed;
  for (auto& f : m_files) {
    f->save_progress();
    f->report().state = state;
    m_events.file_report(false, f->report());
  }
  m_files.clear();
}

Status Session::serve_files() {
  Status status;
  while (status && m_machine.state() != session::State::closed) status = next_step();
  // The streams stop before the files they wrote are checkpointed.
  close_streams();
  if (!status) end_files(status.error());
  return status;
}

void Session::close_streams() {
  if (!m_hub) return;
  m_hub->close();
  if (m_registry) m_registry->remove(m_cookie);
  m_events.debug(m_peer + ": " + std::to_string(m_hub->joined()) + " extra stream(s) of " +
                 std::to_string(m_hub->streams()) + " closed");
  m_hub.reset();
}

void Session::update_target() {
  if (!m_hub) return;
  IncomingFile* target = nullptr;
  for (auto& f : m_files)
    if (f->streamable()) {
      target = f.get();
      break;
    }
  m_hub->set_target(target);
}

Status Session::poll_streams() {
  std::vector<std::uint64_t> resends;
  if (auto error = m_hub->take(resends)) return *error;
  for (auto chunk : resends) {
    m_events.debug(m_peer + ": chunk " + std::to_string(chunk) + " failed its hash on an extra stream; asking again");
    SESSCP_TRY(m_conn.send(frame::encode(frame::Resend{chunk})));
  }
  return {};
}

Status Session::serve_stream() {
  auto join = *m_join;
  auto hub = m_registry ? m_registry->find(join.cookie) : nullptr;
  if (!hub) {
    std::string why = "JOIN for an unknown session (it has ended, or never existed)";
    m_conn.send_abort(frame::Reason::unknown_session, why);
    m_conn.linger_after_abort(1000);
    return make_error(ErrorKind::refused, why);
  }
  if (auto why = hub->join(join.index, m_conn.fd()); !why.empty()) {
    // A JOIN with the right cookie but out of place: the session's peer broke the protocol.
    m_conn.send_abort(frame::Reason::protocol, why);
    m_events.info(m_peer + ": refused: " + why);
    hub->fail(make_error(ErrorKind::protocol, why));
    return make_error(ErrorKind::protocol, why);
  }
  if (m_is_stream) m_is_stream->store(true);
  m_conn.set_timeout(m_opt.timeout_ms);
  // Confirm the JOIN: the sender sends no DATA on a stream before this.
  frame::Accept accept;
  accept.features = frame::feature::k_all | frame::feature::k_streams;
  accept.identity = "sesscp/" SESSCP_VERSION;
  accept.cookie = join.cookie;
  if (auto sent = m_conn.send(frame::encode(accept)); !sent) {
    hub->leave(m_conn.fd());
    return sent.error();
  }
  m_events.debug(m_peer + ": stream " + std::to_string(join.index + 1) + " of " + std::to_string(hub->streams()) +
                 " joined its session");
  auto status = read_stream(*hub);
  bool ending = hub->closed();
  if (!status && !ending) {
    if (status.error().kind == ErrorKind::protocol) m_conn.send_abort(frame::Reason::protocol, status.error().message);
    hub->fail(make_error(status.error().kind, "stream " + std::to_string(join.index + 1) + ": " + status.error().message));
  }
  hub->leave(m_conn.fd());
  if (ending) return {};
  return status;
}

// An extra stream carries DATA only, for the session's journaled file; it
// waits for the next frame as long as the session lives (the first
// connection's deadlines detect a dead peer), and ends with the session.
Status Session::read_stream(StreamHub& hub) {
  AlignedBuffer buf;
  for (;;) {
    auto ready = m_conn.wait_readable(hub.closing_fd(), m_opt.timeout_ms);
    if (hub.closed()) return {};
    if (!ready && ready.error().kind == ErrorKind::timeout) continue; // idle between files
    if (!ready) return ready.error();
    if (!*ready) return {};
    auto header = m_conn.read_header(frame::k_data_prefix + frame::k_max_chunk_size);
    if (!header) return header.error();
    if (header->type != frame::Type::data) {
      if (header->type == frame::Type::abort) {
        auto payload = m_conn.read_control_payload(*header);
        if (!payload) return payload.error();
        auto abort = frame::decode_abort(*payload);
        if (!abort) return abort.error();
        return make_error(frame::error_kind_for(abort->reason), std::string("sender aborted: ") +
                                                                    frame::to_string(abort->reason) + ": " + abort->message);
      }
      return make_error(ErrorKind::protocol, std::string(frame::to_string(header->type)) +
                                                 " on an extra stream: only DATA travels there");
    }
    IncomingFile* file = hub.acquire();
    if (!file) {
      if (hub.closed()) return {};
      return make_error(ErrorKind::protocol, "DATA on an extra stream while no file larger than one chunk is open");
    }
    auto resend = file->on_stream_data(m_conn, *header, buf);
    hub.release();
    if (!resend) return resend.error();
    if (*resend) hub.resend(**resend);
  }
}

Status Session::run_turn() {
  Status status;
  while (status && !m_machine.holds_token() && m_machine.state() != session::State::closed) status = next_step();
  if (status && m_machine.state() == session::State::closed)
    status = make_error(ErrorKind::protocol, "the session ended during the receiver's turn");
  if (!status) {
    end_files(status.error());
    if (status.error().kind == ErrorKind::protocol) m_conn.send_abort(frame::Reason::protocol, status.error().message);
  }
  return status;
}

Status Session::run_direction() {
  auto status = serve_files();
  if (!status && status.error().kind == ErrorKind::protocol) m_conn.send_abort(frame::Reason::protocol, status.error().message);
  return status;
}

// Full-duplex, the responder: read the initiator's FETCH, then receive its
// files and send the requested ones at once (docs/PROTOCOL.md, "Full-duplex").
Status Session::serve_full_duplex() {
  auto header = m_conn.read_header(0);
  if (!header) return header.error();
  auto payload = m_conn.read_control_payload(*header);
  if (!payload) return payload.error();
  if (header->type == frame::Type::abort) {
    auto abort = frame::decode_abort(*payload);
    if (!abort) return abort.error();
    return make_error(frame::error_kind_for(abort->reason), std::string("sender aborted: ") +
                                                                frame::to_string(abort->reason) + ": " + abort->message);
  }
  auto broke = [&](const Error& e) {
    m_conn.send_abort(frame::Reason::protocol, e.message);
    return e;
  };
  if (header->type != frame::Type::fetch)
    return broke(make_error(ErrorKind::protocol, std::string("expected FETCH first in a full-duplex session, got ") +
                                                     frame::to_string(header->type)));
  if (auto legal = m_machine.on_receive(header->type); !legal) return broke(legal.error());
  auto fetch = frame::decode_fetch(*payload);
  if (!fetch) return broke(fetch.error());
  m_events.info(m_peer + ": full-duplex: receiving into " + m_opt.dir + " while sending " +
                std::to_string(fetch->paths.size()) + " requested path(s) from " + m_opt.serve_dir);
  auto send = [&](Conn& c) -> Status {
    auto machine = session::Machine::direction(session::Role::initiator);
    return serve(c, machine, fetch->paths, Dialog::full_duplex);
  };
  auto receive = [&](Conn& c) -> Status {
    auto machine = session::Machine::direction(session::Role::responder);
    Session direction(m_dir_fd, m_opt, m_umask, m_events, c, machine);
    direction.m_peer = m_peer;
    return direction.run_direction();
  };
  return duplex::run(m_conn, send, receive, m_opt.timeout_ms);
}

Status Session::run() {
  // Authenticate the peer (TLS), then establish the session.
  auto status = authenticate();
  if (!status) {
    m_events.info(m_peer + ": refused: " + status.error().message);
    return status;
  }
  status = establish();
  if (status && m_machine.mode() == frame::DialogMode::full_duplex) {
    // Both directions at once; the relay has told the peer of any failure.
    status = serve_full_duplex();
    if (!status) m_events.info(m_peer + ": session ended: " + status.error().message);
    return status;
  }
  if (status && m_join) {
    // An extra connection of another session: its end is that session's business.
    status = serve_stream();
    if (!status && status.error().kind == ErrorKind::refused) m_events.info(m_peer + ": refused: " + status.error().message);
    else if (!status) m_events.debug(m_peer + ": stream ended: " + status.error().message);
    return status;
  }
  // Serve files until release.
  if (status) status = serve_files();
  if (!status && status.error().kind == ErrorKind::protocol)
    m_conn.send_abort(frame::Reason::protocol, status.error().message);
  if (!status) m_events.info(m_peer + ": session ended: " + status.error().message);
  return status;
}

} // namespace

Status receive_turn(Conn& conn, session::Machine& machine, const TurnOptions& turn, Events& events, Dialog dialog) {
  ReceiveOptions options;
  options.dir = turn.dir;
  options.timeout_ms = turn.timeout_ms;
  options.stop = turn.stop;
  options.verify_resume = turn.verify_resume;
  options.turn_features = turn.features;
  Fd dir(open(options.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return errno_error(ErrorKind::cannot_create, "cannot open directory " + options.dir, errno);
  unsigned mask = ::umask(0);
  ::umask(mask);
  Session session(dir.get(), options, mask, events, conn, machine);
  return dialog == Dialog::full_duplex ? session.run_direction() : session.run_turn();
}

Result<Receiver> Receiver::create(const ReceiveOptions& options, Events& events) {
  Fd dir(open(options.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return errno_error(ErrorKind::cannot_create, "cannot open directory " + options.dir, errno);
  if (faccessat(dir.get(), ".", W_OK, AT_EACCESS) != 0)
    return errno_error(ErrorKind::cannot_create, "cannot write to " + options.dir, errno);
  Fd serve;
  if (!options.serve_dir.empty()) {
    serve = Fd(open(options.serve_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!serve) return errno_error(ErrorKind::usage, "cannot open --serve directory " + options.serve_dir, errno);
  }
  auto listener = net::listen_tcp(options.listen);
  if (!listener) return listener.error();
  // Each session may hold a few hundred descriptors (pipelined offers and a
  // batch of small files, docs/PROTOCOL.md): take what the hard limit allows.
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  unsigned mask = ::umask(0);
  ::umask(mask);
  std::optional<tls::Context> tls;
  if (!options.tls.insecure) {
    auto ctx = tls::Context::create(options.tls, true);
    if (!ctx) return ctx.error();
    tls.emplace(std::move(*ctx));
  }
  return Receiver(options, events, std::move(*listener), std::move(dir), std::move(serve), mask, std::move(tls),
                  std::make_shared<StreamRegistry>());
}

std::string Receiver::address() const { return net::local_name(m_listener.get()); }

Status Receiver::handle_connection(Fd socket) {
  Session session(m_dir.get(), m_opt, m_umask, m_events, m_tls ? &*m_tls : nullptr, std::move(socket), m_serve.get(),
                  m_streams.get());
  return session.run();
}

std::string Receiver::security() const {
  return m_tls ? m_tls->describe() : "PLAINTEXT (--insecure): data is neither encrypted nor authenticated";
}

Status Receiver::serve() {
  struct Worker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
    std::shared_ptr<std::atomic<bool>> stream; // an extra connection of a session (not a session)
    bool join_only = false;                    // accepted only to join a session (a HELLO is refused)
  };
  std::list<Worker> workers;
  auto sessions = [&] {
    return std::count_if(workers.begin(), workers.end(),
                         [](const Worker& w) { return !w.join_only && !w.stream->load(); });
  };
  // Connections accepted only to join, not yet joined.
  auto pending_joins = [&] {
    return static_cast<std::size_t>(std::count_if(workers.begin(), workers.end(), [](const Worker& w) {
      return w.join_only && !w.stream->load() && !w.done->load();
    }));
  };
  auto reap = [&](bool all) {
    for (auto it = workers.begin(); it != workers.end();) {
      if (all || it->done->load()) { it->thread.join(); it = workers.erase(it); }
      else ++it;
    }
  };
  const tls::Context* tls_ptr = m_tls ? &*m_tls : nullptr;
  // With --once, the first connection is the session served; later ones may
  // only join it as its extra streams (--streams), and the loop ends with it.
  std::shared_ptr<std::atomic<bool>> primary_done;
  auto primary_status = std::make_shared<Status>();
  Fd primary_wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  while (!(m_opt.stop && m_opt.stop->load())) {
    if (primary_done && primary_done->load()) break;
    pollfd p[2] = {{m_listener.get(), POLLIN, 0}, {primary_wake.get(), POLLIN, 0}};
    if (poll(p, 2, 200) <= 0 || !(p[0].revents & POLLIN)) { reap(false); continue; }
    Fd sock(accept4(m_listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!sock) continue;
    net::tune_socket(sock.get());
    reap(false);
    bool join_only = m_opt.once && primary_done;
    // At the limit, a connection is still taken while sessions wait for
    // their extra streams (--streams), but only to JOIN one of them.
    if (!m_opt.once && sessions() >= m_opt.max_sessions && m_streams->outstanding() > pending_joins()) join_only = true;
    if (!m_opt.once && !join_only && sessions() >= m_opt.max_sessions) {
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
    auto stream = std::make_shared<std::atomic<bool>>(false);
    bool primary = m_opt.once && !primary_done;
    auto session = std::make_unique<Session>(m_dir.get(), m_opt, m_umask, m_events, tls_ptr, std::move(sock),
                                             m_serve.get(), m_streams.get(), join_only, stream);
    std::shared_ptr<Status> status = primary ? primary_status : nullptr;
    int wake = primary ? primary_wake.get() : -1;
    if (primary) primary_done = done;
    workers.push_back({std::thread([session = std::move(session), done, status, wake] {
                         auto result = session->run();
                         if (status) *status = result;
                         done->store(true);
                         std::uint64_t one = 1;
                         if (wake >= 0) (void)!write(wake, &one, sizeof one);
                       }),
                       done, stream, join_only});
  }
  reap(true);
  return primary_done ? *primary_status : Status{};
}

} // namespace sesscp
