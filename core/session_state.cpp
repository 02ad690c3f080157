#include "core/session_state.h"

namespace sesscp::session {

using frame::Type;

const char* to_string(State state) {
  switch (state) {
  case State::idle: return "idle";
  case State::await_accept: return "await-accept";
  case State::hello_received: return "hello-received";
  case State::established: return "established";
  case State::releasing: return "releasing";
  case State::release_requested: return "release-requested";
  case State::closed: return "closed";
  }
  return "unknown";
}

const char* to_string(Role role) { return role == Role::initiator ? "initiator" : "responder"; }

bool initiator_frame(Type type) {
  switch (type) {
  case Type::hello: case Type::offer: case Type::data: case Type::sync: case Type::file_end:
  case Type::mkdir: case Type::symlink: case Type::release: case Type::fetch: case Type::join:
  case Type::source_hashes:
    return true;
  default: return false;
  }
}

bool data_frame(Type type) {
  switch (type) {
  case Type::offer: case Type::data: case Type::sync: case Type::file_end: case Type::mkdir: case Type::symlink:
  case Type::source_hashes:
    return true;
  default: return false;
  }
}

bool confirmation_frame(Type type) {
  switch (type) {
  case Type::resume: case Type::checkpoint: case Type::resend: case Type::file_done: case Type::repair:
  case Type::verified:
    return true;
  default: return false;
  }
}

Status Machine::set_mode(frame::DialogMode mode) {
  if (m_state != State::idle && m_state != State::hello_received)
    return make_error(ErrorKind::internal, std::string("dialog mode set in state ") + to_string(m_state));
  m_mode = mode;
  m_initiator_holds = true;
  return {};
}

Result<State> Machine::on_send(Type type) {
  auto next = step(type, true);
  if (!next) return make_error(ErrorKind::internal, "this side may not send " + std::string(frame::to_string(type)) +
                                                        ": " + next.error().message);
  return next;
}

Result<State> Machine::on_receive(Type type) { return step(type, false); }

Status Machine::may_release(std::uint64_t outstanding) const {
  if (m_role != Role::initiator) return make_error(ErrorKind::internal, "only the initiator asks to release");
  if (m_state != State::established)
    return make_error(ErrorKind::internal, std::string("release asked in state ") + to_string(m_state));
  if (outstanding > 0)
    return make_error(ErrorKind::internal, std::to_string(outstanding) + " unconfirmed item(s): release would lose them");
  return {};
}

Result<State> Machine::step(Type type, bool sent) {
  auto illegal = [&](const std::string& why) -> Error {
    return make_error(ErrorKind::protocol, std::string(frame::to_string(type)) + " " + why + " (" +
                                               to_string(m_role) + ", state " + to_string(m_state) + ")");
  };
  if (m_state == State::closed) return illegal("after the session ended");
  if (type == Type::abort) return m_state = State::closed;
  bool from_initiator = sent == (m_role == Role::initiator);
  bool half = m_mode == frame::DialogMode::half_duplex;
  bool token_frame = type == Type::give_token || type == Type::please_token;
  if (token_frame && !half)
    return illegal(std::string("in a ") + frame::to_string(m_mode) + " session: it has no data token to pass");
  // Half-duplex: in an established session the data token, not the role,
  // decides who sends data and who confirms it.
  if (half && m_state == State::established && (data_frame(type) || confirmation_frame(type) || token_frame))
    return token_step(type, sent, from_initiator);
  if (token_frame) return illegal("outside an established session");
  if (type == Type::fetch && m_mode != frame::DialogMode::full_duplex)
    return illegal(std::string("in a ") + frame::to_string(m_mode) + " session: only a full-duplex session fetches this way");
  // Dialog control: the sending side must be the one allowed to send it.
  if (initiator_frame(type) != from_initiator)
    return illegal(from_initiator ? "from the initiator: only the responder sends it"
                   : half         ? "from the responder: only the initiator sends it"
                                  : "from the responder: the session is simplex, data and requests flow "
                                    "only from the initiator");
  if (half && type == Type::release && !m_initiator_holds)
    return illegal("while the responder holds the data token (only the token holder asks to release)");
  switch (m_state) {
  case State::idle:
    if (type == Type::hello) return m_state = m_role == Role::initiator ? State::await_accept : State::hello_received;
    return illegal("before HELLO");
  case State::await_accept:
  case State::hello_received:
    if (type == Type::accept) return m_state = State::established;
    if (type == Type::refuse) return m_state = State::closed;
    return illegal("before the session was accepted");
  case State::established:
    switch (type) {
    case Type::offer: case Type::data: case Type::sync: case Type::file_end: case Type::mkdir:
    case Type::symlink: case Type::resume: case Type::checkpoint: case Type::resend: case Type::file_done:
    case Type::repair: case Type::verified: case Type::source_hashes:
      return m_state;
    case Type::release: return m_state = m_role == Role::initiator ? State::releasing : State::release_requested;
    case Type::fetch: return m_state; // full-duplex: from here each direction runs its own machine
    default: return illegal("in an established session");
    }
  case State::releasing:
  case State::release_requested:
    if (type == Type::release_ack) return m_state = State::closed;
    if (type == Type::not_finished) return m_state = State::established;
    return illegal("while a release is pending (only RELEASE_ACK, NOT_FINISHED or ABORT)");
  case State::closed: break;
  }
  return illegal("after the session ended");
}

Result<State> Machine::token_step(Type type, bool sent, bool from_initiator) {
  const char* side = from_initiator ? "the initiator" : "the responder";
  auto illegal = [&](const std::string& why) -> Error {
    return make_error(ErrorKind::protocol, std::string(frame::to_string(type)) + " from " + side + ", " + why + " (" +
                                               to_string(m_role) + ", state " + to_string(m_state) + ", " +
                                               (m_initiator_holds ? "initiator" : "responder") + " holds the data token)");
  };
  bool from_holder = from_initiator == m_initiator_holds;
  if (data_frame(type)) {
    if (!from_holder)
      return illegal("which does not hold the data token: in a half-duplex session only the token holder sends "
                     "file data");
    return m_state;
  }
  if (confirmation_frame(type)) {
    if (from_holder) return illegal("which holds the data token: only the side receiving file data confirms it");
    return m_state;
  }
  if (type == Type::give_token) {
    if (!from_holder) return illegal("which does not hold the data token: only its holder gives it");
    m_initiator_holds = !m_initiator_holds;
    m_token_asked = false;
    return m_state;
  }
  // PLEASE_TOKEN: asked by the side without the token. One that reaches us
  // after we gave the token away crossed our GIVE_TOKEN and means nothing.
  if (from_holder) {
    if (sent) return illegal("which holds the data token already");
    return m_state;
  }
  if (!sent) m_token_asked = true;
  return m_state;
}

} // namespace sesscp::session
