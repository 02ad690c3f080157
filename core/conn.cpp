#include "core/conn.h"

#include "core/net.h"

#include <fcntl.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <utility>
#include <cerrno>
#include <chrono>
#include <cstring>

namespace sesscp {

namespace {

constexpr std::size_t k_read_buffer = 256 * 1024;
// What fill() reads at a frame boundary after a large frame: the next header
// and its DATA prefix with room to spare, not the next chunk's first 256 KiB
// (copied out of m_rbuf: 0.25 instructions per byte; docs/PERFORMANCE.md).
constexpr std::size_t k_header_fill = 4096;
// Bytes send_later queues before it sends them anyway.
constexpr std::size_t k_later_limit = 128 * 1024;
// After the handshake, TLS records go through these buffers instead of one
// socket call each: libssl writes 16 KiB records, so a 1 MiB chunk cost 64
// send() calls and the receiver woke for each (docs/PERFORMANCE.md).
constexpr std::size_t k_tls_in_buffer = 512 * 1024;
constexpr std::size_t k_tls_out_reserve = (1u << 20) + 64 * 1024;
// Waits are cut into slices so a stop request is noticed within this time.
constexpr int k_slice_ms = 200;

Error lost(const char* what, int err) {
  return make_error(ErrorKind::disconnected, std::string("connection lost while ") + what + " (" +
                                                 std::strerror(err) + ")");
}

} // namespace

// The bytes between libssl and the socket once the handshake is over: a
// read buffer filled by large recv() calls, and the encrypted records of a
// write, sent by Conn with one call. A BIO of this kind never blocks: an
// empty read buffer and an empty socket is "retry", as for a socket BIO.
struct Conn::TlsIo {
  int fd = -1;
  std::vector<std::uint8_t> in;
  std::size_t ipos = 0;
  std::size_t iend = 0;
  bool eof = false;
  OutBytes out;
};

namespace {

int tls_io_read(BIO* b, char* buf, std::size_t len, std::size_t* got) {
  auto* io = static_cast<Conn::TlsIo*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  *got = 0;
  if (io->ipos == io->iend) {
    io->ipos = io->iend = 0;
    ssize_t n;
    do n = recv(io->fd, io->in.data(), io->in.size(), 0);
    while (n < 0 && errno == EINTR);
    if (n == 0) { io->eof = true; return 0; }
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) BIO_set_retry_read(b);
      return 0; // errno is kept for SSL_ERROR_SYSCALL
    }
    io->iend = static_cast<std::size_t>(n);
  }
  std::size_t n = std::min(len, io->iend - io->ipos);
  std::memcpy(buf, io->in.data() + io->ipos, n);
  io->ipos += n;
  *got = n;
  return 1;
}

int tls_io_write(BIO* b, const char* buf, std::size_t len, std::size_t* written) {
  auto* io = static_cast<Conn::TlsIo*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  io->out.append(buf, len);
  *written = len;
  return 1;
}

long tls_io_ctrl(BIO* b, int cmd, long, void*) {
  auto* io = static_cast<Conn::TlsIo*>(BIO_get_data(b));
  switch (cmd) {
  case BIO_CTRL_FLUSH: return 1; // Conn sends what libssl wrote
  case BIO_CTRL_EOF: return io->eof ? 1 : 0;
  case BIO_CTRL_PENDING: return static_cast<long>(io->iend - io->ipos);
  case BIO_CTRL_WPENDING: return static_cast<long>(io->out.size());
  default: return 0;
  }
}

BIO_METHOD* tls_io_method() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "sesscp buffered socket");
    BIO_meth_set_read_ex(m, tls_io_read);
    BIO_meth_set_write_ex(m, tls_io_write);
    BIO_meth_set_ctrl(m, tls_io_ctrl);
    return m;
  }();
  return method;
}

} // namespace

// Held around each call into the TLS object once the connection is shared
// between a reading and a writing thread; a no-op otherwise.
class SslLock {
public:
  SslLock(std::mutex& m, bool shared) : m_m(shared ? &m : nullptr) { if (m_m) m_m->lock(); }
  ~SslLock() { if (m_m) m_m->unlock(); }
  SslLock(const SslLock&) = delete;
  SslLock& operator=(const SslLock&) = delete;

private:
  std::mutex* m_m;
};

