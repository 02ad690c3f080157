#include "core/send/sender.h"

#include "base/file_io.h"
#include "checkpoint/journal.h"
#include "checkpoint/verify.h"
#include "base/aligned.h"
#include "core/conn.h"
#include "core/duplex.h"
#include "core/frame.h"
#include "core/session_state.h"
#include "core/source.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace sesscp {

namespace {

using Clock = std::chrono::steady_clock;
using checkpoint::chunk_count;
using checkpoint::chunk_length;

std::string hostname() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

// An error the peer (`who`: the receiver, or in a half-duplex turn the
// sender) reported in ABORT or REFUSE.
Error remote_error(frame::Reason reason, const std::string& message, const char* who = "receiver") {
  auto kind = frame::error_kind_for(reason);
  // The receiver's disk or I/O trouble is not ours: the state is saved and
  // the same command resumes once the receiver is fixed.
  if (kind == ErrorKind::io || kind == ErrorKind::no_space) kind = ErrorKind::interrupted;
  return make_error(kind, std::string(who) + ": " + std::string(frame::to_string(reason)) +
                              (message.empty() ? "" : ": " + message));
}

Error unexpected(Conn& conn, frame::Type got, const char* expected, const char* who = "receiver") {
  std::string msg = std::string("expected ") + expected + ", got " + frame::to_string(got);
  conn.send_abort(frame::Reason::protocol, msg);
  return make_error(ErrorKind::protocol, std::string(who) + " broke the protocol: " + msg);
}

// Sleep as needed to keep the average rate under `limit` bytes per second.
void throttle(std::uint64_t limit, std::uint64_t bytes, Clock::time_point start,
              const std::atomic<bool>* stop) {
  if (limit == 0) return;
  auto due = start + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(static_cast<double>(bytes) / static_cast<double>(limit)));
  while (Clock::now() < due && !(stop && stop->load()))
    std::this_thread::sleep_for(std::min<Clock::duration>(due - Clock::now(), std::chrono::milliseconds(50)));
}

// What a send is made of, kept across reconnections: the entries, one report
// per entry, and which entries an earlier session already finished.
struct Plan {
  std::vector<SourceEntry> entries;
  std::vector<FileReport> reports;
  std::vector<char> done;
  std::vector<char> offered;  // offered at least once (worth a summary line)
  std::vector<char> resumed;  // the first resume point is recorded
  std::vector<Clock::time_point> first_offer; // when each entry was first offered (its report's seconds)
  // Half-duplex turn: a file entry is opened as `beneath_rel[i]` beneath the
  // descriptor `beneath_fd[i]` (no symlink followed) when that is >= 0.
  std::vector<int> beneath_fd;
  std::vector<std::string> beneath_rel;
  int reconnects = 0;
  std::uint64_t bytes = 0;    // file bytes sent over every attempt
  bool fetched = false;       // half-duplex: the fetch turn completed
  std::size_t fetched_files = 0, fetched_already = 0; // files of the fetch turns: received, already complete
  std::uint64_t fetched_bytes = 0;                     // file bytes received in them
  Clock::time_point start = Clock::now();
  std::size_t files() const {
    return static_cast<std::size_t>(std::count_if(entries.begin(), entries.end(), [](const SourceEntry& e) {
      return e.kind == SourceEntry::Kind::file;
    }));
  }
};

// Passes every event on, and counts the files a fetch turn received.
class FetchEvents : public Events {
public:
  FetchEvents(Events& out, Plan& plan) : m_out(out), m_plan(plan) {}
  void info(const std::string& line) override { m_out.info(line); }
  void debug(const std::string& line) override { m_out.debug(line); }
  void progress(const std::string& name, std::uint64_t done, std::uint64_t total) override {
    m_out.progress(name, done, total);
  }
  void file_report(bool sending, const FileReport& r) override {
    if (!sending) {
      m_plan.fetched_files += r.state == FileReport::State::complete;
      m_plan.fetched_already += r.state == FileReport::State::already_complete;
      m_plan.fetched_bytes += r.bytes;
    }
    m_out.file_report(sending, r);
  }
  void phase(const std::string& name, Phase phase, const std::string& detail) override {
    m_out.phase(name, phase, detail);
  }
  void reconnecting(int attempt, int limit, double delay_s, const std::string& reason) override {
    m_out.reconnecting(attempt, limit, delay_s, reason);
  }
  void resumed(const std::string& name, std::uint64_t offset, std::uint64_t size) override {
    m_out.resumed(name, offset, size);
  }
  void offered(const std::string& name, std::uint64_t size) override { m_out.offered(name, size); }
  void verify_progress(const std::string& name, std::uint64_t done, std::uint64_t total) override {
    m_out.verify_progress(name, done, total);
  }

private:
  Events& m_out;
  Plan& m_plan;
};

// OFFERs sent ahead of the data, so many small files do not cost a round
// trip each; and files sent (FILE_END) whose FILE_DONE may come later.
constexpr std::size_t k_offer_pipeline = 32;
// Three of the receiver's batches (512 files each): a full batch, not a
// timer, is what normally triggers its commit, and while one batch is being
// made durable (two syncfs, ~20-50 ms here) the next ones keep arriving.
// With 640 (one batch and a quarter) the sender stalled at every commit:
// bench/manyfiles.sh 10000 4, same run: 640 -> 1.19x rsync's time, 1100 ->
// 1.11x, 1536 -> 1.04x. Each costs the receiver a descriptor until then.
constexpr std::size_t k_max_unfinished = 1536;
// A sync point at least this often (when data was sent since the last):
// on a slow link window/4 can take minutes, and progress and the resume
// point would move only that often. A little under a second, so that a
// sender paced by --bwlimit (a chunk every 500 ms at 2M) does not miss the
// second by microseconds and wait for the next chunk.
constexpr auto k_sync_period = std::chrono::milliseconds(900);
// A receiver that keeps answering NOT_FINISHED is given this many tries.
constexpr int k_release_attempts = 10;

// The extra connections of a session (--streams N, docs/PROTOCOL.md
// "Several connections") and one writer thread per connection. While a file
// larger than one chunk is active, each writer takes the next chunk index
// from a shared counter (never at or past the window's limit), reads and
// hashes that chunk itself and writes it as one DATA frame on its own
// connection; the session's thread takes the same counter for the first
// connection, and learns through an eventfd which chunks are fully written,
// so that a SYNC never covers a chunk still on its way into a socket. A
// writer that fails (or reads anything from the receiver, which only ever
// sends ABORT there) records the error, which ends the session.
class StreamPool {
public:
  StreamPool(std::vector<std::unique_ptr<Conn>> conns, std::uint64_t bwlimit, const std::atomic<bool>* stop)
      : m_conns(std::move(conns)), m_bwlimit(bwlimit), m_stop_flag(stop), m_wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    for (std::size_t i = 0; i < m_conns.size(); ++i) m_threads.emplace_back([this, i] { run(i); });
  }
  StreamPool(const StreamPool&) = delete;
  StreamPool& operator=(const StreamPool&) = delete;
  ~StreamPool() {
    {
      std::lock_guard lock(m_mutex);
      m_stop = true;
      m_source = nullptr;
    }
    m_cv.notify_all();
    // Ends a write blocked on a full socket at once.
    for (auto& c : m_conns) ::shutdown(c->fd(), SHUT_RDWR);
    for (auto& t : m_threads) t.join();
  }

  int wake_fd() const { return m_wake.get(); }
  std::size_t size() const { return m_conns.size(); }

  // A journaled file becomes active: chunks from `next` on may be sent, below `limit`.
  void start_file(const SourceFile* source, std::uint32_t chunk_size, std::uint64_t next, std::uint64_t limit) {
    {
      std::lock_guard lock(m_mutex);
      m_source = source;
      m_chunk_size = chunk_size;
      m_next = next;
      m_limit = limit;
      m_written.clear();
      m_bytes = 0;
    }
    m_cv.notify_all();
  }
  // The window moved (a CHECKPOINT).
  void set_limit(std::uint64_t limit) {
    {
      std::lock_guard lock(m_mutex);
      m_limit = std::max(m_limit, limit);
    }
    m_cv.notify_all();
  }
  // Every chunk of the file is written: the writers must not touch it any more.
  void end_file() {
    std::lock_guard lock(m_mutex);
    m_source = nullptr;
  }
  // The session's thread: the next chunk for the first connection, if the window has room.
  std::optional<std::uint64_t> claim() {
    std::lock_guard lock(m_mutex);
    if (!m_source || m_next >= m_limit) return std::nullopt;
    return m_next++;
  }
  bool claimable() {
    std::lock_guard lock(m_mutex);
    return m_source && m_next < m_limit;
  }
  // A chunk fully written to its socket (by the session's thread).
  void written(std::uint64_t index, const Hash128& hash, std::uint64_t len) {
    std::lock_guard lock(m_mutex);
    m_written.emplace(index, hash);
    m_bytes += len;
  }
  // The session's thread: the chunks written since the last call (moved
  // into `into`) and their bytes; a writer's error ends the session.
  Status take(std::map<std::uint64_t, Hash128>& into, std::uint64_t& bytes) {
    std::uint64_t v;
    (void)!read(m_wake.get(), &v, sizeof v);
    std::lock_guard lock(m_mutex);
    if (m_error) return *m_error;
    into.merge(m_written);
    m_written.clear();
    bytes = std::exchange(m_bytes, 0);
    return {};
  }
  // Every stream together keeps under --bwlimit.
  void pace(std::uint64_t len) { throttle(m_bwlimit, m_total += len, m_start, m_stop_flag); }

