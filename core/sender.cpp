#include "core/sender.h"

#include "checkpoint/journal.h"
#include "core/conn.h"
#include "core/frame.h"
#include "core/source.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <deque>
#include <thread>
#include <vector>

namespace sesscp {

namespace {

using Clock = std::chrono::steady_clock;
using checkpoint::chunk_count;
using checkpoint::chunk_length;

std::string basename_of(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string hostname() {
  char buf[256] = {};
  gethostname(buf, sizeof buf - 1);
  return buf;
}

// An error the receiver reported in ABORT or REFUSE.
Error remote_error(frame::Reason reason, const std::string& message) {
  auto kind = frame::error_kind_for(reason);
  // The receiver's disk or I/O trouble is not ours: the state is saved and
  // the same command resumes once the receiver is fixed.
  if (kind == ErrorKind::io || kind == ErrorKind::no_space) kind = ErrorKind::interrupted;
  return make_error(kind, "receiver: " + std::string(frame::to_string(reason)) +
                              (message.empty() ? "" : ": " + message));
}

// Read the next control frame, turning ABORT into an error.
Result<frame::Header> next_frame(Conn& conn, std::span<const std::uint8_t>& payload) {
  auto header = conn.read_header(0);
  if (!header) return header.error();
  auto p = conn.read_control_payload(*header);
  if (!p) return p.error();
  payload = *p;
  if (header->type == frame::Type::abort) {
    auto abort = frame::decode_abort(payload);
    if (!abort) return abort.error();
    return remote_error(abort->reason, abort->message);
  }
  return header;
}

Error unexpected(Conn& conn, frame::Type got, const char* expected) {
  std::string msg = std::string("expected ") + expected + ", got " + frame::to_string(got);
  conn.send_abort(frame::Reason::protocol, msg);
  return make_error(ErrorKind::protocol, "receiver broke the protocol: " + msg);
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

class Sender {
public:
  Sender(const SendOptions& options, Events& events, FileReport& report)
      : m_opt(options), m_events(events), m_report(report), m_bytes_before(report.bytes) {}

  Status run(SourceFile& source, Conn& conn);

private:
  Status establish(Conn& conn);
  Status exchange_hello(Conn& conn);
  Result<frame::Resume> offer(SourceFile& source, Conn& conn);
  Status transfer(SourceFile& source, Conn& conn, const frame::Resume& resume);
  Status send_chunk(SourceFile& source, Conn& conn, std::uint64_t index, bool resend);
  Status handle(SourceFile& source, Conn& conn, const frame::Header& header,
                std::span<const std::uint8_t> payload);
  Status release(Conn& conn);

  const SendOptions& m_opt;
  Events& m_events;
  FileReport& m_report;
  Clock::time_point m_start = Clock::now();
  std::uint64_t m_bytes_before; // sent by earlier attempts (not throttled again)

  std::uint32_t m_chunk_size = 0;
  std::uint64_t m_chunks = 0;     // chunks in the file
  std::uint64_t m_first = 0;      // first chunk sent this session
  std::uint64_t m_confirmed = 0;  // every chunk below is durable at the receiver
  std::uint64_t m_sent = 0;       // every chunk below has been sent once
  std::deque<Hash128> m_unconfirmed; // hashes of chunks [m_confirmed, m_sent)
  RootBuilder m_session_root;
  std::vector<std::uint8_t> m_buf;
  bool m_done = false;
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

Status Sender::exchange_hello(Conn& conn) {
  frame::Hello hello;
  hello.identity = "sesscp/" SESSCP_VERSION " " + hostname();
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
  m_events.debug("session established with " + accept->identity);
  return {};
}

Result<frame::Resume> Sender::offer(SourceFile& source, Conn& conn) {
  frame::Offer offer;
  offer.name = m_report.name;
  offer.size = source.size();
  offer.mtime_ns = source.mtime_ns();
  offer.chunk_size = m_opt.chunk_size;
  offer.mode_bits = source.mode_bits();
  auto fp = source.fingerprint();
  if (!fp) return fp.error();
  offer.fingerprint = *fp;
  SESSCP_TRY(conn.send(frame::encode(offer)));
  m_events.offered(m_report.name, offer.size);
  m_events.phase(m_report.name, Events::Phase::verifying, "");
  std::span<const std::uint8_t> p;
  auto h = next_frame(conn, p);
  if (!h) return h.error();
  if (h->type != frame::Type::resume) return unexpected(conn, h->type, "RESUME");
  auto resume = frame::decode_resume(p);
  if (!resume) return resume.error();
  if (resume->status == frame::ResumeStatus::transfer &&
      resume->next_chunk > chunk_count(resume->chunk_size, source.size()))
    return unexpected(conn, h->type, "a resume point inside the file");
  return resume;
}

Status Sender::send_chunk(SourceFile& source, Conn& conn, std::uint64_t index, bool resend) {
  auto len = chunk_length(index, m_chunk_size, source.size());
  std::span<std::uint8_t> chunk(m_buf.data(), len);
  SESSCP_TRY(source.read_at(index * m_chunk_size, chunk));
  auto hash = xxh3_128(chunk);
  if (resend) {
    // The receiver saw different bytes than we hashed: resend, unless our own
    // bytes changed, in which case the file is no longer the one we offered.
    if (hash != m_unconfirmed[index - m_confirmed])
      return make_error(ErrorKind::source_changed, source.path() + " changed while it was being sent");
    m_events.debug("resending chunk " + std::to_string(index) + " at the receiver's request");
  } else {
    m_unconfirmed.push_back(hash);
    m_session_root.add(hash);
  }
  SESSCP_TRY(conn.send_data({index, hash}, chunk));
  m_report.bytes += len;
  throttle(m_opt.bwlimit, m_report.bytes - m_bytes_before, m_start, m_opt.stop);
  return {};
}

Status Sender::handle(SourceFile& source, Conn& conn, const frame::Header& header,
                      std::span<const std::uint8_t> payload) {
  switch (header.type) {
  case frame::Type::checkpoint: {
    auto cp = frame::decode_checkpoint(payload);
    if (!cp) return cp.error();
    if (cp->end_chunk < m_confirmed || cp->end_chunk > m_sent)
      return unexpected(conn, header.type, "a CHECKPOINT within the chunks sent");
    m_unconfirmed.erase(m_unconfirmed.begin(),
                        m_unconfirmed.begin() + static_cast<std::ptrdiff_t>(cp->end_chunk - m_confirmed));
    m_confirmed = cp->end_chunk;
    m_events.progress(m_report.name, std::min(m_confirmed * m_chunk_size, source.size()), source.size());
    return {};
  }
  case frame::Type::resend: {
    auto rs = frame::decode_resend(payload);
    if (!rs) return rs.error();
    if (rs->chunk < m_confirmed || rs->chunk >= m_sent)
      return unexpected(conn, header.type, "a RESEND of an unconfirmed chunk");
    return send_chunk(source, conn, rs->chunk, true);
  }
  case frame::Type::file_done: {
    auto fd = frame::decode_file_done(payload);
    if (!fd) return fd.error();
    if (m_confirmed != m_chunks || fd->size != source.size())
      return unexpected(conn, header.type, "FILE_DONE after every chunk was confirmed");
    m_report.file_root = fd->file_root;
    m_done = true;
    return {};
  }
  default: return unexpected(conn, header.type, "CHECKPOINT, RESEND or FILE_DONE");
  }
}

Status Sender::transfer(SourceFile& source, Conn& conn, const frame::Resume& resume) {
  m_chunk_size = resume.chunk_size;
  m_chunks = chunk_count(m_chunk_size, source.size());
  m_first = m_confirmed = m_sent = resume.next_chunk;
  m_buf.resize(m_chunk_size);
  std::uint64_t serial = resume.next_serial;
  std::uint64_t last_sync = m_first;
  std::uint64_t sync_every = sync_interval_chunks(m_opt.window, m_chunk_size);
  std::uint64_t max_in_flight = window_chunks(m_opt.window, m_chunk_size);
  bool file_end_sent = false;
  std::span<const std::uint8_t> payload;

  while (!m_done) {
    // Send while the window has room; acknowledgements are read in between,
    // so data never waits for a round trip while the window is open.
    while (m_sent < m_chunks && m_sent - m_confirmed < max_in_flight) {
      SESSCP_TRY(send_chunk(source, conn, m_sent, false));
      ++m_sent;
      if (m_sent - last_sync >= sync_every || m_sent == m_chunks) {
        SESSCP_TRY(conn.send(frame::encode(frame::Sync{serial++, m_sent})));
        last_sync = m_sent;
      }
      auto ready = conn.wait_readable(-1, 0);
      if (ready && *ready) break;
      if (!ready && ready.error().kind != ErrorKind::timeout) return ready.error();
    }
    if (m_sent == m_chunks && !file_end_sent) {
      // Major sync point: the source must still be the file we offered.
      m_events.phase(m_report.name, Events::Phase::finalising, "");
      SESSCP_TRY(source.check_unchanged());
      SESSCP_TRY(conn.send(frame::encode(frame::FileEnd{m_first, m_chunks, m_session_root.digest()})));
      file_end_sent = true;
    }
    auto h = next_frame(conn, payload);
    if (!h) return h.error();
    SESSCP_TRY(handle(source, conn, *h, payload));
  }
  return {};
}

Status Sender::release(Conn& conn) {
  SESSCP_TRY(conn.send(frame::encode_empty(frame::Type::release)));
  std::span<const std::uint8_t> p;
  auto h = next_frame(conn, p);
  if (!h) return h.error();
  if (h->type != frame::Type::release_ack) return unexpected(conn, h->type, "RELEASE_ACK");
  return {};
}

Status Sender::run(SourceFile& source, Conn& conn) {
  // Establish the session.
  SESSCP_TRY(establish(conn));
  // Offer the file; the receiver answers with its resume point.
  auto resume = offer(source, conn);
  if (!resume) return resume.error();
  m_report.size = source.size();
  if (resume->status == frame::ResumeStatus::complete) {
    if (m_report.reconnects == 0) {
      m_report.resumed_at = source.size();
      m_report.state = FileReport::State::already_complete;
    } else {
      // An earlier attempt sent the rest; the connection broke before FILE_DONE.
      m_report.state = FileReport::State::complete;
    }
    return release(conn);
  }
  auto offset = std::min(resume->next_chunk * resume->chunk_size, source.size());
  // After a reconnection the report keeps the first attempt's resume point.
  if (m_report.reconnects == 0) m_report.resumed_at = offset;
  if (offset > 0 || m_report.reconnects > 0) m_events.resumed(m_report.name, offset, source.size());
  if (!resume->message.empty()) m_events.info(m_report.name + ": " + resume->message);
  m_events.phase(m_report.name, Events::Phase::transferring, "");
  // Transfer with minor sync points, then the major sync point.
  SESSCP_TRY(transfer(source, conn, *resume));
  m_report.state = FileReport::State::complete;
  // Orderly release: nothing is unconfirmed now. The file is already
  // complete and durable, so a failed release is only worth a note.
  if (auto released = release(conn); !released)
    m_events.debug("release not acknowledged: " + released.error().message);
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

// Connect, authenticate, and run the session; everything after the source is open.
Status connect_and_send(const SendOptions& options, const tls::Context* tls, Events& events, FileReport& report,
                        SourceFile& source) {
  events.phase(report.name, Events::Phase::connecting, options.endpoint.host + ":" + std::to_string(options.endpoint.port));
  auto fd = net::connect_tcp(options.endpoint, options.timeout_ms);
  if (!fd) return fd.error();
  Conn conn(std::move(*fd), options.stop, options.timeout_ms);
  if (tls) {
    // Authenticate both ends before a single frame of the session is sent.
    auto ssl = tls->wrap(conn.fd(), options.endpoint.host);
    if (!ssl) return ssl.error();
    SESSCP_TRY(conn.start_tls(std::move(*ssl), false));
    if (auto peer = tls->check_peer(conn.ssl()); !peer) {
      conn.send_abort(frame::Reason::auth, "the sender does not trust the receiver's certificate");
      return peer.error();
    }
    events.debug(tls->describe() + (tls::ktls_send_active(conn.ssl()) ? ", kernel TLS offload" : ", TLS in user space"));
  }
  Sender sender(options, events, report);
  auto status = sender.run(source, conn);
  if (!status && status.error().kind == ErrorKind::interrupted)
    conn.send_abort(frame::Reason::interrupted, "sender interrupted");
  else if (!status && status.error().kind == ErrorKind::source_changed)
    conn.send_abort(frame::Reason::source_changed, status.error().message);
  return status;
}

} // namespace

Status send_file(const SendOptions& options, Events& events, FileReport& report) {
  report = FileReport{};
  report.name = options.name.empty() ? basename_of(options.path) : options.name;
  auto start = Clock::now();
  // Open the source first: a missing file is a usage error, not a network one.
  auto source = SourceFile::open(options.path);
  if (!source) return source.error();
  report.size = source->size();
  if (auto why = frame::check_name(report.name); !why.empty())
    return make_error(ErrorKind::usage, "cannot send as '" + report.name + "' (" + why + ")");
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
    status = connect_and_send(options, tls ? &*tls : nullptr, events, report, *source);
    if (status || !options.retry.enabled() || !retryable(status.error().kind)) break;
    // A signal here asked us to stop: that is not a failure to retry.
    if (options.stop && options.stop->load()) break;
    double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    auto delay = backoff.next(attempt, elapsed);
    if (!delay) {
      status = make_error(ErrorKind::interrupted, "gave up after " + std::to_string(attempt) + " attempt" +
                                                      (attempt == 1 ? "" : "s") + ": " + status.error().message);
      break;
    }
    events.phase(report.name, Events::Phase::reconnecting, status.error().message);
    events.reconnecting(attempt, options.retry.retries, *delay, status.error().message);
    if (!sleep_unless_stopped(*delay, options.stop)) {
      status = make_error(ErrorKind::interrupted, "interrupted by a signal while waiting to reconnect");
      break;
    }
    ++report.reconnects;
    report.state = FileReport::State::failed;
  }
  report.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (!status && report.state != FileReport::State::complete)
    report.state = exit_code_for(status.error().kind) == exit_code::k_temp_fail ? FileReport::State::interrupted
                                                                                : FileReport::State::failed;
  events.file_report(true, report);
  return status;
}

} // namespace sesscp
