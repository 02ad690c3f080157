// Full-duplex dialog: both sides send files at once over one connection.
//
// Each direction is a simplex dialogue of its own (docs/PROTOCOL.md,
// "Full-duplex"): its sending side sends OFFER, DATA, SYNC, FILE_END, MKDIR,
// SYMLINK and RELEASE; its receiving side answers RESUME, CHECKPOINT,
// RESEND, FILE_DONE, RELEASE_ACK and NOT_FINISHED. The frame type alone
// says which direction a frame belongs to, so no frame carries a tag.
//
// duplex::run runs this side's sending engine (a Sender) and receiving
// engine (a receiver Session) unchanged, each on a thread of its own with a
// plaintext Conn over a socketpair, and relays their frames to and from the
// real connection (which may be TLS): one thread reads the connection and
// routes each frame to the engine it belongs to, the calling thread forwards
// whole frames from either engine to the connection.
#pragma once

#include "core/conn.h"
#include "base/result.h"

#include <atomic>
#include <functional>

namespace sesscp::duplex {

// An engine runs one direction over the Conn it is given and returns when
// that direction is released (RELEASE / RELEASE_ACK) or failed.
using Engine = std::function<Status(Conn&)>;

// Run `send` (this side's files out, their confirmations in) and `receive`
// (the peer's files in) at once over the established connection `net`,
// until both directions are released or one fails. A frame that belongs to
// neither direction (a second HELLO or FETCH, a token frame, data for a
// direction already released) ends the session with ABORT protocol. A
// failure of either direction, or an ABORT from the peer, ends both; the
// result is the first failure (what caused the end, not its echoes).
// `timeout_ms` bounds every write to the connection; the engines keep
// their own read deadlines, so a silent peer is caught by them.
Status run(Conn& net, const Engine& send, const Engine& receive, int timeout_ms);

} // namespace sesscp::duplex