private:
  void run(std::size_t i) {
    Conn& conn = *m_conns[i];
    std::vector<std::uint8_t> buf;
    std::unique_lock lock(m_mutex);
    for (;;) {
      // Idle between files: wake now and then, never spin.
      m_cv.wait_for(lock, std::chrono::seconds(1), [&] { return m_stop || (m_source && m_next < m_limit); });
      if (m_stop) return;
      if (!m_source || m_next >= m_limit) continue;
      auto index = m_next++;
      const SourceFile* source = m_source;
      auto chunk_size = m_chunk_size;
      lock.unlock();
      auto len = chunk_length(index, chunk_size, source->size());
      if (buf.size() < len) buf.resize(len);
      std::span<std::uint8_t> chunk(buf.data(), len);
      Hash128 hash{};
      Status status = source->read_at(index * chunk_size, chunk);
      if (status) {
        hash = xxh3_128(chunk);
        status = conn.send_data({index, hash}, chunk);
      }
      // The receiver says nothing on an extra stream but ABORT.
      if (status) {
        auto ready = conn.wait_readable(-1, 0);
        if (ready && *ready) status = peer_spoke(conn);
      }
      if (status) pace(len);
      lock.lock();
      if (!status) {
        if (!m_error && !m_stop)
          m_error = make_error(status.error().kind, "stream " + std::to_string(i + 2) + ": " + status.error().message);
        poke();
        return;
      }
      m_written.emplace(index, hash);
      m_bytes += len;
      poke();
    }
  }
  static Status peer_spoke(Conn& conn) {
    auto header = conn.read_header(0);
    if (!header) return header.error();
    auto payload = conn.read_control_payload(*header);
    if (!payload) return payload.error();
    if (header->type == frame::Type::abort) {
      auto abort = frame::decode_abort(*payload);
      if (!abort) return abort.error();
      return remote_error(abort->reason, abort->message);
    }
    return make_error(ErrorKind::protocol, std::string("receiver broke the protocol: ") + frame::to_string(header->type) +
                                               " on an extra stream");
  }
  void poke() {
    std::uint64_t one = 1;
    (void)!write(m_wake.get(), &one, sizeof one);
  }

  std::vector<std::unique_ptr<Conn>> m_conns;
  const std::uint64_t m_bwlimit;
  const std::atomic<bool>* m_stop_flag;
  const Clock::time_point m_start = Clock::now();
  std::atomic<std::uint64_t> m_total{0};
  Fd m_wake;
  std::mutex m_mutex;
  std::condition_variable m_cv;
  bool m_stop = false;
  const SourceFile* m_source = nullptr;
  std::uint32_t m_chunk_size = 0;
  std::uint64_t m_next = 0, m_limit = 0;
  std::map<std::uint64_t, Hash128> m_written;
  std::uint64_t m_bytes = 0;
  std::optional<Error> m_error;
  std::vector<std::thread> m_threads; // last: they start once everything above exists
};

// One file of this session, from its OFFER to its FILE_DONE.
// Reads and hashes the active file's chunks ahead of the network thread, on
// a thread of its own, so one chunk is read from the page cache (or disk)
// and hashed while the one before is encrypted and sent. Chunks are taken
// strictly in order; a few buffers cycle between the two threads, so the
// read-ahead is bounded by them, not by the window.
class ChunkReader {
public:
  ChunkReader(const SourceFile& source, std::uint32_t chunk_size, std::uint64_t first, std::uint64_t end,
              std::size_t buffers)
      : m_source(source), m_chunk_size(chunk_size), m_first(first), m_end(end), m_slots(buffers) {
    for (auto& slot : m_slots) slot.buf.resize(chunk_size);
    m_thread = std::thread([this] { loop(); });
  }
  ~ChunkReader() {
    {
      std::lock_guard lock(m_mutex);
      m_quit = true;
    }
    m_cv.notify_all();
    m_thread.join();
  }

  struct Chunk {
    std::span<const std::uint8_t> data;
    Hash128 hash;
  };
  // Chunk `index`, the next in order after the last one taken; valid until done(index).
  Result<Chunk> take(std::uint64_t index) {
    if (index < m_first || index >= m_end) return make_error(ErrorKind::internal, "chunk read out of order");
    Slot& slot = m_slots[index % m_slots.size()];
    std::unique_lock lock(m_mutex);
    m_cv.wait(lock, [&] { return slot.full && slot.index == index; });
    if (!slot.status) return slot.status.error();
    return Chunk{{slot.buf.data(), slot.len}, slot.hash};
  }
  void done(std::uint64_t index) {
    {
      std::lock_guard lock(m_mutex);
      m_slots[index % m_slots.size()].full = false;
    }
    m_cv.notify_all();
  }

private:
  struct Slot {
    AlignedBuffer buf;
    bool full = false;
    std::uint64_t index = 0;
    std::size_t len = 0;
    Hash128 hash{};
    Status status;
  };

  void loop() {
    for (std::uint64_t i = m_first; i < m_end; ++i) {
      Slot& slot = m_slots[i % m_slots.size()];
      {
        std::unique_lock lock(m_mutex);
        m_cv.wait(lock, [&] { return m_quit || !slot.full; });
        if (m_quit) return;
      }
      auto len = static_cast<std::size_t>(chunk_length(i, m_chunk_size, m_source.size()));
      auto status = m_source.read_at(i * m_chunk_size, slot.buf.span(len));
      Hash128 hash{};
      if (status) hash = xxh3_128(slot.buf.span(len));
      {
        std::lock_guard lock(m_mutex);
        slot.full = true;
        slot.index = i;
        slot.len = len;
        slot.hash = hash;
        slot.status = status;
      }
      m_cv.notify_all();
      if (!status) return; // the network thread reports it when it gets there
    }
  }

  const SourceFile& m_source;
  std::uint32_t m_chunk_size;
  std::uint64_t m_first;
  std::uint64_t m_end;
  std::vector<Slot> m_slots;
  std::mutex m_mutex;
  std::condition_variable m_cv;
  bool m_quit = false;
  std::thread m_thread; // last: starts after every member above exists
};

// --checksum: hashes the source's chunks [0, end), the ones the receiver
// confirmed in earlier sessions, on a thread of its own while the rest is
// sent, for SOURCE_HASHES. Read like the receiver's re-verification of its
// partial (checkpoint::PartReader: no page cache), so an old source file of
// many GiB does not push the chunks being sent out of the cache.
class SourceHasher {
public:
  SourceHasher(const SourceFile& source, std::uint32_t chunk_size, std::uint64_t end)
      : m_reader(source.fd(), chunk_size, source.size()), m_path(source.path()), m_end(end),
        m_wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)), m_thread([this] { loop(); }) {}
  ~SourceHasher() {
    {
      std::lock_guard lock(m_mutex);
      m_quit = true;
    }
    m_thread.join();
  }

  // The next hashes ready (at most one frame's worth), if any.
  Result<std::optional<frame::SourceHashes>> take() {
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
  bool all_taken() {
    std::lock_guard lock(m_mutex);
    return m_taken == m_end;
  }
  int wake_fd() const { return m_wake.get(); }

private:
  void loop() {
    for (std::uint64_t first = 0; first < m_end;) {
      const auto n = std::min(m_reader.batch(), m_end - first);
      auto hashes = m_reader.hash_chunks(first, n);
      std::lock_guard lock(m_mutex);
      if (m_quit) return;
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
      first += n;
    }
  }

  checkpoint::PartReader m_reader;
  std::string m_path;
  std::uint64_t m_end;
  Fd m_wake;
  std::mutex m_mutex;
  std::deque<Hash128> m_ready;
  std::uint64_t m_taken = 0;
  std::optional<Error> m_error;
  bool m_quit = false;
  std::thread m_thread; // last: starts after every member above exists
};

struct Job {
  std::size_t entry = 0;
  std::optional<SourceFile> source;
  frame::Resume resume;
  std::uint64_t size = 0;
  bool small = false; // at most one chunk: no minor sync, the next file may follow before FILE_DONE
  std::vector<std::uint8_t> bytes; // a file within one fingerprint sample, as read for it (sent from here)
};

