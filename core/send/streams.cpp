#include "core/send/streams.h"

#include "checkpoint/journal.h"

#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <span>
#include <string>
#include <utility>

namespace sesscp::send {

using checkpoint::chunk_length;

namespace {

// The next frame from the receiver on an extra stream, its payload in
// `payload`; ABORT becomes the receiver's error.
Result<frame::Header> read_stream_frame(Conn& conn, std::span<const std::uint8_t>& payload) {
  auto header = conn.read_header(0);
  if (!header) return header.error();
  SESSCP_TRY(read_payload(conn, *header, payload));
  return header;
}

} // namespace

StreamPool::StreamPool(std::vector<std::unique_ptr<Conn>> conns, std::uint64_t bwlimit, const std::atomic<bool>* stop)
    : m_conns(std::move(conns)), m_bwlimit(bwlimit), m_stop_flag(stop), m_wake(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  for (std::size_t i = 0; i < m_conns.size(); ++i) m_threads.emplace_back([this, i] { run(i); });
}

StreamPool::~StreamPool() {
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

void StreamPool::start_file(const SourceFile* source, std::uint32_t chunk_size, std::uint64_t next,
                            std::uint64_t limit) {
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

void StreamPool::set_limit(std::uint64_t limit) {
  {
    std::lock_guard lock(m_mutex);
    m_limit = std::max(m_limit, limit);
  }
  m_cv.notify_all();
}

void StreamPool::end_file() {
  std::lock_guard lock(m_mutex);
  m_source = nullptr;
}

std::optional<std::uint64_t> StreamPool::claim() {
  std::lock_guard lock(m_mutex);
  if (!m_source || m_next >= m_limit) return std::nullopt;
  return m_next++;
}

bool StreamPool::claimable() {
  std::lock_guard lock(m_mutex);
  return m_source && m_next < m_limit;
}

void StreamPool::written(std::uint64_t index, const Hash128& hash, std::uint64_t len) {
  std::lock_guard lock(m_mutex);
  m_written.emplace(index, hash);
  m_bytes += len;
}

Status StreamPool::take(std::map<std::uint64_t, Hash128>& into, std::uint64_t& bytes) {
  std::uint64_t v;
  (void)!read(m_wake.get(), &v, sizeof v);
  std::lock_guard lock(m_mutex);
  if (m_error) return *m_error;
  into.merge(m_written);
  m_written.clear();
  bytes = std::exchange(m_bytes, 0);
  return {};
}

void StreamPool::run(std::size_t i) {
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
    Hash128 hash{};
    Status status = write_chunk(conn, *source, chunk_size, index, buf, hash);
    auto len = chunk_length(index, chunk_size, source->size());
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

Status StreamPool::write_chunk(Conn& conn, const SourceFile& source, std::uint32_t chunk_size, std::uint64_t index,
                               std::vector<std::uint8_t>& buf, Hash128& hash) {
  auto len = chunk_length(index, chunk_size, source.size());
  if (buf.size() < len) buf.resize(len);
  std::span<std::uint8_t> chunk(buf.data(), len);
  SESSCP_TRY(source.read_at(index * chunk_size, chunk));
  hash = xxh3_128(chunk);
  SESSCP_TRY(conn.send_data({index, hash}, chunk));
  // The receiver says nothing on an extra stream but ABORT.
  auto ready = conn.wait_readable(-1, 0);
  if (ready && *ready) return peer_spoke(conn);
  return {};
}

Status StreamPool::peer_spoke(Conn& conn) {
  std::span<const std::uint8_t> payload;
  auto header = read_stream_frame(conn, payload);
  if (!header) return header.error();
  return make_error(ErrorKind::protocol, std::string("receiver broke the protocol: ") + frame::to_string(header->type) +
                                             " on an extra stream");
}

void StreamPool::poke() {
  std::uint64_t one = 1;
  (void)!write(m_wake.get(), &one, sizeof one);
}

namespace {

Error stream_error(std::size_t number, const Error& e) {
  return make_error(e.kind, "stream " + std::to_string(number) + ": " + e.message);
}

// Connect stream `i` (1 for the second connection) and send its JOIN.
Result<std::unique_ptr<Conn>> join_stream(unsigned i, const frame::Cookie& cookie, const Connect& connect) {
  auto c = connect();
  if (!c) return stream_error(i + 1, c.error());
  frame::Join join{cookie, static_cast<std::uint16_t>(i)};
  if (auto sent = (*c)->send(frame::encode(join)); !sent) return stream_error(i + 1, sent.error());
  return std::move(*c);
}

// The receiver's answer to a JOIN: ACCEPT with the session's cookie.
Status await_accept(Conn& conn, const frame::Cookie& cookie) {
  std::span<const std::uint8_t> payload;
  auto header = read_stream_frame(conn, payload);
  if (!header) return header.error();
  auto accept = header->type == frame::Type::accept ? frame::decode_accept(payload)
                                                     : Result<frame::Accept>(make_error(ErrorKind::protocol, "no ACCEPT"));
  if (!accept || !(accept->features & frame::feature::k_streams) || accept->cookie != cookie) {
    conn.send_abort(frame::Reason::protocol, "expected ACCEPT for the JOIN");
    return make_error(ErrorKind::protocol, std::string("receiver broke the protocol: expected ACCEPT for the JOIN, got ") +
                                               frame::to_string(header->type));
  }
  return {};
}

} // namespace

Result<std::unique_ptr<StreamPool>> open_streams(unsigned streams, const frame::Cookie& cookie, const Connect& connect,
                                                 std::uint64_t bwlimit, const std::atomic<bool>* stop) {
  std::vector<std::unique_ptr<Conn>> conns;
  for (unsigned i = 1; i < streams; ++i) {
    auto c = join_stream(i, cookie, connect);
    if (!c) return c.error();
    conns.push_back(std::move(*c));
  }
  // Every stream is confirmed (ACCEPT with the session's cookie) before any DATA goes.
  for (std::size_t i = 0; i < conns.size(); ++i)
    if (auto accepted = await_accept(*conns[i], cookie); !accepted) return stream_error(i + 2, accepted.error());
  return std::make_unique<StreamPool>(std::move(conns), bwlimit, stop);
}

} // namespace sesscp::send
