// The session-level state machine: establishment, dialog control and
// negotiated release, as a pure class (state + frame -> new state or error)
// that the sender and the receiver both drive. Per-file rules (OFFER before
// DATA, serials, windows) stay with the file code; this class decides who
// may say what, and when. Transitions: docs/PROTOCOL.md, "State machines".
#pragma once

#include "core/frame.h"
#include "base/result.h"

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

// Return true for the frames that carry file data (OFFER, DATA, SYNC,
// FILE_END, MKDIR, SYMLINK): in a half-duplex session only the holder of
// the data token sends them.
bool data_frame(frame::Type type);
// Return true for the confirmations of file data (RESUME, CHECKPOINT,
// RESEND, FILE_DONE): only the side receiving the data sends them.
bool confirmation_frame(frame::Type type);

class Machine {
public:
  // The dialog mode is simplex until set_mode (the initiator sets it before
  // HELLO, the responder from the HELLO it accepts). In a half-duplex
  // session the initiator holds the data token at establishment.
  explicit Machine(Role role, frame::DialogMode mode = frame::DialogMode::simplex) : m_role(role), m_mode(mode) {}

  Role role() const { return m_role; }
  State state() const { return m_state; }
  frame::DialogMode mode() const { return m_mode; }
  // Set the dialog mode; only before the session is established.
  Status set_mode(frame::DialogMode mode);
  // True when this side holds the data token (simplex: the initiator, always).
  bool holds_token() const { return (m_role == Role::initiator) == m_initiator_holds; }
  // True when the peer asked for the token (PLEASE_TOKEN) and it was not given since.
  bool token_asked() const { return m_token_asked; }

  // Apply a frame this side sends; ErrorKind::internal if it may not.
  Result<State> on_send(frame::Type type);
  // Apply a frame the peer sent; ErrorKind::protocol with the rule it broke.
  Result<State> on_receive(frame::Type type);

  // Negotiated release: the side asking must hold nothing unconfirmed
  // (`outstanding` activities or sync points); ErrorKind::internal otherwise.
  Status may_release(std::uint64_t outstanding) const;

  // Return true for the dialog modes this version runs (all three).
  static bool supported(frame::DialogMode mode) {
    return mode == frame::DialogMode::simplex || mode == frame::DialogMode::half_duplex ||
           mode == frame::DialogMode::full_duplex;
  }

  // Full-duplex: the machine of one direction of an established session.
  // Each direction runs the simplex rules on its own, `data_side` being the
  // role of the side that sends the data (initiator) or confirms it
  // (responder); it ends with its own RELEASE / RELEASE_ACK.
  static Machine direction(Role data_side) {
    Machine m(data_side);
    m.m_state = State::established;
    return m;
  }

private:
  Result<State> step(frame::Type type, bool sent);
  Result<State> token_step(frame::Type type, bool sent, bool from_initiator);
  Role m_role;
  frame::DialogMode m_mode;
  State m_state = State::idle;
  bool m_initiator_holds = true;
  bool m_token_asked = false;
};

} // namespace sesscp::session