class Sender {
public:
  // The initiator of a session.
  Sender(const SendOptions& options, Events& events, Plan& plan)
      : m_opt(options), m_events(events), m_plan(plan), m_machine(m_own_machine), m_bytes_before(plan.bytes) {}
  // The responder's turn in a half-duplex session, over its established
  // session; or one sending direction of a full-duplex session.
  Sender(const SendOptions& options, Events& events, Plan& plan, session::Machine& machine,
         const char* peer = "sender")
      : m_opt(options), m_events(events), m_plan(plan), m_machine(machine), m_turn(true), m_peer(peer),
        m_bytes_before(plan.bytes) {}

  // Establish, push, (half-duplex) fetch, release. With --streams, the
  // extra connections come from `connect` (connected and authenticated).
  Status run(Conn& conn, std::function<Result<std::unique_ptr<Conn>>()> connect = {});
  // Push, then give the data token back.
  Status run_turn(Conn& conn);
  // Full-duplex: push, then release this direction.
  Status run_direction(Conn& conn);

private:
  Status run_full_duplex(Conn& conn);
  Status receive_fetched(Conn& conn, session::Machine& machine, Events& events, Dialog dialog);
  Status push(Conn& conn);
  Status give_token(Conn& conn);
  bool all_confirmed() const {
    return m_awaiting_resume.empty() && m_ready.empty() && !m_active && m_unfinished.empty();
  }
  Status establish(Conn& conn);
  Status exchange_hello(Conn& conn);
  Status top_up(Conn& conn);
  bool can_top_up() const;
  void start_next();
  Status pump(Conn& conn);
  // --streams: open the extra connections, each with its JOIN.
  Status open_streams(const std::function<Result<std::unique_ptr<Conn>>()>& connect);
  bool streaming() const { return m_pool && m_active && !m_active->small && !m_file_end_sent; }
  Status pump_streams(Conn& conn);
  Status collect_streams(Conn& conn);
  Status send_chunk(Conn& conn, std::uint64_t index, bool resend);
  // Read chunk `index` of the active file into m_buf and hash it: the session
  // thread's own reads (RESEND, REPAIR, its share of --streams).
  Result<Hash128> read_chunk(std::uint64_t index, std::span<const std::uint8_t>& chunk);
  // A chunk of `len` bytes is sent: count it, and pace for --bwlimit.
  Status sent_bytes(Conn& conn, std::uint64_t len);
  // A chunk confirmed in an earlier session that the receiver's partial no
  // longer holds (REPAIR): read it from the source and send it again.
  Status send_repair(Conn& conn, std::uint64_t index);
  // --checksum: send the source hashes the hasher has ready.
  Status send_source_hashes(Conn& conn);
  int hasher_fd() const { return m_hasher ? m_hasher->wake_fd() : -1; }
  Result<frame::Header> next_frame(Conn& conn, std::span<const std::uint8_t>& payload);
  Status handle(Conn& conn, const frame::Header& header, std::span<const std::uint8_t> payload);
  Status on_resume(Conn& conn, std::span<const std::uint8_t> payload);
  Status on_file_done(Conn& conn, std::span<const std::uint8_t> payload);
  Status release(Conn& conn);
  bool finished() const {
    return m_next >= m_todo.size() && m_awaiting_resume.empty() && m_ready.empty() && !m_active &&
           m_unfinished.empty();
  }
  FileReport& report(const Job& job) { return m_plan.reports[job.entry]; }
  void finish_report(std::size_t entry, FileReport::State state);

  const SendOptions& m_opt;
  Events& m_events;
  Plan& m_plan;
  session::Machine m_own_machine{session::Role::initiator};
  session::Machine& m_machine;
  bool m_turn = false;            // the responder's turn of a half-duplex session
  const char* m_peer = "receiver";
  Clock::time_point m_start = Clock::now();
  std::uint64_t m_bytes_before; // sent by earlier attempts (not throttled again)

  std::vector<std::size_t> m_todo; // entries this session sends, in order
  std::size_t m_next = 0;          // next of m_todo to offer
  std::deque<Job> m_awaiting_resume;
  std::deque<Job> m_ready;          // RESUME says transfer; data not started
  std::optional<Job> m_active;      // the file whose data is being sent
  std::deque<Job> m_unfinished;     // FILE_END sent, FILE_DONE not yet received

  // The active file's transfer.
  std::uint32_t m_chunk_size = 0;
  std::uint64_t m_chunks = 0;     // chunks in the file
  std::uint64_t m_first = 0;      // first chunk sent this session
  std::uint64_t m_confirmed = 0;  // every chunk below is durable at the receiver
  std::uint64_t m_sent = 0;       // every chunk below has been sent once
  std::uint64_t m_serial = 1;
  std::uint64_t m_last_sync = 0;
  Clock::time_point m_last_sync_time{}; // a slow link still gets a sync point every k_sync_period
  bool m_file_end_sent = false;
  // The peer has something to read: a TLS error seen by a peek must be read
  // now, not looked for again (a second peek would not see it).
  bool m_peer_ready = false;
  std::deque<Hash128> m_unconfirmed; // hashes of chunks [m_confirmed, m_sent)
  std::optional<RootBuilder> m_session_root;
  std::vector<std::uint8_t> m_buf;
  // --streams: the session's cookie (from ACCEPT), the chunks written beyond
  // m_sent (out of order, by any connection), and the extra connections
  // (last: destroyed first, so no writer outlives the file it reads).
  std::optional<frame::Cookie> m_cookie;
  std::map<std::uint64_t, Hash128> m_ahead;
  std::unique_ptr<StreamPool> m_pool;
  // Without --streams: the active file's chunks read and hashed ahead
  // (destroyed before m_active, whose source it reads).
  std::unique_ptr<ChunkReader> m_reader;
  // What the session negotiated (frame::feature), and with --checksum the
  // active file's source hashes of earlier chunks, read on their own thread,
  // and every chunk's hash, for the whole-file root that FILE_DONE returns.
  std::uint64_t m_features = 0;
  std::unique_ptr<SourceHasher> m_hasher;
  std::vector<Hash128> m_all_hashes;
};

Status Sender::establish(Conn& conn) {
  auto status = exchange_hello(conn);
  // In TLS 1.3 the client finishes its handshake before the server has
  // judged the client's certificate: a receiver that rejects it sends an
  // alert and closes while we send or await HELLO. That is an
  // authentication failure, not an interruption a retry could fix.
  if (!status && conn.ssl() && status.error().kind == ErrorKind::disconnected)
    return make_error(ErrorKind::auth, "authentication failed: the receiver closed the session before accepting it (" +
                                           status.error().message + "); does it trust this side's certificate?");
  return status;
}

// Read the next frame's header and, for a control frame, its payload;
// ABORT becomes an error, and a frame the dialog rules forbid (DATA from the
// receiver in a simplex session, ...) is answered with ABORT protocol.
Result<frame::Header> Sender::next_frame(Conn& conn, std::span<const std::uint8_t>& payload) {
  // DATA is read as far as its header (with any length a chunk may have), so
  // it is reported as the dialog violation it is rather than as a bad length.
  auto header = conn.read_header(frame::k_data_prefix + frame::k_max_chunk_size);
  if (!header) return header.error();
  if (auto legal = m_machine.on_receive(header->type); !legal) {
    conn.send_abort(frame::Reason::protocol, legal.error().message);
    return make_error(ErrorKind::protocol, std::string(m_peer) + " broke the protocol: " + legal.error().message);
  }
  auto p = conn.read_control_payload(*header);
  if (!p) return p.error();
  payload = *p;
  if (header->type == frame::Type::abort) {
    auto abort = frame::decode_abort(payload);
    if (!abort) return abort.error();
    return remote_error(abort->reason, abort->message, m_peer);
  }
  return header;
}

