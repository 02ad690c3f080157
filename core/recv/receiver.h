// The accepting side: listen, serve sessions, write files into one directory.
#pragma once

#include "checkpoint/verify.h"
#include "core/events.h"
#include "base/fd.h"
#include "core/net.h"
#include "base/result.h"
#include "core/tls.h"
#include "core/turn.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace sesscp {

struct ReceiveOptions {
  net::Endpoint listen;
  std::string dir;                   // every file lands here
  std::string serve_dir;             // exported read-only to half- and full-duplex sessions (--serve); "" = none
  std::uint64_t serve_bwlimit = 0;   // bytes per second when sending from serve_dir, 0 = unlimited
  bool once = false;                 // serve one session, then return its status
  int timeout_ms = 30'000;           // peer silence that ends a session
  int handshake_timeout_ms = 10'000; // a connection must say HELLO within this
  int max_sessions = 16;             // concurrent sessions; more are refused (busy)
  std::uint64_t max_size = 0;        // largest file accepted, 0 = no limit
  // Resume: how much of a partial file is read back (--verify-resume): all
  // of it in the background (full), or the last verify_tail_bytes of the
  // confirmed chunks before resuming (tail; the default window + a chunk).
  checkpoint::ResumeCheck verify_resume = checkpoint::ResumeCheck::full;
  std::uint64_t verify_tail_bytes = 64u << 20;
  // receive_turn only: the feature bits (frame::feature) its session
  // negotiated, which say whether the peer can repair (REPAIR/VERIFIED).
  std::uint64_t turn_features = 0;
  tls::Options tls;                  // how to encrypt and authenticate
  // How --serve sends (dialog::wire sets it): without one, a half- or
  // full-duplex session fails with an internal error.
  ServeTurn serve_turn;
  // Over SSH (recv --stdio, docs/SSH.md): no TCP listener and no TLS of its
  // own; the session's connection is handed to serve(); `dir` may be empty
  // for a receiver that only serves (a pull), which then refuses pushes.
  // Extra connections (--streams) arrive on `stream_listener` (a listening
  // unix socket the caller owns, or -1).
  bool stdio = false;
  int stream_listener = -1;
  const std::atomic<bool>* stop = nullptr;
};

class Conn;
class StreamRegistry;
namespace session {
class Machine;
}

// Half-duplex, the initiator's turn to receive (a ReceiveTurn): after
// giving the data token (GIVE_TOKEN with a fetch request), run the receiving
// side of this session over `conn`, writing into `turn.dir` exactly as a
// receiver does (leases, journals, resume, publish), until the peer gives
// the token back. Full-duplex: the receiving direction of the session, until
// the peer releases it (RELEASE / RELEASE_ACK).
Status receive_turn(Conn& conn, session::Machine& machine, const TurnOptions& turn, Events& events, Dialog dialog);

class Receiver {
public:
  // Check the directory and bind the listening socket.
  static Result<Receiver> create(const ReceiveOptions& options, Events& events);

  // The address actually bound (with the real port when 0 was asked).
  std::string address() const;

  // How sessions are protected, for the banner.
  std::string security() const;

  // Serve sessions until `stop` is set; with `once`, serve one session and
  // return its status. `first`, if valid, is that session's connection,
  // already open (--stdio); later connections may then only join it.
  Status serve(Fd first = {});

  // Run one session on an accepted (or socketpair) connection in this
  // thread. serve() uses it; so do the fuzz and hostile-input tests.
  Status handle_connection(Fd socket);

private:
  Receiver(const ReceiveOptions& options, Events& events, Fd listener, Fd dir, Fd serve, unsigned umask,
           std::optional<tls::Context> tls, std::shared_ptr<StreamRegistry> streams)
      : m_opt(options), m_events(events), m_listener(std::move(listener)), m_dir(std::move(dir)),
        m_serve(std::move(serve)), m_umask(umask), m_tls(std::move(tls)), m_streams(std::move(streams)) {}
  const ReceiveOptions& m_opt;
  Events& m_events;
  Fd m_listener;
  Fd m_dir;
  Fd m_serve; // --serve, or invalid
  unsigned m_umask;
  std::optional<tls::Context> m_tls; // empty with --insecure
  std::shared_ptr<StreamRegistry> m_streams; // sessions that extra connections may JOIN (--streams)
};

} // namespace sesscp
