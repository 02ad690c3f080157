// Session: one connection of the receiving side, from its HELLO (or JOIN) to its release.
#pragma once

#include "base/fd.h"
#include "base/result.h"
#include "core/conn.h"
#include "core/events.h"
#include "core/frame.h"
#include "core/recv/incoming_file.h"
#include "core/recv/receiver.h"
#include "core/recv/small_files.h"
#include "core/recv/streams.h"
#include "core/session_state.h"
#include "core/tls.h"
#include "core/turn.h"

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace sesscp::recv {

// What a listener's connection may open with (Receiver::serve): a session
// (HELLO) or a JOIN, or only a JOIN of a live session's extra stream (a
// --once receiver serves its session already, or --max-sessions is reached;
// a HELLO is then refused as busy).
enum class Admission : std::uint8_t { session_or_join, join_only };

// The error a peer's ABORT (its payload) stands for: "sender aborted: ...".
Status sender_aborted(std::span<const std::uint8_t> payload);

// One connection: establishment, files, release.
//
// Where its methods are: session.cpp (the loop: establish, read a frame,
// release, turns, full duplex), session_files.cpp (offers, directories,
// links, the batch of small files), streams.cpp (extra streams).
class Session {
public:
  // `streams` (may be null) is where sessions with extra streams are found
  // by their JOINs; `admission` says whether a HELLO is taken.
  Session(int dir_fd, const ReceiveOptions& opt, unsigned umask, Events& events, const tls::Context* tls,
          Fd socket, int serve_fd = -1, StreamRegistry* streams = nullptr,
          Admission admission = Admission::session_or_join, std::shared_ptr<std::atomic<bool>> is_stream = nullptr)
      : m_dir_fd(dir_fd), m_serve_fd(serve_fd), m_opt(opt), m_umask(umask), m_events(events), m_tls(tls),
        m_peer(net::peer_name(socket.get())),
        m_own_conn(std::in_place, std::move(socket), opt.stop, opt.handshake_timeout_ms), m_conn(*m_own_conn),
        m_machine(m_own_machine), m_registry(streams), m_admission(admission), m_is_stream(std::move(is_stream)) {}
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
  // Establishment (session.cpp).
  Status authenticate();
  Status establish();
  // Refuse a HELLO this receiver cannot serve (version, busy, mode).
  Status admit(const frame::Hello& hello);
  // ACCEPT it: features, extra streams, the session's timeout.
  Status accept(const frame::Hello& hello);

  // The session loop (session.cpp).
  Status serve_files();
  Status serve_full_duplex();
  Status serve(Conn& conn, session::Machine& machine, const std::vector<frame::FetchPath>& fetch, Dialog dialog);
  Status next_step();
  // Wait for a frame, the front file's syncer, the committer or the streams;
  // false: nothing to read yet.
  Result<bool> wait_for_input(IncomingFile* cur);
  Status read_frame(IncomingFile* cur);
  Status on_control(IncomingFile* cur, frame::Type type, std::span<const std::uint8_t> payload);
  Status on_release();
  Status on_give_token(std::span<const std::uint8_t> payload);
  void end_files(const Error& error);
  Status send_ctl(frame::Type type, std::span<const std::uint8_t> frame);

  // Files, directories and links (session_files.cpp).
  Status on_offer(std::span<const std::uint8_t> payload);
  // MKDIR: the directory now (writable by us); its mode and mtime at release.
  Status on_mkdir(std::span<const std::uint8_t> payload);
  // SYMLINK: the link, made under a temporary name and renamed into place.
  Status on_symlink(std::span<const std::uint8_t> payload);
  // A path frame::check_path refuses: ABORT (bad name), and the session ends.
  Status check_name(const char* what, const std::string& path);
  // The offered file's directory, created beneath --dir as needed.
  Status enter_parent(const std::string& name);
  // The front file's major sync point (a small file's: into the batch).
  Status finish_front();
  // Hand the batch of small files to the committer.
  Status commit_batch();
  // The batches the committer finished, in order: FILE_DONE for each file.
  Status confirm_commits();
  // ... after waiting for every batch submitted.
  Status confirm_all_commits();
  // The session broke: wait for every batch, and report its files complete
  // without FILE_DONE.
  Status keep_commits();
  template <class Each>
  Status take_commits(Each each);
  Status apply_directory_metadata();

  // Extra streams (streams.cpp).
  // An extra connection (JOIN): read its DATA into the session it joined.
  Status serve_stream();
  Status read_stream(StreamHub& hub);
  // With extra streams: send the RESENDs they asked for, end on their errors.
  Status poll_streams();
  // Tell the streams which file takes their DATA (the first journaled one).
  void update_target();
  // Stop the streams (the session ends); idempotent.
  void close_streams();

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
  Admission m_admission = Admission::session_or_join;
  std::shared_ptr<StreamHub> m_hub;
  frame::Cookie m_cookie{};
  std::optional<frame::Join> m_join;
  // Set once this connection joined a session as an extra stream: the
  // listener does not count it against --max-sessions any more.
  std::shared_ptr<std::atomic<bool>> m_is_stream;
};

} // namespace sesscp::recv