Status Sender::exchange_hello(Conn& conn) {
  frame::Hello hello;
  hello.identity = "sesscp/" SESSCP_VERSION " " + hostname();
  // Dialog control: a session that also fetches takes turns with the data
  // token, or (--duplex full) runs both directions at once; once fetched
  // (an earlier attempt of --retry), full-duplex has nothing to fetch.
  hello.mode = m_opt.fetch.empty()  ? frame::DialogMode::simplex
               : m_opt.dialog == Dialog::half_duplex ? frame::DialogMode::half_duplex
               : m_plan.fetched     ? frame::DialogMode::simplex
                                    : frame::DialogMode::full_duplex;
  // Several connections: announced in the feature bits, only when asked for
  // (one stream is the version-1 HELLO, byte for byte).
  if (m_opt.streams > 1 && !m_turn && hello.mode == frame::DialogMode::simplex)
    hello.features = frame::feature::with_streams(hello.features, m_opt.streams);
  if (m_opt.checksum) hello.features |= frame::feature::k_checksum;
  // SESSCP_COMPAT_NO_REPAIR=1: offer no REPAIR (bit 5), as a sender older
  // than verified resume; for the tests of the receiver's fallback.
  if (const char* env = std::getenv("SESSCP_COMPAT_NO_REPAIR"); env && std::string_view(env) == "1")
    hello.features &= ~frame::feature::k_repair;
  SESSCP_TRY(m_machine.set_mode(hello.mode));
  SESSCP_TRY(m_machine.on_send(frame::Type::hello));
  SESSCP_TRY(conn.send(frame::encode(hello)));
  std::span<const std::uint8_t> p;
  auto h = next_frame(conn, p);
  if (!h) return h.error();
  if (h->type == frame::Type::refuse) {
    auto refuse = frame::decode_refuse(p);
    if (!refuse) return refuse.error();
    if (refuse->reason == frame::Reason::version)
      return make_error(ErrorKind::version, "receiver speaks protocol version " +
                                                std::to_string(refuse->version) + ", this sesscp speaks " +
                                                std::to_string(frame::k_protocol_version) +
                                                "; install the same sesscp version on both hosts");
    return remote_error(refuse->reason, refuse->message);
  }
  if (h->type != frame::Type::accept) return unexpected(conn, h->type, "ACCEPT");
  auto accept = frame::decode_accept(p);
  if (!accept) return accept.error();
  if (accept->version != frame::k_protocol_version)
    return make_error(ErrorKind::version, "receiver accepted with protocol version " +
                                              std::to_string(accept->version));
  if (accept->mode != hello.mode)
    return unexpected(conn, h->type,
                      (std::string("an ACCEPT confirming the ") + frame::to_string(hello.mode) + " dialog mode").c_str());
  m_features = accept->features;
  if (m_opt.checksum && !(m_features & frame::feature::k_checksum))
    m_events.info("the receiver does not take --checksum (an older sesscp?); chunks confirmed before are bound to "
                  "the source by size, mtime and fingerprint only");
  if (frame::feature::streams_of(hello.features) > 1) {
    if (accept->features & frame::feature::k_streams)
      m_cookie = accept->cookie;
    else
      m_events.info("the receiver does not take --streams (an older sesscp?); sending over one connection");
  }
  m_events.debug("session established with " + accept->identity + " (" + frame::to_string(accept->mode) + ")");
  return {};
}

bool Sender::can_top_up() const {
  // Asked for the token: nothing new is offered, so the next point where
  // everything offered is confirmed comes soon; the token passes there.
  if (!m_turn && m_machine.token_asked()) return false;
  return m_next < m_todo.size() && m_awaiting_resume.size() + m_ready.size() < k_offer_pipeline &&
         m_unfinished.size() < k_max_unfinished;
}

// Offer what comes next, up to the pipeline's depth: directories and links
// need no answer; each file's OFFER gets a RESUME, in order.
Status Sender::top_up(Conn& conn) {
  while (can_top_up()) {
    auto index = m_todo[m_next++];
    const auto& e = m_plan.entries[index];
    if (e.kind == SourceEntry::Kind::directory) {
      SESSCP_TRY(conn.send_later(frame::encode(frame::Mkdir{e.name, e.mode_bits, e.mtime_ns})));
      continue;
    }
    if (e.kind == SourceEntry::Kind::symlink) {
      SESSCP_TRY(conn.send_later(frame::encode(frame::Symlink{e.name, e.target, e.mtime_ns})));
      continue;
    }
    bool beneath = index < m_plan.beneath_fd.size() && m_plan.beneath_fd[index] >= 0;
    auto source = beneath ? SourceFile::open_beneath(m_plan.beneath_fd[index], m_plan.beneath_rel[index], e.name)
                          : SourceFile::open(e.path);
    if (!source) {
      // Gone since the tree was read: say so and carry on with the others.
      if (source.error().kind != ErrorKind::usage || m_plan.files() == 1) return source.error();
      m_events.info("warning: skipping " + e.path + ": " + source.error().message);
      m_plan.done[index] = 1;
      continue;
    }
    Job job;
    job.entry = index;
    job.size = source->size();
    frame::Offer offer;
    offer.name = e.name;
    offer.size = source->size();
    offer.mtime_ns = source->mtime_ns();
    offer.chunk_size = m_opt.chunk_size;
    offer.mode_bits = source->mode_bits();
    auto fp = source->fingerprint(&job.bytes);
    if (!fp) return fp.error();
    offer.fingerprint = *fp;
    job.source.emplace(std::move(*source));
    if (!m_plan.offered[index]) m_plan.first_offer[index] = Clock::now();
    m_plan.offered[index] = 1;
    report(job).size = job.size;
    // Offers, like FILE_END and a small file's DATA, leave with the next
    // frame sent or before this side waits (Conn::send_later).
    SESSCP_TRY(conn.send_later(frame::encode(offer)));
    m_events.offered(e.name, offer.size);
    // Only the next file to send waits for its answer: a journaled one may
    // wait while the receiver re-verifies its partial file. Files offered
    // behind the one being sent are not shown as waiting.
    if (chunk_count(m_opt.chunk_size, offer.size) > 1 && !m_active && m_ready.empty() && m_awaiting_resume.empty())
      m_events.phase(e.name, Events::Phase::verifying, "");
    m_awaiting_resume.push_back(std::move(job));
  }
  return {};
}

void Sender::finish_report(std::size_t entry, FileReport::State state) {
  auto& r = m_plan.reports[entry];
  r.state = state;
  r.reconnects = m_plan.reconnects;
  // From the file's first offer: with pipelining, the session's start would
  // charge each small file for every file before it.
  auto since = m_plan.offered[entry] ? m_plan.first_offer[entry] : m_plan.start;
  r.seconds = std::chrono::duration<double>(Clock::now() - since).count();
  m_plan.done[entry] = 1;
  m_events.file_report(true, r);
}

Status Sender::on_resume(Conn& conn, std::span<const std::uint8_t> payload) {
  if (m_awaiting_resume.empty()) return unexpected(conn, frame::Type::resume, "no RESUME (no OFFER is waiting for one)");
  auto resume = frame::decode_resume(payload);
  if (!resume) return resume.error();
  Job job = std::move(m_awaiting_resume.front());
  m_awaiting_resume.pop_front();
  auto& r = report(job);
  bool first = !m_plan.resumed[job.entry];
  m_plan.resumed[job.entry] = 1;
  if (resume->status == frame::ResumeStatus::complete) {
    if (first) r.resumed_at = job.size;
    // After a reconnection the rest may have been sent before the break.
    finish_report(job.entry, first ? FileReport::State::already_complete : FileReport::State::complete);
    return {};
  }
  if (resume->next_chunk > chunk_count(resume->chunk_size, job.size))
    return unexpected(conn, frame::Type::resume, "a resume point inside the file");
  auto offset = std::min(resume->next_chunk * resume->chunk_size, job.size);
  if (first) r.resumed_at = offset;
  // Worth a line when it is a resumption: past 0, or offered in an earlier session.
  if (offset > 0 || !first) m_events.resumed(r.name, offset, job.size);
  if (!resume->message.empty()) m_events.info(r.name + ": " + resume->message);
  job.resume = *resume;
  job.small = chunk_count(resume->chunk_size, job.size) <= 1;
  m_ready.push_back(std::move(job));
  return {};
}

// Make the next ready file the active one.
void Sender::start_next() {
  m_active = std::move(m_ready.front());
  m_ready.pop_front();
  const auto& resume = m_active->resume;
  m_chunk_size = resume.chunk_size;
  m_chunks = chunk_count(m_chunk_size, m_active->size);
  m_first = m_confirmed = m_sent = m_last_sync = resume.next_chunk;
  m_last_sync_time = Clock::now();
  m_serial = resume.next_serial;
  m_file_end_sent = false;
  m_unconfirmed.clear();
  m_session_root.emplace();
  if (m_buf.size() < m_chunk_size) m_buf.resize(m_chunk_size);
  m_ahead.clear();
  m_reader.reset();
  m_hasher.reset();
  m_all_hashes.clear();
  if ((m_features & frame::feature::k_checksum) && !m_active->small) {
    m_all_hashes.resize(m_chunks);
    if (m_first > 0) m_hasher = std::make_unique<SourceHasher>(*m_active->source, m_chunk_size, m_first);
  }
  if (!m_pool && !m_active->small && m_sent < m_chunks)
    m_reader = std::make_unique<ChunkReader>(*m_active->source, m_chunk_size, m_sent, m_chunks,
                                             pipeline_buffers(m_chunk_size));
  if (m_pool && !m_active->small)
    m_pool->start_file(&*m_active->source, m_chunk_size, m_sent,
                       std::min(m_chunks, m_confirmed + window_chunks(m_opt.window, m_chunk_size)));
  if (!m_active->small) m_events.phase(report(*m_active).name, Events::Phase::transferring, "");
}

