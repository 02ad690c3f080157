// Extra streams (--streams): the hub a session shares with them, the registry JOINs look in, and the
// session's side of them (joining, reading DATA, RESENDs, the file they write).
#include "core/recv/streams.h"

#include "core/recv/incoming_file.h"
#include "core/recv/session.h"

#include <openssl/rand.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>

namespace sesscp::recv {

std::string StreamHub::join(std::uint16_t index, int fd) {
  std::lock_guard lock(m_mutex);
  if (m_closed) return "JOIN for a session that is ending";
  if (index < 1 || index >= m_streams)
    return "JOIN as stream " + std::to_string(index) + ", but the HELLO announced " + std::to_string(m_streams) +
           " streams (1.." + std::to_string(m_streams - 1) + " may join)";
  if (!m_joined.insert(index).second) return "stream " + std::to_string(index) + " joined twice";
  m_fds.push_back(fd);
  return "";
}

void StreamHub::leave(int fd) {
  std::lock_guard lock(m_mutex);
  m_fds.erase(std::remove(m_fds.begin(), m_fds.end(), fd), m_fds.end());
}

std::size_t StreamHub::joined() {
  std::lock_guard lock(m_mutex);
  return m_joined.size();
}

std::size_t StreamHub::outstanding() {
  std::lock_guard lock(m_mutex);
  return m_closed ? 0 : m_streams - 1 - m_joined.size();
}

IncomingFile* StreamHub::acquire() {
  std::lock_guard lock(m_mutex);
  if (!m_target || m_closed) return nullptr;
  ++m_in_use;
  return m_target;
}

void StreamHub::release() {
  std::lock_guard lock(m_mutex);
  --m_in_use;
  m_cv.notify_all();
}

void StreamHub::set_target(IncomingFile* file) {
  std::unique_lock lock(m_mutex);
  if (m_target == file) return;
  m_target = nullptr;
  wait_idle(lock);
  m_target = m_closed ? nullptr : file;
}

void StreamHub::fail(const Error& error) {
  std::lock_guard lock(m_mutex);
  if (m_closed || m_error) return;
  m_error = error;
  m_wake.poke();
}

void StreamHub::resend(std::uint64_t chunk) {
  std::lock_guard lock(m_mutex);
  m_resends.push_back(chunk);
  m_wake.poke();
}

std::optional<Error> StreamHub::take(std::vector<std::uint64_t>& resends) {
  m_wake.clear();
  std::lock_guard lock(m_mutex);
  resends.swap(m_resends);
  m_resends.clear();
  return m_error;
}

bool StreamHub::closed() {
  std::lock_guard lock(m_mutex);
  return m_closed;
}

void StreamHub::close() {
  std::unique_lock lock(m_mutex);
  if (!m_closed) {
    m_closed = true;
    m_target = nullptr;
    m_closing.poke();
    for (int fd : m_fds) ::shutdown(fd, SHUT_RDWR);
  }
  wait_idle(lock);
}

void StreamHub::wait_idle(std::unique_lock<std::mutex>& lock) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(m_timeout_ms);
  bool cut = false;
  while (m_in_use > 0) {
    if (!cut && std::chrono::steady_clock::now() >= deadline) {
      for (int fd : m_fds) ::shutdown(fd, SHUT_RDWR);
      cut = true;
    }
    m_cv.wait_for(lock, std::chrono::milliseconds(200));
  }
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
        return sender_aborted(*payload);
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

} // namespace sesscp::recv

namespace sesscp {

Result<frame::Cookie> StreamRegistry::add(std::shared_ptr<recv::StreamHub> hub) {
  frame::Cookie cookie{};
  if (RAND_bytes(cookie.data(), static_cast<int>(cookie.size())) != 1)
    return make_error(ErrorKind::internal, "no random bytes for a session cookie");
  std::lock_guard lock(m_mutex);
  m_hubs[cookie] = std::move(hub);
  return cookie;
}

std::shared_ptr<recv::StreamHub> StreamRegistry::find(const frame::Cookie& cookie) {
  std::lock_guard lock(m_mutex);
  auto it = m_hubs.find(cookie);
  return it == m_hubs.end() ? nullptr : it->second;
}

void StreamRegistry::remove(const frame::Cookie& cookie) {
  std::lock_guard lock(m_mutex);
  m_hubs.erase(cookie);
}

std::size_t StreamRegistry::outstanding() {
  std::lock_guard lock(m_mutex);
  std::size_t n = 0;
  for (auto& [cookie, hub] : m_hubs) n += hub->outstanding();
  return n;
}

} // namespace sesscp
