// sesscp over SSH, the remote side: 'sesscp recv --stdio' serves one session
// over its stdin and stdout (the SSH channel), and 'sesscp recv --stdio-join
// ID' carries one extra stream (--streams) to that session's receiver
// through a unix socket (docs/SSH.md).
#pragma once

#include "base/fd.h"
#include "base/result.h"

#include <memory>
#include <string>
#include <thread>

namespace sesscp::ssh {

// Relays between this process's stdin/stdout and a socketpair, whose other
// end is the session's connection. From start() on, nothing else may write
// to fd 1: it is pointed at stderr, and the relay writes to a copy.
class StdioBridge {
public:
  static Result<std::unique_ptr<StdioBridge>> start();
  ~StdioBridge();
  // The session's end of the socketpair (once).
  Fd take_session_socket() { return std::move(m_session); }
  // After the session: wait until everything it sent has left through stdout.
  void finish();

private:
  StdioBridge() = default;
  Fd m_session, m_relay, m_in, m_out;
  std::thread m_in_thread, m_out_thread;
};

// The rendezvous of a session's extra streams: a unix socket named by `id`
// in a directory only this user can enter ($TMPDIR or /tmp, sesscp-UID/).
std::string stream_socket_path(const std::string& id);
// Listen at stream_socket_path(id); the file is removed when the Fd's owner calls unlink_stream_socket.
Result<Fd> listen_stream_socket(const std::string& id);
void unlink_stream_socket(const std::string& id);

// --stdio-join ID: connect to the session's socket and relay stdin/stdout
// to it until both directions end.
Status join_stream(const std::string& id);

// A stream ID as sesscp makes them (hex, 8..64 characters).
bool valid_stream_id(const std::string& id);

} // namespace sesscp::ssh