Status Sender::send_chunk(Conn& conn, std::uint64_t index, bool resend) {
  auto& source = *m_active->source;
  auto len = chunk_length(index, m_chunk_size, source.size());
  std::span<const std::uint8_t> chunk;
  Hash128 hash;
  // In order, the reader's thread has read and hashed it already.
  const bool ahead = !resend && m_reader;
  if (ahead) {
    auto taken = m_reader->take(index);
    if (!taken) return taken.error();
    chunk = taken->data;
    hash = taken->hash;
  } else if (!resend && index == 0 && m_active->bytes.size() == len && len == source.size()) {
    // The whole file was read for its fingerprint a moment ago: no second read.
    chunk = m_active->bytes;
    hash = xxh3_128(chunk);
  } else {
    auto read = read_chunk(index, chunk);
    if (!read) return read.error();
    hash = *read;
  }
  if (resend) {
    // The receiver saw different bytes than we hashed: resend, unless our own
    // bytes changed, in which case the file is no longer the one we offered.
    // (With --streams the chunk may be written but beyond the contiguous prefix.)
    if (hash != (index < m_sent ? m_unconfirmed[index - m_confirmed] : m_ahead.at(index)))
      return make_error(ErrorKind::source_changed, source.path() + " changed while it was being sent");
    m_events.debug("resending chunk " + std::to_string(index) + " at the receiver's request");
  } else {
    m_unconfirmed.push_back(hash);
    m_session_root->add(hash);
    if (!m_all_hashes.empty()) m_all_hashes[index] = hash;
  }
  // A small file's only chunk of up to 64 KiB waits for company
  // (Conn::send_data_later): several such files then leave in one send.
  auto sent = m_active->small && !resend && len <= 64 * 1024 ? conn.send_data_later({index, hash}, chunk)
                                                            : conn.send_data({index, hash}, chunk);
  if (ahead) {
    m_reader->done(index);
    if (index + 1 == m_chunks) m_reader.reset(); // every chunk taken: its thread has ended
  }
  SESSCP_TRY(sent);
  if (!m_active->bytes.empty() && index + 1 == m_chunks) std::vector<std::uint8_t>().swap(m_active->bytes);
  return sent_bytes(conn, len);
}

Result<Hash128> Sender::read_chunk(std::uint64_t index, std::span<const std::uint8_t>& chunk) {
  std::span<std::uint8_t> buf(m_buf.data(), chunk_length(index, m_chunk_size, m_active->size));
  SESSCP_TRY(m_active->source->read_at(index * m_chunk_size, buf));
  chunk = buf;
  return xxh3_128(buf);
}

Status Sender::sent_bytes(Conn& conn, std::uint64_t len) {
  report(*m_active).bytes += len;
  m_plan.bytes += len;
  if (m_opt.bwlimit) SESSCP_TRY(conn.flush()); // nothing held back while pacing sleeps
  throttle(m_opt.bwlimit, m_plan.bytes - m_bytes_before, m_start, m_opt.stop);
  return {};
}

Status Sender::send_repair(Conn& conn, std::uint64_t index) {
  std::span<const std::uint8_t> chunk;
  auto hash = read_chunk(index, chunk);
  if (!hash) return hash.error();
  m_events.debug("sending chunk " + std::to_string(index) + " again: the " + m_peer + "'s partial file lost it");
  SESSCP_TRY(conn.send_data({index, *hash}, chunk));
  auto& r = report(*m_active);
  ++r.damaged_chunks;
  r.repaired_bytes += chunk.size();
  return sent_bytes(conn, chunk.size());
}

Status Sender::send_source_hashes(Conn& conn) {
  for (;;) {
    auto batch = m_hasher->take();
    if (!batch) return batch.error();
    if (!*batch) return {};
    for (std::size_t k = 0; k < (*batch)->hashes.size(); ++k)
      m_all_hashes[(*batch)->first_chunk + k] = (*batch)->hashes[k];
    SESSCP_TRY(m_machine.on_send(frame::Type::source_hashes));
    SESSCP_TRY(conn.send(frame::encode(**batch)));
  }
}

// Send the active file's data while the window has room; acknowledgements
// are read in between, so data never waits for a round trip while the
// window is open. After the last chunk, the major sync point request.
Status Sender::pump(Conn& conn) {
  std::uint64_t sync_every = sync_interval_chunks(m_opt.window, m_chunk_size);
  std::uint64_t max_in_flight = window_chunks(m_opt.window, m_chunk_size);
  while (m_sent < m_chunks && m_sent - m_confirmed < max_in_flight) {
    SESSCP_TRY(send_chunk(conn, m_sent, false));
    ++m_sent;
    // A file of one chunk has no minor sync point: FILE_END is its only one.
    if (!m_active->small && (m_sent - m_last_sync >= sync_every || m_sent == m_chunks ||
                             Clock::now() - m_last_sync_time >= k_sync_period)) {
      SESSCP_TRY(conn.send(frame::encode(frame::Sync{m_serial++, m_sent})));
      m_last_sync = m_sent;
      m_last_sync_time = Clock::now();
    }
    auto ready = conn.wait_readable(-1, 0);
    if (ready && *ready) {
      m_peer_ready = true;
      break;
    }
    if (!ready && ready.error().kind != ErrorKind::timeout) return ready.error();
  }
  if (m_sent < m_chunks || m_file_end_sent) return {};
  // Major sync point: the source must still be the file we offered.
  if (!m_active->small) m_events.phase(report(*m_active).name, Events::Phase::finalising, "");
  SESSCP_TRY(m_active->source->check_unchanged());
  SESSCP_TRY(conn.send_later(frame::encode(frame::FileEnd{m_first, m_chunks, m_session_root->digest()})));
  m_file_end_sent = true;
  if (m_active->small) {
    // Nothing of it can be asked for again: the next file may start now.
    m_active->source.reset();
    m_unfinished.push_back(std::move(*m_active));
    m_active.reset();
  }
  return {};
}

Status Sender::open_streams(const std::function<Result<std::unique_ptr<Conn>>()>& connect) {
  std::vector<std::unique_ptr<Conn>> conns;
  for (unsigned i = 1; i < m_opt.streams; ++i) {
    auto c = connect();
    if (!c) return make_error(c.error().kind, "stream " + std::to_string(i + 1) + ": " + c.error().message);
    frame::Join join{*m_cookie, static_cast<std::uint16_t>(i)};
    if (auto sent = (*c)->send(frame::encode(join)); !sent)
      return make_error(sent.error().kind, "stream " + std::to_string(i + 1) + ": " + sent.error().message);
    conns.push_back(std::move(*c));
  }
  // Every stream is confirmed (ACCEPT with the session's cookie) before any DATA goes.
  for (std::size_t i = 0; i < conns.size(); ++i) {
    auto fail = [&](const Error& e) { return make_error(e.kind, "stream " + std::to_string(i + 2) + ": " + e.message); };
    auto header = conns[i]->read_header(0);
    if (!header) return fail(header.error());
    auto payload = conns[i]->read_control_payload(*header);
    if (!payload) return fail(payload.error());
    if (header->type == frame::Type::abort) {
      auto abort = frame::decode_abort(*payload);
      if (!abort) return fail(abort.error());
      return fail(remote_error(abort->reason, abort->message));
    }
    auto accept = header->type == frame::Type::accept ? frame::decode_accept(*payload)
                                                       : Result<frame::Accept>(make_error(ErrorKind::protocol, "no ACCEPT"));
    if (!accept || !(accept->features & frame::feature::k_streams) || accept->cookie != *m_cookie) {
      conns[i]->send_abort(frame::Reason::protocol, "expected ACCEPT for the JOIN");
      return fail(make_error(ErrorKind::protocol, std::string("receiver broke the protocol: expected ACCEPT for the JOIN, got ") +
                                                      frame::to_string(header->type)));
    }
  }
  m_pool = std::make_unique<StreamPool>(std::move(conns), m_opt.bwlimit, m_opt.stop);
  m_events.debug(std::to_string(m_opt.streams) + " streams: " + std::to_string(m_pool->size()) +
                 " extra connections joined the session");
  return {};
}

// Take what the writers finished; move the contiguous prefix (m_sent) on
// and ask for a sync point as pump() does, now that every chunk below it is
// fully written to one socket or another.
Status Sender::collect_streams(Conn& conn) {
  std::uint64_t bytes = 0;
  SESSCP_TRY(m_pool->take(m_ahead, bytes));
  report(*m_active).bytes += bytes;
  m_plan.bytes += bytes;
  for (auto it = m_ahead.begin(); it != m_ahead.end() && it->first == m_sent; it = m_ahead.erase(it)) {
    m_unconfirmed.push_back(it->second);
    m_session_root->add(it->second);
    if (!m_all_hashes.empty()) m_all_hashes[it->first] = it->second;
    ++m_sent;
  }
  std::uint64_t sync_every = sync_interval_chunks(m_opt.window, m_chunk_size);
  if (m_sent > m_last_sync && (m_sent - m_last_sync >= sync_every || m_sent == m_chunks ||
                               Clock::now() - m_last_sync_time >= k_sync_period)) {
    SESSCP_TRY(conn.send(frame::encode(frame::Sync{m_serial++, m_sent})));
    m_last_sync = m_sent;
    m_last_sync_time = Clock::now();
  }
  return {};
}

