// The data token's turns: how one engine runs the other's direction of a
// session (half- or full-duplex) without either engine including the other.
//
// The sending engine receives the peer's files through a ReceiveTurn it is
// given; the receiving engine sends from its export through a ServeTurn.
// core/dialog wires the real engines in (dialog::wire); the engines only
// see these types.
#pragma once

#include "base/result.h"
#include "checkpoint/verify.h"
#include "core/frame.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace sesscp {

class Conn;
class Events;
namespace session {
class Machine;
}

// How a turn runs: half-duplex (the data token passes back and forth; the
// turn ends by giving it back) or full-duplex (one direction of both at
// once; the turn ends with that direction's RELEASE).
enum class Dialog { half_duplex, full_duplex };

// What a turn takes over from the session that runs it.
struct TurnOptions {
  std::string dir;                   // receive: where the files land; serve: the export's path (messages)
  int serve_fd = -1;                 // serve: the export, opened on `dir`
  int timeout_ms = 30'000;           // peer silence that ends the turn
  std::uint64_t bwlimit = 0;         // serve: bytes per second, 0 = unlimited
  const std::atomic<bool>* stop = nullptr;
  checkpoint::ResumeCheck verify_resume = checkpoint::ResumeCheck::full; // receive: --verify-resume
  std::uint64_t features = 0;        // the feature bits (frame::feature) the session negotiated
};

// Receive the peer's files into `options.dir` as a receiver does (leases,
// journals, resume, publish) until the peer gives the token back
// (half-duplex) or releases its direction (full-duplex).
using ReceiveTurn = std::function<Status(Conn&, session::Machine&, const TurnOptions&, Events&, Dialog)>;

// Send the requested paths from the export (`options.serve_fd`) as a sender
// does, then give the token back (half-duplex) or release (full-duplex).
using ServeTurn = std::function<Status(Conn&, session::Machine&, const TurnOptions&,
                                       const std::vector<frame::FetchPath>&, Events&, Dialog)>;

} // namespace sesscp