Conn::Conn(Fd fd, const std::atomic<bool>* stop, int timeout_ms)
    : m_fd(std::move(fd)), m_stop(stop), m_timeout_ms(timeout_ms), m_rbuf(k_read_buffer) {
  int flags = fcntl(m_fd.get(), F_GETFL);
  fcntl(m_fd.get(), F_SETFL, flags | O_NONBLOCK);
  net::set_dead_peer_timeout(m_fd.get(), timeout_ms);
}

Conn::~Conn() = default;

void Conn::set_timeout(int timeout_ms) {
  m_timeout_ms = timeout_ms;
  net::set_dead_peer_timeout(m_fd.get(), timeout_ms);
}

Status Conn::wait_io(short events) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(m_timeout_ms);
  for (;;) {
    if (m_stop && m_stop->load()) return make_error(ErrorKind::interrupted, "interrupted by a signal");
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    pollfd p{m_fd.get(), events, 0};
    int rc = poll(&p, 1, static_cast<int>(std::clamp<long long>(left, 0, k_slice_ms)));
    if (rc < 0 && errno != EINTR) return make_error(ErrorKind::io, std::string("poll: ") + std::strerror(errno));
    if (rc > 0) return {};
    if (left <= 0)
      return make_error(ErrorKind::timeout, "peer stalled for " + std::to_string(m_timeout_ms / 1000) + " s");
  }
}

Result<bool> Conn::wait_readable(int wake_fd, int timeout_ms, int wake_fd2) {
  if (has_buffered()) return true;
  if (timeout_ms > 0) SESSCP_TRY(flush()); // about to wait: the peer may be waiting for these
  if (wake_fd < 0) std::swap(wake_fd, wake_fd2);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    if (m_stop && m_stop->load()) return make_error(ErrorKind::interrupted, "interrupted by a signal");
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    pollfd p[3] = {{m_fd.get(), POLLIN, 0}, {wake_fd, POLLIN, 0}, {wake_fd2, POLLIN, 0}};
    nfds_t n = wake_fd < 0 ? 1 : wake_fd2 < 0 ? 2 : 3;
    int rc = poll(p, n, static_cast<int>(std::clamp<long long>(left, 0, k_slice_ms)));
    if (rc < 0 && errno != EINTR) return make_error(ErrorKind::io, std::string("poll: ") + std::strerror(errno));
    if (rc > 0 && n >= 2 && ((p[1].revents & POLLIN) || (n == 3 && (p[2].revents & POLLIN)))) return false;
    // With TLS, bytes on the socket may be only part of a record: loop back
    // to has_buffered(), which reads them and says whether a record is whole.
    if (rc > 0 && p[0].revents && (!m_ssl || tls_record_ready())) return true;
    if (left <= 0)
      return make_error(ErrorKind::timeout, "peer sent nothing for " + std::to_string(timeout_ms / 1000) + " s");
  }
}

bool Conn::has_buffered() {
  if (m_rpos < m_rend) return true;
  if (!m_ssl) return false;
  {
    SslLock lock(m_ssl_mutex, m_shared);
    if (SSL_pending(m_ssl.get()) > 0) return true;
    if (SSL_has_pending(m_ssl.get()) != 1 && !(m_io && m_io->ipos < m_io->iend)) return false;
  }
  // Read buffers may hold a whole record that is not decrypted yet, or only
  // part of one: peek to tell, so a caller neither waits on a socket that
  // will stay quiet nor blocks on half a record.
  return tls_record_ready();
}

bool Conn::tls_record_ready() {
  // Non-blocking: reads what the socket has, decrypts a record if whole.
  std::uint8_t byte;
  std::size_t n = 0;
  SslLock lock(m_ssl_mutex, m_shared);
  int rc = SSL_peek_ex(m_ssl.get(), &byte, 1, &n);
  if (rc == 1) return true;
  int err = SSL_get_error(m_ssl.get(), rc);
  return err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE; // errors surface on the next read
}