Status Sender::pump_streams(Conn& conn) {
  SESSCP_TRY(collect_streams(conn));
  if (auto index = m_pool->claim()) {
    std::span<const std::uint8_t> chunk;
    auto hash = read_chunk(*index, chunk);
    if (!hash) return hash.error();
    SESSCP_TRY(conn.send_data({*index, *hash}, chunk));
    m_pool->written(*index, *hash, chunk.size());
    m_pool->pace(chunk.size());
    SESSCP_TRY(collect_streams(conn));
  }
  if (m_sent < m_chunks) return {};
  // Every chunk is written: the writers are done with this file.
  m_pool->end_file();
  m_events.phase(report(*m_active).name, Events::Phase::finalising, "");
  SESSCP_TRY(m_active->source->check_unchanged());
  SESSCP_TRY(conn.send(frame::encode(frame::FileEnd{m_first, m_chunks, m_session_root->digest()})));
  m_file_end_sent = true;
  return {};
}

Status Sender::on_file_done(Conn& conn, std::span<const std::uint8_t> payload) {
  auto fd = frame::decode_file_done(payload);
  if (!fd) return fd.error();
  bool active_done = m_active && m_file_end_sent && m_unfinished.empty();
  if (!active_done && m_unfinished.empty())
    return unexpected(conn, frame::Type::file_done, "FILE_DONE after a FILE_END");
  Job& job = active_done ? *m_active : m_unfinished.front();
  // A major sync point confirms every chunk before it.
  if (fd->size != job.size)
    return unexpected(conn, frame::Type::file_done, "FILE_DONE for the file sent");
  // --checksum: every chunk's hash is known here too (the earlier ones
  // re-hashed from the source), so the whole file is compared end to end.
  if (active_done && !m_all_hashes.empty() && hash_list_root(m_all_hashes) != fd->file_root)
    return make_error(ErrorKind::integrity, report(job).name + ": the receiver's digest over the whole file differs "
                                                              "from the source's; the receiver kept its partial file");
  report(job).file_root = fd->file_root;
  m_events.progress(report(job).name, job.size, job.size);
  finish_report(job.entry, FileReport::State::complete);
  if (active_done) {
    m_reader.reset();
    m_hasher.reset();
    m_active.reset();
  }
  else m_unfinished.pop_front();
  return {};
}

Status Sender::handle(Conn& conn, const frame::Header& header, std::span<const std::uint8_t> payload) {
  bool multi_chunk_active = m_active && !m_active->small;
  switch (header.type) {
  case frame::Type::resume: return on_resume(conn, payload);
  case frame::Type::file_done: return on_file_done(conn, payload);
  case frame::Type::checkpoint: {
    auto cp = frame::decode_checkpoint(payload);
    if (!cp) return cp.error();
    if (!multi_chunk_active || cp->end_chunk < m_confirmed || cp->end_chunk > m_sent)
      return unexpected(conn, header.type, "a CHECKPOINT within the chunks sent");
    m_unconfirmed.erase(m_unconfirmed.begin(),
                        m_unconfirmed.begin() + static_cast<std::ptrdiff_t>(cp->end_chunk - m_confirmed));
    m_confirmed = cp->end_chunk;
    if (m_pool && !m_file_end_sent)
      m_pool->set_limit(std::min(m_chunks, m_confirmed + window_chunks(m_opt.window, m_chunk_size)));
    m_events.progress(report(*m_active).name, std::min(m_confirmed * m_chunk_size, m_active->size), m_active->size);
    return {};
  }
  case frame::Type::resend: {
    auto rs = frame::decode_resend(payload);
    if (!rs) return rs.error();
    if (streaming()) SESSCP_TRY(collect_streams(conn));
    if (!multi_chunk_active || rs->chunk < m_confirmed || (rs->chunk >= m_sent && !m_ahead.count(rs->chunk)))
      return unexpected(conn, header.type, "a RESEND of an unconfirmed chunk");
    return send_chunk(conn, rs->chunk, true);
  }
  case frame::Type::repair: {
    auto rp = frame::decode_repair(payload);
    if (!rp) return rp.error();
    if (!multi_chunk_active || rp->chunk >= m_first)
      return unexpected(conn, header.type, "a REPAIR of a chunk confirmed before this session");
    return send_repair(conn, rp->chunk);
  }
  case frame::Type::verified: {
    auto v = frame::decode_verified(payload);
    if (!v) return v.error();
    if (!multi_chunk_active || v->total != m_first)
      return unexpected(conn, header.type, "a VERIFIED of the chunks confirmed before this session");
    const auto& name = report(*m_active).name;
    m_events.verify_progress(name, std::min(v->checked * m_chunk_size, m_active->size),
                             std::min(v->total * m_chunk_size, m_active->size));
    if (v->checked == v->total)
      m_events.debug(name + ": the " + std::string(m_peer) + " re-verified " + std::to_string(v->total) +
                     " chunks of its partial file, " + std::to_string(v->damaged) + " damaged");
    return {};
  }
  case frame::Type::please_token:
    // The machine recorded the request (or ignored one that crossed our GIVE_TOKEN).
    if (m_machine.token_asked())
      m_events.debug(m_turn ? "the initiator asked for the data token; it goes back when this turn is confirmed"
                            : "the receiver asked for the data token; it passes once everything offered is confirmed");
    return {};
  default: return unexpected(conn, header.type, "RESUME, CHECKPOINT, RESEND or FILE_DONE", m_peer);
  }
}

// Negotiated release: asked only when nothing is unconfirmed; the receiver
// may answer NOT_FINISHED, and then the session goes on and asks again.
Status Sender::release(Conn& conn) {
  for (int attempt = 1;; ++attempt) {
    SESSCP_TRY(m_machine.may_release(0));
    SESSCP_TRY(m_machine.on_send(frame::Type::release));
    SESSCP_TRY(conn.send(frame::encode_empty(frame::Type::release)));
    std::span<const std::uint8_t> p;
    auto h = next_frame(conn, p);
    if (!h) return h.error();
    if (h->type == frame::Type::release_ack) {
      conn.shutdown_write();
      return {};
    }
    if (h->type != frame::Type::not_finished) return unexpected(conn, h->type, "RELEASE_ACK or NOT_FINISHED");
    auto nf = frame::decode_not_finished(p);
    if (!nf) return nf.error();
    m_events.info("receiver refused to release the session (not finished" + (nf->message.empty() ? "" : ": " + nf->message) +
                  "); continuing");
    if (attempt >= k_release_attempts) {
      // Nothing is lost: every file is complete and durable. Say so and end.
      conn.send_abort(frame::Reason::timeout, "the receiver refused to release " + std::to_string(attempt) + " times");
      m_events.info("the receiver refused to release the session " + std::to_string(attempt) +
                    " times; every file is complete; session aborted");
      return {};
    }
    // Give the receiver time to finish what it has; anything it says meanwhile is read.
    auto ready = conn.wait_readable(-1, 100 * attempt);
    if (ready && *ready) {
      auto frame = next_frame(conn, p);
      if (!frame) return frame.error();
      return unexpected(conn, frame->type, "nothing while a release is pending");
    }
    if (!ready && ready.error().kind != ErrorKind::timeout) return ready.error();
  }
}

// Half-duplex: give the data token to the peer at a major sync point
// (everything sent is confirmed). The initiator's GIVE_TOKEN carries its
// fetch request the first time, and it then receives the peer's turn; the
// responder's gives the token back at the end of its turn.
Status Sender::give_token(Conn& conn) {
  if (!all_confirmed()) return make_error(ErrorKind::internal, "data token given with files unconfirmed");
  frame::GiveToken give;
  if (!m_turn && !m_plan.fetched) give.fetch = m_opt.fetch;
  SESSCP_TRY(m_machine.on_send(frame::Type::give_token));
  SESSCP_TRY(conn.send(frame::encode(give)));
  if (m_turn) {
    m_events.debug("data token given back to the initiator");
    return {};
  }
  m_events.debug("data token given to the receiver, asking for " + std::to_string(give.fetch.size()) + " path(s)");
  FetchEvents events(m_events, m_plan);
  SESSCP_TRY(receive_fetched(conn, m_machine, events, Dialog::half_duplex));
  m_plan.fetched = true;
  m_events.debug("data token back from the receiver");
  return {};
}

// The fetch: receive the peer's files into --fetch-dir through the receive
// turn the caller wired in (dialog::wire), over this session's connection.
Status Sender::receive_fetched(Conn& conn, session::Machine& machine, Events& events, Dialog dialog) {
  if (!m_opt.receive_turn) return make_error(ErrorKind::internal, "--fetch without a receiving engine (dialog::wire)");
  TurnOptions turn;
  turn.dir = m_opt.fetch_dir;
  turn.timeout_ms = m_opt.timeout_ms;
  turn.stop = m_opt.stop;
  turn.verify_resume = m_opt.verify_resume;
  turn.features = m_features;
  return m_opt.receive_turn(conn, machine, turn, events, dialog);
}

Status Sender::run_turn(Conn& conn) {
  SESSCP_TRY(push(conn));
  return give_token(conn);
}

