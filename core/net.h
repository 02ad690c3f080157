// TCP endpoints: parsing HOST:PORT, connecting, listening.
#pragma once

#include "base/fd.h"
#include "base/result.h"

#include <cstdint>
#include <string>
#include <string_view>

namespace sesscp::net {

struct Endpoint {
  std::string host;
  std::uint16_t port = 0;
};

// Parse "HOST:PORT" or "[IPV6]:PORT". `allow_zero_port` for listening.
Result<Endpoint> parse_endpoint(std::string_view text, bool allow_zero_port);

// Resolve and connect, trying each address, within `timeout_ms`.
Result<Fd> connect_tcp(const Endpoint& endpoint, int timeout_ms);

// Bind and listen; returns the socket. Port 0 picks a free port.
Result<Fd> listen_tcp(const Endpoint& endpoint);

// Return "host:port" of the local or remote end of a socket.
std::string local_name(int fd);
std::string peer_name(int fd);

// Set the socket options every session socket gets (TCP_NODELAY, keepalive, close-on-exec).
void tune_socket(int fd);

// Make the kernel notice a dead peer within about `timeout_ms`: keepalive
// probes while idle, TCP_USER_TIMEOUT while data is unacknowledged. The
// session's own read/write deadlines (Conn) cover everything else.
void set_dead_peer_timeout(int fd, int timeout_ms);

} // namespace sesscp::net