Result<std::size_t> Conn::read_some(std::span<std::uint8_t> out) {
  for (;;) {
    if (m_ssl) {
      std::size_t n = 0;
      int err = SSL_ERROR_NONE;
      std::string detail;
      {
        SslLock lock(m_ssl_mutex, m_shared);
        int rc = SSL_read_ex(m_ssl.get(), out.data(), out.size(), &n);
        if (rc == 1) return n;
        err = SSL_get_error(m_ssl.get(), rc);
        if (err == SSL_ERROR_SSL || err == SSL_ERROR_SYSCALL) detail = tls::last_error();
      }
      if (err == SSL_ERROR_SSL) flush_tls_nowait(); // the alert telling the peer why
      if (err == SSL_ERROR_WANT_READ) {
        SESSCP_TRY(flush());
        SESSCP_TRY(wait_io(POLLIN));
        continue;
      }
      if (err == SSL_ERROR_WANT_WRITE) { SESSCP_TRY(wait_io(POLLOUT)); continue; }
      if (err == SSL_ERROR_ZERO_RETURN) return make_error(ErrorKind::disconnected, "connection closed by peer");
      int saved = errno;
      if (err == SSL_ERROR_SYSCALL && detail.empty()) return lost("reading", saved ? saved : ECONNRESET);
      // A record that fails authentication means bytes were altered in
      // transit; the session ends and the journal keeps what was verified.
      return make_error(ErrorKind::disconnected, "TLS connection failed while reading (" + detail + ")");
    }
    ssize_t n = recv(m_fd.get(), out.data(), out.size(), 0);
    if (n > 0) return static_cast<std::size_t>(n);
    if (n == 0) return make_error(ErrorKind::disconnected, "connection closed by peer");
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return lost("reading", errno);
    SESSCP_TRY(flush());
    SESSCP_TRY(wait_io(POLLIN));
  }
}

Status Conn::fill(std::size_t limit) {
  if (m_rpos == m_rend) m_rpos = m_rend = 0;
  auto n = read_some({m_rbuf.data() + m_rend, std::min(limit, m_rbuf.size() - m_rend)});
  if (!n) return n.error();
  m_rend += *n;
  return {};
}

Status Conn::read_exact(std::span<std::uint8_t> out) {
  std::size_t done = 0;
  // Use what is buffered first, then read large remainders straight into `out`.
  while (done < out.size()) {
    if (m_rpos < m_rend) {
      std::size_t n = std::min(out.size() - done, m_rend - m_rpos);
      std::memcpy(out.data() + done, m_rbuf.data() + m_rpos, n);
      m_rpos += n;
      done += n;
      continue;
    }
    std::size_t want = out.size() - done;
    if (want < m_rbuf.size() / 2) {
      SESSCP_TRY(fill(m_large_frames ? k_header_fill : m_rbuf.size()));
      continue;
    }
    auto n = read_some(out.subspan(done));
    if (!n) return n.error();
    done += *n;
  }
  return {};
}

Result<frame::Header> Conn::read_header(std::uint32_t max_data_payload) {
  std::uint8_t raw[frame::k_header_size];
  SESSCP_TRY(read_exact(raw));
  auto header = frame::decode_header(std::span<const std::uint8_t, frame::k_header_size>(raw), max_data_payload);
  if (header) m_large_frames = header->length >= k_read_buffer / 2;
  return header;
}

Result<std::span<const std::uint8_t>> Conn::read_control_payload(const frame::Header& header) {
  if (header.length > frame::k_max_control_payload)
    return make_error(ErrorKind::protocol, "control frame too long");
  m_payload.resize(header.length);
  SESSCP_TRY(read_exact(m_payload));
  return std::span<const std::uint8_t>(m_payload);
}

Status Conn::write_tls(std::span<const std::uint8_t> data) {
  while (!data.empty()) {
    std::size_t n = 0;
    int err = SSL_ERROR_NONE;
    {
      SslLock lock(m_ssl_mutex, m_shared);
      int rc = SSL_write_ex(m_ssl.get(), data.data(), data.size(), &n);
      if (rc == 1) { data = data.subspan(n); continue; }
      err = SSL_get_error(m_ssl.get(), rc);
    }
    if (err == SSL_ERROR_WANT_WRITE) { SESSCP_TRY(wait_io(POLLOUT)); continue; }
    if (err == SSL_ERROR_WANT_READ) { SESSCP_TRY(wait_io(POLLIN)); continue; }
    return tls_write_failure(errno ? errno : EPIPE);
  }
  return {};
}

Error Conn::tls_write_failure(int err) {
  // The peer often says why before it closes (a TLS alert such as "bad
  // record mac" after tampering); read it if it is still in the socket.
  SslLock lock(m_ssl_mutex, m_shared);
  tls::last_error();
  std::uint8_t scratch[512];
  std::size_t n = 0;
  int rc = SSL_read_ex(m_ssl.get(), scratch, sizeof scratch, &n);
  if (rc != 1 && SSL_get_error(m_ssl.get(), rc) == SSL_ERROR_SSL) {
    auto detail = tls::last_error();
    if (!detail.empty()) return make_error(ErrorKind::disconnected, "TLS connection failed while sending (" + detail + ")");
  }
  return lost("sending", err);
}

