// IncomingFile: the receiving half of one file, from its OFFER to its FILE_DONE.
#pragma once

#include "base/aligned.h"
#include "base/fd.h"
#include "base/file_io.h"
#include "base/hash.h"
#include "base/result.h"
#include "checkpoint/journal.h"
#include "checkpoint/verify.h"
#include "core/events.h"
#include "core/frame.h"
#include "core/recv/chunk_writer.h"
#include "core/recv/receiver.h"
#include "core/recv/small_files.h"
#include "core/recv/syncer.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

namespace sesscp::recv {

using Clock = std::chrono::steady_clock;

// The receiving half of one file (an activity): resume planning, the data
// path, minor sync points, and the major sync point. The session drives it
// frame by frame. A file of at most one chunk is never journaled (there is
// no minor sync point to keep); its major sync point is committed together
// with other small files' (Session::commit_batch).
//
// Where its methods are: incoming_file.cpp (offer, resume, begin, the major
// sync point), chunk_path.cpp (each chunk's way from the socket to a
// CHECKPOINT), earlier_chunks.cpp (proving the chunks of earlier sessions).
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

  // What the session negotiated (frame::feature bits): REPAIR/VERIFIED
  // (background re-verification) and SOURCE_HASHES (--checksum). Set
  // before open().
  void set_features(std::uint64_t features) {
    m_peer_repairs = (features & frame::feature::k_repair) != 0;
    m_checksum = (features & frame::feature::k_checksum) != 0;
  }
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
  // ... (on the small-file writer's thread: write its only chunk and its
  // metadata) ...
  void write_small(std::span<const std::uint8_t> data);
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

  // Planning (incoming_file.cpp).
  Result<frame::Resume> plan(const frame::Offer& offer);
  // NAME as it is now: whether it is the offered file already (size and
  // mtime). Drops a part that is a second name of NAME (then, for a small
  // file, leases a part of its own again and stats it into `lease`).
  Result<bool> inspect_final(const frame::Offer& offer, struct stat& lease);
  Result<frame::Resume> plan_small(const frame::Offer& offer, const struct stat& lease);
  Result<frame::Resume> plan_journaled(bool have_journal);
  Result<frame::Resume> start_fresh(frame::ResumeWhy why, const std::string& message);
  // Resume from a journal: check the confirmed chunks now (tail, or an
  // older peer) or plan their check in the background; the resume point.
  Result<frame::Resume> resume_from(checkpoint::Replay& replay, Result<checkpoint::Journal>& journal);
  // Before answering: how many of the journal's chunks the part proves.
  Result<std::uint64_t> verify_now(const checkpoint::Replay& replay);
  // Rewrite the journal so it claims only the first `proven` chunks.
  Status truncate_journal(checkpoint::Replay& replay, std::uint64_t proven, Result<checkpoint::Journal>& journal);
  Status check_free_space(const frame::Resume& resume) const;
  Status publish();
  std::string path(const std::string& leaf) const { return m_dir_path + "/" + leaf; }

  // The chunk path (chunk_path.cpp), in pipeline order.
  // Start the syncer and the writer of a journaled file.
  void start_pipeline();
  // Read a DATA frame's prefix from `conn` and claim its chunk (claim_chunk,
  // taking m_mx): the prefix and the chunk's length.
  struct Claim {
    frame::DataPrefix prefix;
    std::uint64_t len = 0;
  };
  Result<Claim> read_claim(Conn& conn, const frame::Header& header);
  // Under m_mx: chunk `index` may arrive now with a DATA payload of `length`
  // bytes; it is marked in flight. Returns the chunk's length.
  Result<std::uint64_t> claim_chunk(std::uint64_t index, std::uint32_t length);
  // Under m_mx: a claimed chunk failed its hash (or could not be read).
  Status chunk_failed(std::uint64_t index);
  // Under m_mx: a repaired chunk's DATA matches what it must hold.
  Status check_repair(std::uint64_t index, const Hash128& hash);
  // Write a verified chunk of a journaled file: through the page cache with
  // writeback started at once, or with O_DIRECT where it was asked for
  // (SESSCP_DIRECT_IO=1) and the file system allows it.
  Status write_chunk(std::span<const std::uint8_t> chunk, std::uint64_t offset);
  // Under m_mx: a claimed chunk arrived whole and verified (and is written).
  void record_chunk(std::uint64_t index, const Hash128& hash);
  // Under m_mx: hand the sync points whose chunks are all recorded to the syncer.
  void dispatch();

  // The chunks of earlier sessions (earlier_chunks.cpp).
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
  // Under m_mx: every chunk below the resume point is proven this run.
  bool earlier_proven() const {
    return m_earlier_good == m_first && (!m_checksum || m_source_next == m_first);
  }

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
  Fd m_direct;                         // the part with O_DIRECT, if asked for and allowed
  std::atomic<bool> m_direct_ok{true}; // false after the file system refused a direct write
  // Its thread records chunks into the members above, so it stops first ...
  std::optional<ChunkWriter> m_writer;
  // ... after this one, which asks the writer and the syncer (poke).
  std::unique_ptr<checkpoint::Reverifier> m_reverifier;
};

} // namespace sesscp::recv
