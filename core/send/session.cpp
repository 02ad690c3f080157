// The session driver: establish, push (offers ahead of the data, then each
// file's chunks), the data token, release. The per-file steps are in
// outgoing_file.cpp, the per-chunk ones in chunk_path.cpp.
#include "core/send/session.h"
#include "core/transport.h"

#include "core/conn.h"
#include "core/duplex.h"

#include <unistd.h>

#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>

namespace sesscp::send {

namespace {

std::string hostname() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

} // namespace

Status Session::run(Conn& conn, const Connect& connect) {
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
  for (auto i : m_todo) m_plan.entries[i].done = true;
  return {};
}

Status Session::run_turn(Conn& conn) {
  SESSCP_TRY(push(conn));
  return give_token(conn);
}

Status Session::run_direction(Conn& conn) {
  SESSCP_TRY(push(conn));
  SESSCP_TRY(release(conn));
  for (auto i : m_todo) m_plan.entries[i].done = true;
  return {};
}

// Full-duplex: ask for the fetch, then send this side's files and receive
// the peer's at once, each direction with its own sync points, journals and
// release (docs/PROTOCOL.md, "Full-duplex").
Status Session::run_full_duplex(Conn& conn) {
  SESSCP_TRY(m_machine.on_send(frame::Type::fetch));
  SESSCP_TRY(conn.send(frame::encode(frame::Fetch{m_opt.fetch})));
  m_events.debug("full-duplex: sending " + std::to_string(m_plan.entries.size()) + " entries while fetching " +
                 std::to_string(m_opt.fetch.size()) + " path(s) into " + m_opt.fetch_dir);
  auto send = [&](Conn& c) -> Status {
    auto machine = session::Machine::direction(session::Role::initiator);
    Session direction(m_opt, m_events, m_plan, machine, "receiver");
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

Status Session::establish(Conn& conn) {
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

frame::Hello Session::hello() const {
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
  if (m_opt.transport) hello.features |= frame::feature::k_stdio;
  // SESSCP_COMPAT_NO_REPAIR=1: offer no REPAIR (bit 5), as a sender older
  // than verified resume; for the tests of the receiver's fallback.
  if (const char* env = std::getenv("SESSCP_COMPAT_NO_REPAIR"); env && std::string_view(env) == "1")
    hello.features &= ~frame::feature::k_repair;
  return hello;
}

Status Session::exchange_hello(Conn& conn) {
  const frame::Hello ours = hello();
  SESSCP_TRY(m_machine.set_mode(ours.mode));
  SESSCP_TRY(m_machine.on_send(frame::Type::hello));
  SESSCP_TRY(conn.send(frame::encode(ours)));
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
  return on_accept(conn, ours, p);
}

Status Session::on_accept(Conn& conn, const frame::Hello& hello, std::span<const std::uint8_t> payload) {
  auto accept = frame::decode_accept(payload);
  if (!accept) return accept.error();
  if (accept->version != frame::k_protocol_version)
    return make_error(ErrorKind::version, "receiver accepted with protocol version " +
                                              std::to_string(accept->version));
  if (accept->mode != hello.mode)
    return unexpected(conn, frame::Type::accept,
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
  if (m_opt.transport)
    m_events.debug(std::string("transport: ") + m_opt.transport->describe() +
                   ((m_features & frame::feature::k_stdio) ? "; the receiver confirms a session over its stdio, "
                                                             "encrypted and authenticated by SSH"
                                                           : "; the receiver did not confirm --stdio"));
  return {};
}

Status Session::open_streams(const Connect& connect) {
  auto pool = send::open_streams(m_opt.streams, *m_cookie, connect, m_opt.bwlimit, m_opt.stop);
  if (!pool) return pool.error();
  m_pool = std::move(*pool);
  m_events.debug(std::to_string(m_opt.streams) + " streams: " + std::to_string(m_pool->size()) +
                 " extra connections joined the session");
  return {};
}

// Offer, transfer and confirm every file of the plan not done yet.
Status Session::push(Conn& conn) {
  for (std::size_t i = 0; i < m_plan.entries.size(); ++i)
    if (!m_plan.entries[i].done) m_todo.push_back(i);
  // Offer, transfer and confirm every file: offers run ahead of the data.
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
        SESSCP_TRY(await_streams(conn));
        continue;
      }
    }
    bool can_send = m_active && !m_file.file_end_sent &&
                    (m_file.sent == m_file.chunks || m_file.window_open(m_opt.window));
    if (can_send) SESSCP_TRY(pump(conn));
    if (finished()) break;
    SESSCP_TRY(await_peer(conn));
  }
  return {};
}

// --streams: wait for the receiver, a writer's news or the hasher's, only
// while the first connection has nothing to claim.
Status Session::await_streams(Conn& conn) {
  bool more = m_pool->claimable();
  auto ready = conn.wait_readable(m_pool->wake_fd(), more ? 0 : m_opt.timeout_ms, hasher_fd());
  if (!ready && (!more || ready.error().kind != ErrorKind::timeout)) return ready.error();
  if (!ready || !*ready) return {};
  return read_and_handle(conn);
}

// Wait for the receiver only when nothing can be sent; else just look.
Status Session::await_peer(Conn& conn) {
  bool busy = (m_active && !m_file.file_end_sent && m_file.window_open(m_opt.window)) ||
              (!m_active && !m_ready.empty()) || can_top_up();
  // --checksum: hashes still to come wake the wait too.
  const bool hashing = m_hasher && !m_hasher->all_taken();
  if ((busy || hashing) && !std::exchange(m_peer_ready, false)) {
    auto ready = conn.wait_readable(hasher_fd(), busy ? 0 : m_opt.timeout_ms);
    if (!ready && ready.error().kind != ErrorKind::timeout) return ready.error();
    if (!ready || !*ready) return {};
  }
  m_peer_ready = false;
  return read_and_handle(conn);
}

Status Session::read_and_handle(Conn& conn) {
  std::span<const std::uint8_t> payload;
  auto h = next_frame(conn, payload);
  if (!h) return h.error();
  return handle(conn, *h, payload);
}

// Read the next frame's header and, for a control frame, its payload;
// ABORT becomes an error, and a frame the dialog rules forbid (DATA from the
// receiver in a simplex session, ...) is answered with ABORT protocol.
Result<frame::Header> Session::next_frame(Conn& conn, std::span<const std::uint8_t>& payload) {
  // DATA is read as far as its header (with any length a chunk may have), so
  // it is reported as the dialog violation it is rather than as a bad length.
  auto header = conn.read_header(frame::k_data_prefix + frame::k_max_chunk_size);
  if (!header) return header.error();
  if (auto legal = m_machine.on_receive(header->type); !legal) {
    conn.send_abort(frame::Reason::protocol, legal.error().message);
    return make_error(ErrorKind::protocol, std::string(m_peer) + " broke the protocol: " + legal.error().message);
  }
  SESSCP_TRY(read_payload(conn, *header, payload, m_peer));
  return header;
}

Status Session::handle(Conn& conn, const frame::Header& header, std::span<const std::uint8_t> payload) {
  switch (header.type) {
  case frame::Type::resume: return on_resume(conn, payload);
  case frame::Type::file_done: return on_file_done(conn, payload);
  case frame::Type::checkpoint: return on_checkpoint(conn, payload);
  case frame::Type::resend: return on_resend(conn, payload);
  case frame::Type::repair: return on_repair(conn, payload);
  case frame::Type::verified: return on_verified(conn, payload);
  case frame::Type::please_token: on_please_token(); return {};
  default: return unexpected(conn, header.type, "RESUME, CHECKPOINT, RESEND or FILE_DONE", m_peer);
  }
}

void Session::on_please_token() {
  // The machine recorded the request (or ignored one that crossed our GIVE_TOKEN).
  if (m_machine.token_asked())
    m_events.debug(m_turn ? "the initiator asked for the data token; it goes back when this turn is confirmed"
                          : "the receiver asked for the data token; it passes once everything offered is confirmed");
}

// Half-duplex: give the data token to the peer at a major sync point
// (everything sent is confirmed). The initiator's GIVE_TOKEN carries its
// fetch request the first time, and it then receives the peer's turn; the
// responder's gives the token back at the end of its turn.
Status Session::give_token(Conn& conn) {
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
Status Session::receive_fetched(Conn& conn, session::Machine& machine, Events& events, Dialog dialog) {
  if (!m_opt.receive_turn) return make_error(ErrorKind::internal, "--fetch without a receiving engine (dialog::wire)");
  TurnOptions turn;
  turn.dir = m_opt.fetch_dir;
  turn.timeout_ms = m_opt.timeout_ms;
  turn.stop = m_opt.stop;
  turn.verify_resume = m_opt.verify_resume;
  turn.features = m_features;
  return m_opt.receive_turn(conn, machine, turn, events, dialog);
}

// Negotiated release: asked only when nothing is unconfirmed; the receiver
// may answer NOT_FINISHED, and then the session goes on and asks again.
Status Session::release(Conn& conn) {
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
    SESSCP_TRY(pause_before_release(conn, attempt));
  }
}

// Give the receiver time to finish what it has; anything it says meanwhile is read.
Status Session::pause_before_release(Conn& conn, int attempt) {
  auto ready = conn.wait_readable(-1, 100 * attempt);
  if (ready && *ready) {
    std::span<const std::uint8_t> p;
    auto frame = next_frame(conn, p);
    if (!frame) return frame.error();
    return unexpected(conn, frame->type, "nothing while a release is pending");
  }
  if (!ready && ready.error().kind != ErrorKind::timeout) return ready.error();
  return {};
}

} // namespace sesscp::send