Status Conn::write_all(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  // Queued frames go first, in the same system call or TLS record: `a` (a
  // header or a control frame, never long) joins them, and the queue is
  // empty again whatever the outcome.
  if (m_later.empty()) return write_now(a, b);
  m_later.append(a.data(), a.size());
  auto sent = write_now({m_later.data(), m_later.size()}, b);
  m_later.clear();
  return sent;
}

Status Conn::write_now(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  if (m_ssl && !m_io) {
    SESSCP_TRY(write_tls(a));
    return write_tls(b);
  }
  if (m_ssl) {
    std::lock_guard writer(m_write_mutex);
    SESSCP_TRY(encrypt(a));
    SESSCP_TRY(encrypt(b));
    return flush_tls();
  }
  int err = 0;
  return send_raw(a, b, &err);
}

Status Conn::send_later(std::span<const std::uint8_t> frame) {
  if (m_shared) return send(frame);
  m_later.append(frame.data(), frame.size());
  // Plenty to share a segment; more would only hold it back.
  if (m_later.size() >= k_later_limit) return flush();
  return {};
}

Status Conn::send_data_later(const frame::DataPrefix& prefix, std::span<const std::uint8_t> chunk) {
  if (m_shared) return send_data(prefix, chunk);
  std::uint8_t head[frame::k_header_size + frame::k_data_prefix];
  frame::encode_data_prefix(prefix, static_cast<std::uint32_t>(chunk.size()), head);
  m_later.append(head, sizeof head);
  m_later.append(chunk.data(), chunk.size());
  if (m_later.size() >= k_later_limit) return flush();
  return {};
}

Status Conn::flush() {
  if (m_later.empty()) return {};
  return write_all({}, {});
}

Status Conn::encrypt(std::span<const std::uint8_t> data) {
  SslLock lock(m_ssl_mutex, m_shared);
  while (!data.empty()) {
    std::size_t n = 0;
    int rc = SSL_write_ex(m_ssl.get(), data.data(), data.size(), &n);
    if (rc != 1) {
      auto detail = tls::last_error();
      return make_error(ErrorKind::disconnected, "TLS connection failed while sending (" +
                                                     (detail.empty() ? std::string("cannot encrypt") : detail) + ")");
    }
    data = data.subspan(n);
  }
  return {};
}

Status Conn::flush_tls() {
  for (;;) {
    {
      SslLock lock(m_ssl_mutex, m_shared);
      if (m_io->out.empty()) return {};
      // Swapped under the lock: records libssl adds meanwhile (an alert
      // from the reading thread) go out with the next flush, in order.
      std::swap(m_io->out, m_sending);
    }
    int err = 0;
    auto sent = send_raw({m_sending.data(), m_sending.size()}, {}, &err);
    m_sending.clear();
    if (!sent) return err ? tls_write_failure(err) : sent.error();
  }
}