Status Sender::run(Conn& conn, std::function<Result<std::unique_ptr<Conn>>()> connect) {
  // Establish the session.
  SESSCP_TRY(establish(conn));
  if (m_machine.mode() == frame::DialogMode::full_duplex) return run_full_duplex(conn);
  if (m_cookie && connect) SESSCP_TRY(open_streams(connect));
  SESSCP_TRY(push(conn));
  // Half-duplex: the receiver's turn, unless an earlier session or an early
  // grant (PLEASE_TOKEN) already fetched.
  if (m_machine.mode() == frame::DialogMode::half_duplex && !m_plan.fetched) SESSCP_TRY(give_token(conn));
  // Orderly release: nothing is unconfirmed now. Every file is already
  // complete and durable, so a failed release is only worth a note; the
  // directories' metadata and the links are made durable at release.
  if (auto released = release(conn); !released) {
    if (released.error().kind == ErrorKind::protocol) return released.error();
    m_events.debug("release not acknowledged: " + released.error().message);
  }
  // Directories and links are idempotent: they count as done once released.
  for (auto i : m_todo) m_plan.done[i] = 1;
  return {};
}

Status Sender::run_direction(Conn& conn) {
  SESSCP_TRY(push(conn));
  SESSCP_TRY(release(conn));
  for (auto i : m_todo) m_plan.done[i] = 1;
  return {};
}

// Full-duplex: ask for the fetch, then send this side's files and receive
// the peer's at once, each direction with its own sync points, journals and
// release (docs/PROTOCOL.md, "Full-duplex").
Status Sender::run_full_duplex(Conn& conn) {
  SESSCP_TRY(m_machine.on_send(frame::Type::fetch));
  SESSCP_TRY(conn.send(frame::encode(frame::Fetch{m_opt.fetch})));
  m_events.debug("full-duplex: sending " + std::to_string(m_plan.entries.size()) + " entries while fetching " +
                 std::to_string(m_opt.fetch.size()) + " path(s) into " + m_opt.fetch_dir);
  auto send = [&](Conn& c) -> Status {
    auto machine = session::Machine::direction(session::Role::initiator);
    Sender direction(m_opt, m_events, m_plan, machine, "receiver");
    direction.m_features = m_features;
    return direction.run_direction(c);
  };
  auto receive = [&](Conn& c) -> Status {
    auto machine = session::Machine::direction(session::Role::responder);
    FetchEvents events(m_events, m_plan);
    SESSCP_TRY(receive_fetched(c, machine, events, Dialog::full_duplex));
    m_plan.fetched = true;
    return {};
  };
  return duplex::run(conn, send, receive, m_opt.timeout_ms);
}

// Offer, transfer and confirm every file of the plan not done yet.
Status Sender::push(Conn& conn) {
  for (std::size_t i = 0; i < m_plan.entries.size(); ++i)
    if (!m_plan.done[i]) m_todo.push_back(i);
  // Offer, transfer and confirm every file: offers run ahead of the data.
  std::span<const std::uint8_t> payload;
  for (;;) {
    // The receiver asked for the token: grant it at this major sync point.
    if (!m_turn && m_machine.token_asked() && all_confirmed()) SESSCP_TRY(give_token(conn));
    SESSCP_TRY(top_up(conn));
    if (!m_active && !m_ready.empty()) start_next();
    if (m_hasher) SESSCP_TRY(send_source_hashes(conn));
    if (streaming()) {
      // Several connections: the writers send most chunks; this thread sends
      // one at a time on the first connection while the window has room,
      // then waits for the receiver or for a writer's news.
      SESSCP_TRY(pump_streams(conn));
      if (streaming()) {
        bool more = m_pool->claimable();
        auto ready = conn.wait_readable(m_pool->wake_fd(), more ? 0 : m_opt.timeout_ms, hasher_fd());
        if (!ready && (!more || ready.error().kind != ErrorKind::timeout)) return ready.error();
        if (!ready || !*ready) continue;
        auto h = next_frame(conn, payload);
        if (!h) return h.error();
        SESSCP_TRY(handle(conn, *h, payload));
        continue;
      }
    }
    bool can_send = m_active && !m_file_end_sent &&
                    (m_sent == m_chunks || m_sent - m_confirmed < window_chunks(m_opt.window, m_chunk_size));
    if (can_send) SESSCP_TRY(pump(conn));
    if (finished()) break;
    // Wait for the receiver only when nothing can be sent; else just look.
    bool busy = (m_active && !m_file_end_sent &&
                 m_sent - m_confirmed < window_chunks(m_opt.window, m_chunk_size)) ||
                (!m_active && !m_ready.empty()) || can_top_up();
    // --checksum: hashes still to come wake the wait too.
    const bool hashing = m_hasher && !m_hasher->all_taken();
    if ((busy || hashing) && !std::exchange(m_peer_ready, false)) {
      auto ready = conn.wait_readable(hasher_fd(), busy ? 0 : m_opt.timeout_ms);
      if (!ready && ready.error().kind != ErrorKind::timeout) return ready.error();
      if (!ready || !*ready) continue;
    }
    m_peer_ready = false;
    auto h = next_frame(conn, payload);
    if (!h) return h.error();
    SESSCP_TRY(handle(conn, *h, payload));
  }
  return {};
}

} // namespace

std::uint64_t window_chunks(std::uint64_t window, std::uint32_t chunk_size) {
  // The receiver holds at most one journal record's worth of unjournaled chunks.
  return std::clamp<std::uint64_t>(window / chunk_size, 1, checkpoint::k_max_record_hashes);
}

std::uint64_t sync_interval_chunks(std::uint64_t window, std::uint32_t chunk_size) {
  return std::max<std::uint64_t>(1, window_chunks(window, chunk_size) / 4);
}

namespace {

// Connect and authenticate one connection of a session.
Result<std::unique_ptr<Conn>> open_conn(const SendOptions& options, const tls::Context* tls, Events& events) {
  auto fd = net::connect_tcp(options.endpoint, options.timeout_ms);
  if (!fd) return fd.error();
  auto conn = std::make_unique<Conn>(std::move(*fd), options.stop, options.timeout_ms);
  if (tls) {
    // Authenticate both ends before a single frame of the session is sent.
    auto ssl = tls->wrap(conn->fd(), options.endpoint.host);
    if (!ssl) return ssl.error();
    SESSCP_TRY(conn->start_tls(std::move(*ssl), false));
    if (auto peer = tls->check_peer(conn->ssl()); !peer) {
      conn->send_abort(frame::Reason::auth, "the sender does not trust the receiver's certificate");
      return peer.error();
    }
    events.debug(tls->describe() + (tls::ktls_send_active(conn->ssl()) ? ", kernel TLS offload" : ", TLS in user space"));
  }
  return conn;
}

// Connect, authenticate, and run one session over what is left of the plan.
Status connect_and_send(const SendOptions& options, const tls::Context* tls, Events& events, Plan& plan) {
  events.phase(plan.files() == 1 ? plan.reports[0].name : "", Events::Phase::connecting,
               options.endpoint.host + ":" + std::to_string(options.endpoint.port));
  auto first = open_conn(options, tls, events);
  if (!first) return first.error();
  Conn& conn = **first;
  Sender sender(options, events, plan);
  auto status = sender.run(conn, [&]() { return open_conn(options, tls, events); });
  if (!status && status.error().kind == ErrorKind::interrupted)
    conn.send_abort(frame::Reason::interrupted, "sender interrupted");
  else if (!status && status.error().kind == ErrorKind::source_changed)
    conn.send_abort(frame::Reason::source_changed, status.error().message);
  return status;
}

// Read the sources into a plan: the entries, and a report for each.
Result<Plan> make_plan(const SendOptions& options, Events& events) {
  std::vector<std::string> sources = options.paths;
  if (sources.empty() && !options.path.empty()) sources.push_back(options.path);
  std::vector<std::string> warnings;
  auto entries = collect_sources(sources, options.follow_links, warnings);
  if (!entries) return entries.error();
  for (const auto& w : warnings) events.info("warning: " + w);
  Plan plan;
  plan.entries = std::move(*entries);
  if (!options.name.empty()) {
    if (plan.entries.size() != 1 || plan.entries[0].kind != SourceEntry::Kind::file)
      return make_error(ErrorKind::usage, "--name applies only to a single-file send");
    if (auto why = frame::check_name(options.name); !why.empty())
      return make_error(ErrorKind::usage, "cannot send as '" + options.name + "' (" + why + ")");
    plan.entries[0].name = options.name;
  }
  if (plan.entries.empty() && options.fetch.empty()) return make_error(ErrorKind::usage, "nothing to send");
  auto n = plan.entries.size();
  plan.reports.resize(n);
  plan.done.assign(n, 0);
  plan.offered.assign(n, 0);
  plan.first_offer.assign(n, Clock::time_point{});
  plan.resumed.assign(n, 0);
  for (std::size_t i = 0; i < n; ++i) plan.reports[i].name = plan.entries[i].name;
  return plan;
}

// Open `path` beneath the export: no component may be a symlink, and
// nothing outside the directory is reachable (openat2 RESOLVE_BENEATH).
Result<Fd> open_in_export(int serve_fd, const std::string& path) {
  int fd = openat2_beneath(serve_fd, path.c_str(), O_PATH);
  if (fd < 0) {
    int err = errno;
    if (err == ELOOP || err == EXDEV)
      return make_error(ErrorKind::refused, path + ": a symbolic link on the way (links are not followed out of the export)");
    if (err == ENOENT || err == ENOTDIR) return make_error(ErrorKind::refused, path + ": no such file in the export");
    return errno_error(ErrorKind::refused, path + ": cannot open it in the export", err);
  }
  return Fd(fd);
}

// Half-duplex turn: the entries the fetch request names, read through
// descriptors opened beneath the export (held in `pins` while they are
// sent). A file inside a fetched directory is opened again beneath its
// pinned directory (`beneath`), never through a symlink a local user might
// have put there since the walk.
Result<std::vector<SourceEntry>> fetch_entries(int serve_fd, const std::vector<frame::FetchPath>& fetch,
                                               std::vector<Fd>& pins,
                                               std::vector<std::pair<int, std::string>>& beneath, Events& events) {
  std::vector<SourceEntry> all;
  std::set<std::string> names;
  for (const auto& f : fetch) {
    if (auto why = frame::check_path(f.path); !why.empty())
      return make_error(ErrorKind::refused, "fetch path '" + f.path + "' refused: " + why);
    auto fd = open_in_export(serve_fd, f.path);
    if (!fd) return make_error(ErrorKind::refused, "fetch path refused: " + fd.error().message);
    std::string pinned = "/proc/self/fd/" + std::to_string(fd->get());
    pins.push_back(std::move(*fd));
    std::vector<std::string> warnings;
    auto entries = collect_sources({pinned + (f.contents ? "/" : "")}, false, warnings);
    if (!entries) return make_error(ErrorKind::refused, "fetch path '" + f.path + "': " + entries.error().message);
    for (const auto& w : warnings) events.info("warning: " + w);
    // Named by the path's last component, not by the descriptor.
    auto slash = f.path.find_last_of('/');
    std::string base = slash == std::string::npos ? f.path : f.path.substr(slash + 1);
    std::string fd_name = pinned.substr(pinned.find_last_of('/') + 1);
    for (auto& e : *entries) {
      if (!f.contents) e.name = base + e.name.substr(fd_name.size());
      if (!names.insert(e.name).second)
        return make_error(ErrorKind::refused, "two fetch paths land on the same name '" + e.name + "'");
      if (e.kind == SourceEntry::Kind::file && e.path.size() > pinned.size() + 1 &&
          e.path.compare(0, pinned.size() + 1, pinned + "/") == 0)
        beneath.emplace_back(pins.back().get(), e.path.substr(pinned.size() + 1));
      else
        beneath.emplace_back(-1, "");
      all.push_back(std::move(e));
    }
  }
  return all;
}

} // namespace

