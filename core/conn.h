// A framed connection: reads and writes whole frames over a non-blocking
// socket with deadlines, so no peer can make a session hang.
#pragma once

#include "base/fd.h"
#include "core/frame.h"
#include "base/result.h"
#include "core/tls.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <cstdint>
#include <span>
#include <vector>

namespace sesscp {

// Bytes appended with memcpy and never zero-filled (a std::vector's resize
// writes every byte twice); capacity is kept across clear().
class OutBytes {
public:
  void reserve(std::size_t n) {
    if (n <= m_cap) return;
    auto bigger = std::make_unique_for_overwrite<std::uint8_t[]>(n);
    if (m_size) std::memcpy(bigger.get(), m_data.get(), m_size);
    m_data = std::move(bigger);
    m_cap = n;
  }
  void append(const void* p, std::size_t n) {
    if (n == 0) return; // p may be null (an empty span); memcpy must not see it
    if (m_size + n > m_cap) reserve(std::max(m_size + n, m_cap * 2));
    std::memcpy(m_data.get() + m_size, p, n);
    m_size += n;
  }
  const std::uint8_t* data() const { return m_data.get(); }
  std::size_t size() const { return m_size; }
  bool empty() const { return m_size == 0; }
  void clear() { m_size = 0; }

private:
  std::unique_ptr<std::uint8_t[]> m_data;
  std::size_t m_size = 0;
  std::size_t m_cap = 0;
};

class Conn {
public:
  // Take ownership of a connected socket. `stop` (may be null) is polled
  // while waiting so a signal ends a blocked session promptly.
  Conn(Fd fd, const std::atomic<bool>* stop, int timeout_ms);
  ~Conn();

  // Run the TLS handshake over the socket (client or server side) within
  // the timeout; from then on every frame is encrypted. Failure is
  // ErrorKind::auth with the reason (key mismatch, untrusted certificate).
  Status start_tls(tls::SslPtr ssl, bool server);
  SSL* ssl() const { return m_ssl.get(); }

  // Send one encoded frame within the timeout (after any queued by send_later).
  Status send(std::span<const std::uint8_t> frame);
  // Queue a small frame: it leaves with the next frame sent, or before this
  // side next waits for the peer (wait_readable with a timeout, or a read
  // that finds nothing), whichever comes first. Answers to pipelined
  // requests then share one system call and one TLS record instead of one
  // each. Never lost by waiting for the peer, so no deadlock; a local wait
  // (disk, another thread) may delay it. Sent at once on a connection shared
  // between threads.
  Status send_later(std::span<const std::uint8_t> frame);
  // A small file's DATA frame, queued the same way (copied: for chunks of
  // a few KiB, where a system call per frame costs more than the copy).
  Status send_data_later(const frame::DataPrefix& prefix, std::span<const std::uint8_t> chunk);
  // Send what send_later queued, if anything.
  Status flush();
  // Send a frame already split into its header and payload (a relay).
  Status send_frame(const frame::Header& header, std::span<const std::uint8_t> payload);
  // Send a DATA frame (header, prefix and chunk) with one writev.
  Status send_data(const frame::DataPrefix& prefix, std::span<const std::uint8_t> chunk);
  // Send ABORT(reason) if the socket still takes it; errors are ignored
  // because the session is ending anyway.
  void send_abort(frame::Reason reason, const std::string& message);

  // Wait up to `timeout_ms` until a frame's bytes can be read (return true)
  // or `wake_fd` (if >= 0) becomes readable (return false). Times out with
  // ErrorKind::timeout.
  // A second descriptor `wake_fd2` (if >= 0) wakes the wait as `wake_fd` does.
  Result<bool> wait_readable(int wake_fd, int timeout_ms, int wake_fd2 = -1);
  // True when a frame's first bytes are already buffered.
  // True when a frame's first bytes can be read without waiting (with TLS:
  // a whole record is ready).
  bool has_buffered();
  bool tls_record_ready();

  // Read the next frame header; DATA payloads may be up to max_data_payload.
  Result<frame::Header> read_header(std::uint32_t max_data_payload);
  // Read exactly out.size() bytes of payload.
  Status read_exact(std::span<std::uint8_t> out);
  // Read a control frame's payload (<= k_max_control_payload) into an
  // internal buffer valid until the next read.
  Result<std::span<const std::uint8_t>> read_control_payload(const frame::Header& header);

  // Full-duplex: from now on one thread reads and another writes. Every
  // call into the TLS object is then made under a lock (OpenSSL objects are
  // not to be used by two threads at once); waits are made outside it.
  void share_between_threads() { m_shared = true; }
  const std::atomic<bool>* stop() const { return m_stop; }
  // Poll `stop` instead of the flag given at construction.
  void set_stop(const std::atomic<bool>* stop) { m_stop = stop; }

  // Change the deadline for every later wait, and the kernel's dead-peer timers.
  void set_timeout(int timeout_ms);
  int timeout_ms() const { return m_timeout_ms; }
  int fd() const { return m_fd.get(); }
  // Shut the socket down for writing after the last frame (orderly release).
  void shutdown_write();
  // After a final ABORT: shut down writing, then read and drop what the peer
  // still sends until it closes or `timeout_ms` pass. Closing a socket with
  // unread data resets the connection, and the reset can make the peer fail
  // its next write before it has read the ABORT, losing the reason.
  void linger_after_abort(int timeout_ms);

private:
  Status wait_io(short events);
  // Read what the socket has into m_rbuf, at most `limit` bytes.
  Status fill(std::size_t limit);
  // Read at least one byte (at most out.size()), waiting within the timeout.
  Result<std::size_t> read_some(std::span<std::uint8_t> out);
  Status write_tls(std::span<const std::uint8_t> data);
  Error tls_write_failure(int err);
  // Queued frames (send_later), then a, then b.
  Status write_all(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b);
  // a, then b, through TLS or straight to the socket.
  Status write_now(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b);
  // Plain bytes to the socket within the timeout; *err is the errno of a failure.
  Status send_raw(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b, int* err);
  // Buffered TLS: encrypt into TlsIo::out, then send it with few calls.
  Status encrypt(std::span<const std::uint8_t> data);
  Status flush_tls();
  void flush_tls_nowait();

public:
  struct TlsIo;

private:
  Fd m_fd;
  std::unique_ptr<TlsIo> m_io; // after the handshake unless kernel TLS is on; outlives m_ssl's BIO
  tls::SslPtr m_ssl; // set after start_tls; freed before the socket closes
  const std::atomic<bool>* m_stop;
  int m_timeout_ms;
  std::vector<std::uint8_t> m_rbuf;
  std::size_t m_rpos = 0;
  std::size_t m_rend = 0;
  // The last frame's payload was large (a chunk): the next header's fill()
  // reads only a few KiB, so the next chunk's bytes go from the socket
  // straight into the caller's buffer instead of through m_rbuf.
  bool m_large_frames = false;
  std::vector<std::uint8_t> m_payload;
  bool m_shared = false;
  std::mutex m_ssl_mutex;
  OutBytes m_sending;
  OutBytes m_later;               // frames queued by send_later (plaintext)
  std::mutex m_write_mutex;       // one writer at a time through m_sending
};

} // namespace sesscp
