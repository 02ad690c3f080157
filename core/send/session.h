// One session of the sending engine (or one sending turn or direction of it): offers, chunks, confirmations, release.
#pragma once

#include "base/hash.h"
#include "core/events.h"
#include "core/frame.h"
#include "core/send/common.h"
#include "core/send/outgoing_file.h"
#include "core/send/plan.h"
#include "core/send/sender.h"
#include "core/send/stages.h"
#include "core/send/streams.h"
#include "core/session_state.h"

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <vector>

namespace sesscp::send {

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
// A receiver that keeps answering NOT_FINISHED is given this many tries.
constexpr int k_release_attempts = 10;

// Why a chunk of the active file is read.
enum class Pass {
  first, // for its first DATA, in order: read ahead by the ChunkReader when there is one
  again, // sent once already (RESEND), or in an earlier session (REPAIR): from the source
};

class Session {
public:
  // The initiator of a session.
  Session(const SendOptions& options, Events& events, Plan& plan)
      : m_opt(options), m_events(events), m_plan(plan), m_machine(m_own_machine), m_bytes_before(plan.bytes) {}
  // The responder's turn in a half-duplex session, over its established
  // session; or one sending direction of a full-duplex session.
  Session(const SendOptions& options, Events& events, Plan& plan, session::Machine& machine,
          const char* peer = "sender")
      : m_opt(options), m_events(events), m_plan(plan), m_machine(machine), m_turn(true), m_peer(peer),
        m_bytes_before(plan.bytes) {}

  // Establish, push, (half-duplex) fetch, release. With --streams, the
  // extra connections come from `connect` (connected and authenticated).
  Status run(Conn& conn, const Connect& connect = {});
  // Push, then give the data token back.
  Status run_turn(Conn& conn);
  // Full-duplex: push, then release this direction.
  Status run_direction(Conn& conn);

private:
  // session.cpp: the session from HELLO to RELEASE.
  Status run_full_duplex(Conn& conn);
  Status establish(Conn& conn);
  Status exchange_hello(Conn& conn);
  frame::Hello hello() const;
  Status on_accept(Conn& conn, const frame::Hello& hello, std::span<const std::uint8_t> payload);
  Status open_streams(const Connect& connect);
  Status push(Conn& conn);
  Status await_streams(Conn& conn);
  Status await_peer(Conn& conn);
  Status read_and_handle(Conn& conn);
  Result<frame::Header> next_frame(Conn& conn, std::span<const std::uint8_t>& payload);
  Status handle(Conn& conn, const frame::Header& header, std::span<const std::uint8_t> payload);
  void on_please_token();
  Status give_token(Conn& conn);
  Status receive_fetched(Conn& conn, session::Machine& machine, Events& events, Dialog dialog);
  Status release(Conn& conn);
  Status pause_before_release(Conn& conn, int attempt);
  bool all_confirmed() const {
    return m_awaiting_resume.empty() && m_ready.empty() && !m_active && m_unfinished.empty();
  }
  bool finished() const { return m_next >= m_todo.size() && all_confirmed(); }

  // outgoing_file.cpp: each file's way, OFFER, RESUME, active, FILE_DONE.
  bool can_top_up() const;
  Status top_up(Conn& conn);
  Status offer(Conn& conn, std::size_t index);
  Status on_resume(Conn& conn, std::span<const std::uint8_t> payload);
  void start_next();
  Status on_file_done(Conn& conn, std::span<const std::uint8_t> payload);
  void finish_report(std::size_t entry, FileReport::State state);
  FileReport& report(const OutgoingFile& file) { return m_plan.entries[file.entry].report; }

  // chunk_path.cpp: the active file's chunks, read, hashed, framed, sent.
  Status pump(Conn& conn);
  Result<Chunk> read_chunk(std::uint64_t index, Pass pass);
  Status send_next_chunk(Conn& conn);
  void release_chunk(std::uint64_t index);
  Status sent_bytes(Conn& conn, std::uint64_t len);
  Status send_sync(Conn& conn);
  Result<frame::FileEnd> file_end();
  bool streaming() const { return m_pool && m_active && !m_active->small && !m_file.file_end_sent; }
  Status pump_streams(Conn& conn);
  Status collect_streams(Conn& conn);
  Status on_checkpoint(Conn& conn, std::span<const std::uint8_t> payload);
  Status on_resend(Conn& conn, std::span<const std::uint8_t> payload);
  Status resend_chunk(Conn& conn, std::uint64_t index);
  Status on_repair(Conn& conn, std::span<const std::uint8_t> payload);
  Status send_repair(Conn& conn, std::uint64_t index);
  Status on_verified(Conn& conn, std::span<const std::uint8_t> payload);
  Status send_source_hashes(Conn& conn);
  int hasher_fd() const { return m_hasher ? m_hasher->wake_fd() : -1; }
  bool multi_chunk_active() const { return m_active && !m_active->small; }

  const SendOptions& m_opt;
  Events& m_events;
  Plan& m_plan;
  session::Machine m_own_machine{session::Role::initiator};
  session::Machine& m_machine;
  bool m_turn = false;            // the responder's turn of a half-duplex session
  const char* m_peer = "receiver";
  Clock::time_point m_start = Clock::now();
  std::uint64_t m_bytes_before; // sent by earlier attempts (not throttled again)

  std::vector<std::size_t> m_todo;            // entries this session sends, in order
  std::size_t m_next = 0;                     // next of m_todo to offer
  std::deque<OutgoingFile> m_awaiting_resume;
  std::deque<OutgoingFile> m_ready;           // RESUME says transfer; data not started
  std::optional<OutgoingFile> m_active;       // the file whose data is being sent
  std::deque<OutgoingFile> m_unfinished;      // FILE_END sent, FILE_DONE not yet received

  Transfer m_file; // the active file's transfer
  // The peer has something to read: a TLS error seen by a peek must be read
  // now, not looked for again (a second peek would not see it).
  bool m_peer_ready = false;
  std::vector<std::uint8_t> m_buf; // the session thread's own reads (what neither the ChunkReader nor the fingerprint holds)
  // --streams: the session's cookie (from ACCEPT), and the extra connections
  // (after m_active: destroyed first, so no writer outlives the file it reads).
  std::optional<frame::Cookie> m_cookie;
  std::unique_ptr<StreamPool> m_pool;
  // Without --streams: the active file's chunks read and hashed ahead
  // (destroyed before m_active, whose source it reads).
  std::unique_ptr<ChunkReader> m_reader;
  // What the session negotiated (frame::feature), and with --checksum the
  // active file's source hashes of earlier chunks, read on their own thread.
  std::uint64_t m_features = 0;
  std::unique_ptr<SourceHasher> m_hasher;
};

} // namespace sesscp::send