void Conn::flush_tls_nowait() {
  if (!m_io) return;
  // Not while another thread is sending a batch: its bytes would interleave.
  std::unique_lock writer(m_write_mutex, std::try_to_lock);
  if (!writer) return;
  SslLock lock(m_ssl_mutex, m_shared);
  if (!m_io->out.empty()) (void)::send(m_fd.get(), m_io->out.data(), m_io->out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  m_io->out.clear();
}

Status Conn::send_raw(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b, int* err) {
  iovec iov[2] = {{const_cast<std::uint8_t*>(a.data()), a.size()},
                  {const_cast<std::uint8_t*>(b.data()), b.size()}};
  int first = 0;
  int count = b.empty() ? 1 : 2;
  while (first < count) {
    msghdr msg{};
    msg.msg_iov = iov + first;
    msg.msg_iovlen = static_cast<std::size_t>(count - first);
    ssize_t n = sendmsg(m_fd.get(), &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        *err = errno;
        return lost("sending", errno);
      }
      SESSCP_TRY(wait_io(POLLOUT));
      continue;
    }
    auto left = static_cast<std::size_t>(n);
    while (first < count && left >= iov[first].iov_len) left -= iov[first++].iov_len;
    if (first < count) {
      iov[first].iov_base = static_cast<std::uint8_t*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
  }
  return {};
}

Status Conn::start_tls(tls::SslPtr ssl, bool server) {
  for (;;) {
    int rc = server ? SSL_accept(ssl.get()) : SSL_connect(ssl.get());
    if (rc == 1) break;
    int err = SSL_get_error(ssl.get(), rc);
    Status waited;
    if (err == SSL_ERROR_WANT_READ) waited = wait_io(POLLIN);
    else if (err == SSL_ERROR_WANT_WRITE) waited = wait_io(POLLOUT);
    else return make_error(ErrorKind::auth, "authentication failed: " + tls::handshake_failure(ssl.get()));
    if (!waited) return waited.error();
  }
  m_ssl = std::move(ssl);
  // Kernel TLS, where it is on, writes records from the socket itself;
  // otherwise buffer the records (see TlsIo).
  bool ktls = false;
#ifdef BIO_CTRL_GET_KTLS_SEND
  ktls = BIO_ctrl(SSL_get_wbio(m_ssl.get()), BIO_CTRL_GET_KTLS_SEND, 0, nullptr) > 0 ||
         BIO_ctrl(SSL_get_rbio(m_ssl.get()), BIO_CTRL_GET_KTLS_RECV, 0, nullptr) > 0;
#endif
  if (!ktls) {
    BIO* bio = BIO_new(tls_io_method());
    if (!bio) return make_error(ErrorKind::internal, "cannot create a TLS buffer");
    m_io = std::make_unique<TlsIo>();
    m_io->fd = m_fd.get();
    m_io->in.resize(k_tls_in_buffer);
    m_io->out.reserve(k_tls_out_reserve);
    m_sending.reserve(k_tls_out_reserve);
    BIO_set_data(bio, m_io.get());
    BIO_set_init(bio, 1);
    // Records read ahead during the handshake stay in libssl's buffer.
    SSL_set_bio(m_ssl.get(), bio, bio); // frees the socket BIO; the socket stays open
    // Header then body, each copied from our buffer: no read-ahead, whose
    // buffer libssl compacts after every record.
    SSL_set_read_ahead(m_ssl.get(), 0);
  }
  return {};
}

Status Conn::send(std::span<const std::uint8_t> frame) { return write_all(frame, {}); }

Status Conn::send_frame(const frame::Header& header, std::span<const std::uint8_t> payload) {
  std::uint8_t head[frame::k_header_size];
  frame::encode_header(header.type, static_cast<std::uint32_t>(payload.size()), head);
  return write_all(head, payload);
}

Status Conn::send_data(const frame::DataPrefix& prefix, std::span<const std::uint8_t> chunk) {
  std::uint8_t head[frame::k_header_size + frame::k_data_prefix];
  frame::encode_data_prefix(prefix, static_cast<std::uint32_t>(chunk.size()), head);
  return write_all(head, chunk);
}

void Conn::send_abort(frame::Reason reason, const std::string& message) {
  int saved = m_timeout_ms;
  m_timeout_ms = std::min(m_timeout_ms, 2000); // do not linger on a dead peer
  (void)send(frame::encode(frame::Abort{reason, message}));
  m_timeout_ms = saved;
}

void Conn::shutdown_write() {
  {
    int saved = m_timeout_ms;
    m_timeout_ms = std::min(m_timeout_ms, 2000); // do not linger on a dead peer
    (void)flush();
    m_timeout_ms = saved;
  }
  if (m_ssl) {
    {
      SslLock lock(m_ssl_mutex, m_shared);
      SSL_shutdown(m_ssl.get());
    } // close_notify: a clean end, not a truncation
    if (m_io) {
      std::lock_guard writer(m_write_mutex);
      int saved = m_timeout_ms;
      m_timeout_ms = std::min(m_timeout_ms, 2000); // do not linger on a dead peer
      (void)flush_tls();
      m_timeout_ms = saved;
    }
  }
  ::shutdown(m_fd.get(), SHUT_WR);
}

void Conn::linger_after_abort(int timeout_ms) {
  shutdown_write();
  // Raw reads, even under TLS: the bytes are dropped, never decrypted.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  std::uint8_t scratch[16 * 1024];
  while (!(m_stop && m_stop->load())) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) return;
    pollfd p{m_fd.get(), POLLIN, 0};
    int rc = poll(&p, 1, static_cast<int>(std::min<long long>(left, k_slice_ms)));
    if (rc < 0 && errno != EINTR) return;
    if (rc <= 0) continue;
    ssize_t n = recv(m_fd.get(), scratch, sizeof scratch, 0);
    if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)) return;
  }
}

} // namespace sesscp
