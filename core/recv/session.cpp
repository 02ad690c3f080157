// Session: the loop of one connection: establish, step frame by frame, release; turns and full duplex.
#include "core/recv/session.h"

#include "core/duplex.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

namespace sesscp::recv {

namespace {

// How long a batch waits for more small files once the socket is quiet.
constexpr long long k_batch_linger_ms = 5;

} // namespace

Status sender_aborted(std::span<const std::uint8_t> payload) {
  auto abort = frame::decode_abort(payload);
  if (!abort) return abort.error();
  return make_error(frame::error_kind_for(abort->reason), std::string("sender aborted: ") +
                                                              frame::to_string(abort->reason) + ": " + abort->message);
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

Status Session::authenticate() {
  // Look at the first bytes without consuming them: a plaintext HELLO or a
  // TLS ClientHello on the wrong kind of receiver gets a precise refusal.
  auto ready = m_conn.wait_readable(-1, m_opt.handshake_timeout_ms);
  if (!ready) return ready.error();
  std::uint8_t first[4] = {};
  ssize_t n = ::recv(m_conn.fd(), first, sizeof first, MSG_PEEK | MSG_DONTWAIT);
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
  // The sender gave up before HELLO, e.g. it does not trust our certificate.
  if (header->type == frame::Type::abort) return sender_aborted(*payload);
  auto hello = frame::decode_hello(*payload);
  if (!hello) return hello.error();
  SESSCP_TRY(admit(*hello));
  return accept(*hello);
}

Status Session::admit(const frame::Hello& hello) {
  if (hello.version != frame::k_protocol_version) {
    std::string msg = "sender speaks protocol version " + std::to_string(hello.version) + ", this sesscp speaks " +
                      std::to_string(frame::k_protocol_version);
    refuse(frame::Reason::version, msg);
    return make_error(ErrorKind::version, msg + "; install the same sesscp version on both hosts");
  }
  if (m_admission == Admission::join_only) {
    std::string msg = m_opt.once ? "this receiver (--once) is serving a session already"
                                 : "too many sessions (--max-sessions " + std::to_string(m_opt.max_sessions) +
                                       "); retry later";
    refuse(frame::Reason::busy, msg);
    return make_error(ErrorKind::busy, msg);
  }
  SESSCP_TRY(m_machine.on_receive(frame::Type::hello));
  // Dialog control is negotiated here: the initiator asks, ACCEPT confirms.
  if (!session::Machine::supported(hello.mode)) {
    std::string msg = std::string("dialog mode ") + frame::to_string(hello.mode) +
                      " is not supported; this receiver runs simplex and half-duplex sessions";
    refuse(frame::Reason::unsupported_mode, msg);
    return make_error(ErrorKind::refused, msg);
  }
  if (m_dir_fd < 0 && hello.mode != frame::DialogMode::half_duplex) {
    // recv --stdio --serve DIR without --dir: started for a pull (get HOST:PATH).
    std::string msg = "this receiver only serves files (it was started for 'sesscp get'); it has no --dir to write into";
    refuse(frame::Reason::unsupported_mode, msg);
    return make_error(ErrorKind::refused, msg);
  }
  if (hello.mode != frame::DialogMode::simplex && m_opt.serve_dir.empty()) {
    // A half- or full-duplex session exists to fetch files back: there must be an export.
    std::string msg = std::string(frame::to_string(hello.mode)) +
                      " (--fetch) needs a receiver that exports a directory; this receiver was "
                      "started without --serve DIR";
    refuse(frame::Reason::unsupported_mode, msg);
    return make_error(ErrorKind::refused, msg);
  }
  return {};
}

Status Session::accept(const frame::Hello& hello) {
  SESSCP_TRY(m_machine.set_mode(hello.mode));
  frame::Accept accept;
  // --checksum is taken whenever it is offered.
  accept.features = hello.features & (frame::feature::k_all | frame::feature::k_checksum);
  if (m_opt.stdio) accept.features |= hello.features & frame::feature::k_stdio;
  accept.mode = hello.mode;
  accept.identity = "sesscp/" SESSCP_VERSION;
  // Several connections (--streams): a simplex session may have them; the
  // sender opens the others with JOIN and this cookie. Otherwise the bit is
  // not echoed and the sender uses one connection.
  unsigned streams = frame::feature::streams_of(hello.features);
  if (streams > 1 && streams <= frame::feature::k_max_streams && m_registry &&
      hello.mode == frame::DialogMode::simplex) {
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
  m_events.debug(m_peer + ": session established with " + hello.identity + " (" + frame::to_string(accept.mode) +
                 (m_hub ? ", " + std::to_string(streams) + " streams" : std::string()) + ")");
  m_conn.set_timeout(m_opt.timeout_ms);
  return {};
}

Status Session::send_ctl(frame::Type type, std::span<const std::uint8_t> frame) {
  SESSCP_TRY(m_machine.on_send(type));
  return m_conn.send(frame);
}

Status Session::serve_files() {
  Status status;
  while (status && m_machine.state() != session::State::closed) status = next_step();
  // The streams stop before the files they wrote are checkpointed.
  close_streams();
  if (!status) end_files(status.error());
  return status;
}

// One step of the session: finish what can be finished, then read a frame.
Status Session::next_step() {
  if (m_hub) SESSCP_TRY(poll_streams());
  SESSCP_TRY(confirm_commits());
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
  auto ready = wait_for_input(cur);
  if (!ready) return ready.error();
  if (!*ready) return {};
  return read_frame(cur);
}

Result<bool> Session::wait_for_input(IncomingFile* cur) {
  // Wake for the socket, the front file's syncer, or the committer (one
  // descriptor can be waited on with the socket: the other is polled).
  int wake = cur ? cur->wake_fd() : -1;
  bool committing = m_committer && m_committer->busy();
  if (committing && wake < 0) wake = m_committer->wake_fd();
  auto ready = m_conn.wait_readable(wake, committing && wake != m_committer->wake_fd() ? 5 : m_opt.timeout_ms,
                                    m_hub ? m_hub->wake_fd() : -1);
  if (!ready && committing && ready.error().kind == ErrorKind::timeout) return false;
  return ready;
}

Status Session::read_frame(IncomingFile* cur) {
  auto header = m_conn.read_header(cur ? cur->max_data() : 0);
  if (!header) return header.error();
  SESSCP_TRY(m_machine.on_receive(header->type));
  if (header->type == frame::Type::data) {
    if (!cur) return make_error(ErrorKind::protocol, "DATA with no file open");
    return cur->on_data(*header);
  }
  auto payload = m_conn.read_control_payload(*header);
  if (!payload) return payload.error();
  return on_control(cur, header->type, *payload);
}

Status Session::on_control(IncomingFile* cur, frame::Type type, std::span<const std::uint8_t> payload) {
  switch (type) {
  case frame::Type::sync:
  case frame::Type::file_end:
    if (!cur) return make_error(ErrorKind::protocol, std::string(frame::to_string(type)) + " with no file open");
    return type == frame::Type::sync ? cur->on_sync(payload) : cur->on_file_end(payload);
  case frame::Type::source_hashes:
    if (!cur) return make_error(ErrorKind::protocol, "SOURCE_HASHES with no file open");
    return cur->on_source_hashes(payload);
  case frame::Type::offer: return on_offer(payload);
  case frame::Type::mkdir: return on_mkdir(payload);
  case frame::Type::symlink: return on_symlink(payload);
  case frame::Type::release: return on_release();
  case frame::Type::give_token: return on_give_token(payload);
  case frame::Type::please_token: return {}; // recorded by the machine; a receiving side has nothing to grant
  case frame::Type::abort: {
    auto abort = frame::decode_abort(payload);
    if (!abort) return abort.error();
    return make_error(frame::error_kind_for(abort->reason),
                      std::string(m_machine.role() == session::Role::initiator ? "receiver aborted: " : "sender aborted: ") + frame::to_string(abort->reason) +
                          (abort->message.empty() ? "" : ": " + abort->message));
  }
  default:
    return make_error(ErrorKind::protocol, std::string("unexpected ") + frame::to_string(type));
  }
}

// Negotiated release: accepted only when nothing offered is unfinished.
Status Session::on_release() {
  if (!m_files.empty()) {
    std::string why = std::to_string(m_files.size()) + " offered file(s) not finished";
    m_events.debug(m_peer + ": release refused: " + why);
    return send_ctl(frame::Type::not_finished, frame::encode(frame::NotFinished{why}));
  }
  SESSCP_TRY(commit_batch());
  SESSCP_TRY(confirm_all_commits());
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
  if (auto committed = keep_commits(); !committed)
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
  if (header->type == frame::Type::abort) return sender_aborted(*payload);
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

} // namespace sesscp::recv
