// The session-level state machine: establishment, dialog control and
// negotiated release, as a pure class (state + frame -> new state or error)
// that the sender and the receiver both drive. Per-file rules (OFFER before
// DATA, serials, windows) stay with the file code; this class decides who
// may say what, and when. Transitions: docs/PROTOCOL.md, "State machines".
#pragma once

#include "core/frame.h"
#include "core/result.h"

#include <cstdint>

namespace sesscp::session {

// The initiator connects and sends HELLO (the sender); the responder accepts.
enum class Role : std::uint8_t { initiator, responder };

enum class State : std::uint8_t {
  idle,              // connected, nothing said yet
  await_accept,      // initiator: HELLO sent
  hello_received,    // responder: HELLO read, ACCEPT or REFUSE to send
  established,       // activities (files) may run
  releasing,         // initiator: RELEASE sent, awaiting RELEASE_ACK or NOT_FINISHED
  release_requested, // responder: RELEASE read, RELEASE_ACK or NOT_FINISHED to send
  closed,            // released, refused or aborted: nothing more may be said
};

const char* to_string(State state);
const char* to_string(Role role);

// Return true when only the initiator may send `type` (HELLO, the activity
// and data frames, RELEASE), false when only the responder may (ACCEPT, the
// confirmations, RELEASE_ACK, NOT_FINISHED). ABORT goes both ways.
bool initiator_frame(frame::Type type);

class Machine {
public:
  // Version 1 runs simplex only: the dialog mode a peer may ask for at
  // establishment is checked with `supported`.
  explicit Machine(Role role) : m_role(role) {}

  Role role() const { return m_role; }
  State state() const { return m_state; }

  // Apply a frame this side sends; ErrorKind::internal if it may not.
  Result<State> on_send(frame::Type type);
  // Apply a frame the peer sent; ErrorKind::protocol with the rule it broke.
  Result<State> on_receive(frame::Type type);

  // Negotiated release: the side asking must hold nothing unconfirmed
  // (`outstanding` activities or sync points); ErrorKind::internal otherwise.
  Status may_release(std::uint64_t outstanding) const;

  // Return true for the dialog modes this version runs.
  static bool supported(frame::DialogMode mode) { return mode == frame::DialogMode::simplex; }

private:
  Result<State> step(frame::Type type, bool sent);
  Role m_role;
  State m_state = State::idle;
};

} // namespace sesscp::session