Status serve_turn(Conn& conn, session::Machine& machine, const TurnOptions& turn,
                  const std::vector<frame::FetchPath>& fetch, Events& events, Dialog dialog) {
  SendOptions options;
  options.timeout_ms = turn.timeout_ms;
  options.bwlimit = turn.bwlimit;
  options.stop = turn.stop;
  const int serve_fd = turn.serve_fd;
  const std::string& serve_dir = turn.dir;
  std::vector<Fd> pins;
  std::vector<std::pair<int, std::string>> beneath;
  auto entries = fetch_entries(serve_fd, fetch, pins, beneath, events);
  if (!entries) {
    conn.send_abort(frame::Reason::bad_name, entries.error().message);
    return entries.error();
  }
  events.debug("serving " + std::to_string(entries->size()) + " entries from " + serve_dir);
  Plan plan;
  plan.entries = std::move(*entries);
  auto n = plan.entries.size();
  plan.reports.resize(n);
  plan.done.assign(n, 0);
  plan.offered.assign(n, 0);
  plan.resumed.assign(n, 0);
  plan.first_offer.assign(n, Clock::time_point{});
  for (std::size_t i = 0; i < n; ++i) {
    plan.reports[i].name = plan.entries[i].name;
    plan.beneath_fd.push_back(beneath[i].first);
    plan.beneath_rel.push_back(beneath[i].second);
  }
  Sender sender(options, events, plan, machine);
  auto status = dialog == Dialog::full_duplex ? sender.run_direction(conn) : sender.run_turn(conn);
  // Files the turn offered but could not finish get their summary line.
  for (std::size_t i = 0; i < n && !status; ++i) {
    if (plan.done[i] || !plan.offered[i]) continue;
    plan.reports[i].seconds = std::chrono::duration<double>(Clock::now() - plan.first_offer[i]).count();
    plan.reports[i].state = exit_code_for(status.error().kind) == exit_code::k_temp_fail ? FileReport::State::interrupted
                                                                                          : FileReport::State::failed;
    events.file_report(true, plan.reports[i]);
  }
  if (!status && status.error().kind == ErrorKind::source_changed)
    conn.send_abort(frame::Reason::source_changed, status.error().message);
  return status;
}

Status send_file(const SendOptions& options, Events& events, FileReport& report) {
  report = FileReport{};
  report.name = options.name.empty() ? basename_of(options.path) : options.name;
  if (!options.fetch.empty()) {
    // Check the fetch directory before touching the network.
    struct stat st{};
    if (stat(options.fetch_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      return make_error(ErrorKind::usage, "--fetch-dir " + options.fetch_dir + " is not a directory");
    if (access(options.fetch_dir.c_str(), W_OK) != 0)
      return errno_error(ErrorKind::cannot_create, "cannot write to --fetch-dir " + options.fetch_dir, errno);
  }
  // Read the sources first: a missing file is a usage error, not a network one.
  auto plan = make_plan(options, events);
  if (!plan) return plan.error();
  auto start = plan->start;
  bool single = plan->entries.size() == 1 && plan->entries[0].kind == SourceEntry::Kind::file;
  if (single) {
    // Open it now, as a single-file send always did: an unreadable file is a usage error.
    auto source = SourceFile::open(plan->entries[0].path);
    if (!source) return source.error();
    plan->reports[0].size = source->size();
  }
  // Load keys or certificates before touching the network: a bad key file is a usage error.
  std::optional<tls::Context> tls;
  if (!options.tls.insecure) {
    auto ctx = tls::Context::create(options.tls, false);
    if (!ctx) return ctx.error();
    tls.emplace(std::move(*ctx));
  }
  Backoff backoff(options.retry);
  Status status;
  for (int attempt = 1;; ++attempt) {
    status = connect_and_send(options, tls ? &*tls : nullptr, events, *plan);
    if (status || !options.retry.enabled() || !retryable(status.error().kind)) break;
    // A signal here asked us to stop: that is not a failure to retry.
    if (options.stop && options.stop->load()) break;
    double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    if (auto waited = wait_to_retry(backoff, attempt, elapsed, options.retry.retries, status.error(), events,
                                    single ? plan->reports[0].name : "", options.stop);
        !waited) {
      status = waited;
      break;
    }
    ++plan->reconnects;
  }
  // A summary line for every file left unfinished that got as far as an offer.
  double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  auto left_state = !status && exit_code_for(status.error().kind) == exit_code::k_temp_fail
                        ? FileReport::State::interrupted
                        : FileReport::State::failed;
  std::size_t files = 0, complete = 0, already = 0;
  for (std::size_t i = 0; i < plan->entries.size(); ++i) {
    if (plan->entries[i].kind != SourceEntry::Kind::file) continue;
    auto& r = plan->reports[i];
    ++files;
    if (plan->done[i]) {
      complete += r.state == FileReport::State::complete;
      already += r.state == FileReport::State::already_complete;
    } else if (plan->offered[i] || single) {
      r.state = left_state;
      r.reconnects = plan->reconnects;
      r.seconds = seconds;
      events.file_report(true, r);
    }
    report.size += r.size;
    report.bytes += r.bytes;
  }
  if (single) {
    report = plan->reports[0];
  } else {
    report.name = std::to_string(files) + " files";
    report.seconds = seconds;
    report.reconnects = plan->reconnects;
    report.state = status ? FileReport::State::complete : left_state;
    // (A fetch-only session has nothing of its own to sum up.)
    if (files > 0 || options.fetch.empty())
      events.info("session: " + std::to_string(files) + " files (" + std::to_string(complete) + " sent, " +
                  std::to_string(already) + " already complete), " + std::to_string(report.bytes) + " bytes sent in " +
                  std::to_string(seconds).substr(0, std::to_string(seconds).find('.') + 3) + " s");
  }
  if (!options.fetch.empty())
    events.info(std::string("fetch: ") + (plan->fetched ? "done" : "not finished") + ", " +
                std::to_string(plan->fetched_files) + " files received, " + std::to_string(plan->fetched_already) +
                " already complete, " + std::to_string(plan->fetched_bytes) + " bytes received into " +
                options.fetch_dir);
  return status;
}

} // namespace sesscp
