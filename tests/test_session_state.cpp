// The session-level state machine (core/session_state.h): every legal
// transition of both roles, and every illegal frame in every state.
#include "core/session_state.h"

#include <doctest/doctest.h>

#include <map>
#include <set>
#include <vector>

using namespace sesscp;
using namespace sesscp::session;
using frame::Type;

namespace {

const std::vector<Type> k_all_types = {
    Type::hello,     Type::accept,    Type::refuse,  Type::offer,   Type::resume,      Type::data,
    Type::sync,      Type::checkpoint, Type::resend, Type::file_end, Type::file_done,  Type::mkdir,
    Type::symlink,   Type::release,   Type::release_ack, Type::not_finished, Type::give_token,
    Type::please_token, Type::fetch, Type::join, Type::abort};

// Drive a machine to `target` along the legal path.
Machine at(Role role, State target) {
  Machine m(role);
  bool i = role == Role::initiator;
  auto go = [&](Type t, bool sent) { REQUIRE((sent ? m.on_send(t) : m.on_receive(t)).ok()); };
  if (target == State::idle) return m;
  go(Type::hello, i);
  if (target == State::await_accept || target == State::hello_received) return m;
  go(Type::accept, !i);
  if (target == State::established) return m;
  go(Type::release, i);
  if (target == State::releasing || target == State::release_requested) return m;
  go(Type::release_ack, !i);
  return m;
}

// The legal (direction, type) -> next state of each state, for one role.
// `out` = this side sends it.
struct Edge {
  bool out;
  Type type;
  State next;
};

std::vector<Edge> legal(Role role, State s) {
  bool i = role == Role::initiator;
  std::vector<Edge> e;
  if (s == State::closed) return e;
  e.push_back({true, Type::abort, State::closed});
  e.push_back({false, Type::abort, State::closed});
  switch (s) {
  case State::idle: e.push_back({i, Type::hello, i ? State::await_accept : State::hello_received}); break;
  case State::await_accept:
  case State::hello_received:
    e.push_back({!i, Type::accept, State::established});
    e.push_back({!i, Type::refuse, State::closed});
    break;
  case State::established:
    for (auto t : {Type::offer, Type::data, Type::sync, Type::file_end, Type::mkdir, Type::symlink})
      e.push_back({i, t, State::established});
    for (auto t : {Type::resume, Type::checkpoint, Type::resend, Type::file_done})
      e.push_back({!i, t, State::established});
    e.push_back({i, Type::release, i ? State::releasing : State::release_requested});
    break;
  case State::releasing:
  case State::release_requested:
    e.push_back({!i, Type::release_ack, State::closed});
    e.push_back({!i, Type::not_finished, State::established});
    break;
  case State::closed: break;
  }
  return e;
}

} // namespace

TEST_SUITE("session_state") {

TEST_CASE("a whole simplex session, seen from both sides") {
  Machine s(Role::initiator), r(Role::responder);
  auto both = [&](Type t, bool from_initiator, State s_next, State r_next) {
    CAPTURE(frame::to_string(t));
    auto a = from_initiator ? s.on_send(t) : r.on_send(t);
    auto b = from_initiator ? r.on_receive(t) : s.on_receive(t);
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    CHECK(s.state() == s_next);
    CHECK(r.state() == r_next);
  };
  both(Type::hello, true, State::await_accept, State::hello_received);
  both(Type::accept, false, State::established, State::established);
  both(Type::offer, true, State::established, State::established);
  both(Type::resume, false, State::established, State::established);
  both(Type::data, true, State::established, State::established);
  both(Type::file_end, true, State::established, State::established);
  both(Type::file_done, false, State::established, State::established);
  CHECK(s.may_release(0).ok());
  both(Type::release, true, State::releasing, State::release_requested);
  both(Type::not_finished, false, State::established, State::established);
  both(Type::release, true, State::releasing, State::release_requested);
  both(Type::release_ack, false, State::closed, State::closed);
}

TEST_CASE("every transition of every state, legal and illegal, for both roles") {
  int legal_count = 0, illegal_count = 0;
  for (auto role : {Role::initiator, Role::responder}) {
    for (auto state : {State::idle, State::await_accept, State::established, State::releasing, State::closed}) {
      State s = state;
      if (role == Role::responder && s == State::await_accept) s = State::hello_received;
      if (role == Role::responder && s == State::releasing) s = State::release_requested;
      auto edges = legal(role, s);
      for (bool out : {true, false}) {
        for (auto t : k_all_types) {
          CAPTURE(to_string(role));
          CAPTURE(to_string(s));
          CAPTURE(out);
          CAPTURE(frame::to_string(t));
          Machine m = at(role, s);
          REQUIRE(m.state() == s);
          auto r = out ? m.on_send(t) : m.on_receive(t);
          const Edge* edge = nullptr;
          for (const auto& e : edges)
            if (e.out == out && e.type == t) edge = &e;
          if (edge) {
            ++legal_count;
            REQUIRE(r.ok());
            CHECK(*r == edge->next);
            CHECK(m.state() == edge->next);
          } else {
            ++illegal_count;
            REQUIRE_FALSE(r.ok());
            // A peer's illegal frame is a protocol error (ABORT, exit 76);
            // our own would be a bug.
            CHECK(r.error().kind == (out ? ErrorKind::internal : ErrorKind::protocol));
            CHECK(m.state() == s); // an illegal frame changes nothing
          }
        }
      }
    }
  }
  // 21 types x 2 directions x 5 states x 2 roles.
  CHECK(legal_count + illegal_count == 21 * 2 * 5 * 2);
  // Per role: idle 3 (HELLO, 2 ABORT), awaiting 4, established 13, releasing 4, closed 0.
  CHECK(legal_count == 2 * (3 + 4 + 13 + 4));
}

TEST_CASE("simplex: data from the responder is a protocol error that names the rule") {
  Machine s = at(Role::initiator, State::established);
  for (auto t : {Type::data, Type::offer, Type::sync, Type::file_end, Type::mkdir, Type::symlink, Type::release}) {
    auto r = s.on_receive(t);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().kind == ErrorKind::protocol);
    CHECK(r.error().message.find("simplex") != std::string::npos);
  }
  Machine r = at(Role::responder, State::established);
  CHECK_FALSE(r.on_send(Type::data).ok());
  CHECK(Machine::supported(frame::DialogMode::simplex));
  CHECK(Machine::supported(frame::DialogMode::half_duplex));
  CHECK(Machine::supported(frame::DialogMode::full_duplex));
  // FETCH belongs to full-duplex sessions only.
  Machine f = at(Role::responder, State::established);
  auto fetch = f.on_receive(Type::fetch);
  REQUIRE_FALSE(fetch.ok());
  CHECK(fetch.error().message.find("only a full-duplex session") != std::string::npos);
  // A simplex session has no data token to pass or ask for.
  for (auto t : {Type::give_token, Type::please_token}) {
    Machine m = at(Role::responder, State::established);
    auto got = m.on_receive(t);
    REQUIRE_FALSE(got.ok());
    CHECK(got.error().kind == ErrorKind::protocol);
    CHECK(got.error().message.find("simplex") != std::string::npos);
  }
}

namespace {

// A half-duplex machine of `role` driven to established; the initiator holds the token.
Machine half_established(Role role) {
  Machine m(role);
  REQUIRE(m.set_mode(frame::DialogMode::half_duplex).ok());
  bool i = role == Role::initiator;
  REQUIRE((i ? m.on_send(Type::hello) : m.on_receive(Type::hello)).ok());
  REQUIRE((i ? m.on_receive(Type::accept) : m.on_send(Type::accept)).ok());
  REQUIRE(m.state() == State::established);
  return m;
}

} // namespace

TEST_CASE("half-duplex: a whole session, push then fetch, seen from both sides") {
  Machine s(Role::initiator), r(Role::responder);
  REQUIRE(s.set_mode(frame::DialogMode::half_duplex).ok());
  auto both = [&](Type t, bool from_initiator) {
    CAPTURE(frame::to_string(t));
    CAPTURE(from_initiator);
    REQUIRE((from_initiator ? s.on_send(t) : r.on_send(t)).ok());
    REQUIRE((from_initiator ? r.on_receive(t) : s.on_receive(t)).ok());
  };
  both(Type::hello, true);
  REQUIRE(r.set_mode(frame::DialogMode::half_duplex).ok()); // the responder learns it from HELLO
  both(Type::accept, false);
  CHECK(s.holds_token());
  CHECK_FALSE(r.holds_token());
  // The initiator pushes.
  for (auto t : {Type::mkdir, Type::offer}) both(t, true);
  both(Type::resume, false);
  for (auto t : {Type::data, Type::sync}) both(t, true);
  both(Type::checkpoint, false);
  both(Type::file_end, true);
  both(Type::file_done, false);
  // Token to the responder, with the fetch request.
  both(Type::give_token, true);
  CHECK_FALSE(s.holds_token());
  CHECK(r.holds_token());
  for (auto t : {Type::symlink, Type::offer}) both(t, false);
  both(Type::resume, true);
  for (auto t : {Type::data, Type::sync}) both(t, false);
  both(Type::resend, true);
  both(Type::data, false);
  both(Type::checkpoint, true);
  both(Type::file_end, false);
  both(Type::file_done, true);
  // The initiator may ask for the token back; the responder gives it.
  both(Type::please_token, true);
  CHECK(r.token_asked());
  both(Type::give_token, false);
  CHECK_FALSE(r.token_asked());
  CHECK(s.holds_token());
  CHECK(s.may_release(0).ok());
  both(Type::release, true);
  both(Type::release_ack, false);
  CHECK(s.state() == State::closed);
  CHECK(r.state() == State::closed);
}

TEST_CASE("half-duplex: every token rule, both holders, both roles, both directions") {
  const std::vector<Type> data = {Type::offer, Type::data, Type::sync, Type::file_end, Type::mkdir, Type::symlink};
  const std::vector<Type> confirmations = {Type::resume, Type::checkpoint, Type::resend, Type::file_done};
  int checked = 0;
  for (auto role : {Role::initiator, Role::responder}) {
    for (bool initiator_holds : {true, false}) {
      for (bool out : {true, false}) {
        bool from_initiator = out == (role == Role::initiator);
        bool from_holder = from_initiator == initiator_holds;
        auto fresh = [&] {
          Machine m = half_established(role);
          if (!initiator_holds) {
            bool i = role == Role::initiator;
            REQUIRE((i ? m.on_send(Type::give_token) : m.on_receive(Type::give_token)).ok());
          }
          REQUIRE(m.holds_token() == ((role == Role::initiator) == initiator_holds));
          return m;
        };
        CAPTURE(to_string(role));
        CAPTURE(initiator_holds);
        CAPTURE(out);
        for (auto t : data) {
          CAPTURE(frame::to_string(t));
          Machine m = fresh();
          auto r = out ? m.on_send(t) : m.on_receive(t);
          CHECK(r.ok() == from_holder);
          if (!r.ok()) {
            CHECK(r.error().kind == (out ? ErrorKind::internal : ErrorKind::protocol));
            CHECK(r.error().message.find("does not hold the data token") != std::string::npos);
          }
          ++checked;
        }
        for (auto t : confirmations) {
          CAPTURE(frame::to_string(t));
          Machine m = fresh();
          auto r = out ? m.on_send(t) : m.on_receive(t);
          CHECK(r.ok() == !from_holder);
          ++checked;
        }
        {
          // GIVE_TOKEN: only the holder; the token changes hands.
          Machine m = fresh();
          bool before = m.holds_token();
          auto r = out ? m.on_send(Type::give_token) : m.on_receive(Type::give_token);
          CHECK(r.ok() == from_holder);
          CHECK(m.holds_token() == (r.ok() ? !before : before));
          ++checked;
        }
        {
          // PLEASE_TOKEN: the side without the token asks; one received from
          // the holder crossed our GIVE_TOKEN and is ignored; sending it while
          // holding the token is a bug.
          Machine m = fresh();
          auto r = out ? m.on_send(Type::please_token) : m.on_receive(Type::please_token);
          CHECK(r.ok() == (!from_holder || !out));
          CHECK(m.token_asked() == (!out && !from_holder));
          ++checked;
        }
        {
          // RELEASE: the initiator, only while it holds the token.
          Machine m = fresh();
          auto r = out ? m.on_send(Type::release) : m.on_receive(Type::release);
          CHECK(r.ok() == (from_initiator && initiator_holds));
          ++checked;
        }
      }
    }
  }
  CHECK(checked == 2 * 2 * 2 * (6 + 4 + 3));
}

TEST_CASE("half-duplex: the mode is set before establishment; DATA without the token names the rule") {
  Machine m = half_established(Role::initiator);
  CHECK_FALSE(m.set_mode(frame::DialogMode::simplex).ok());
  auto r = m.on_receive(Type::data);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().kind == ErrorKind::protocol);
  CHECK(r.error().message.find("DATA from the responder, which does not hold the data token") != std::string::npos);
  CHECK(m.state() == State::established);
  // Token frames outside an established session are illegal.
  Machine idle(Role::responder);
  REQUIRE(idle.set_mode(frame::DialogMode::half_duplex).ok());
  CHECK_FALSE(idle.on_receive(Type::give_token).ok());
  Machine releasing = half_established(Role::responder);
  REQUIRE(releasing.on_receive(Type::release).ok());
  CHECK_FALSE(releasing.on_receive(Type::give_token).ok());
  CHECK_FALSE(releasing.on_receive(Type::data).ok());
}

TEST_CASE("release: only the initiator, only when established, only with nothing unconfirmed") {
  CHECK(at(Role::initiator, State::established).may_release(0).ok());
  CHECK_FALSE(at(Role::initiator, State::established).may_release(1).ok());
  CHECK_FALSE(at(Role::initiator, State::await_accept).may_release(0).ok());
  CHECK_FALSE(at(Role::initiator, State::releasing).may_release(0).ok());
  CHECK_FALSE(at(Role::responder, State::established).may_release(0).ok());
  // NOT_FINISHED: the initiator is back in an established session and may go on.
  Machine s = at(Role::initiator, State::releasing);
  REQUIRE(s.on_receive(Type::not_finished).ok());
  CHECK(s.on_send(Type::offer).ok());
  CHECK(s.may_release(0).ok());
}

TEST_CASE("abort ends the session from any state but closed") {
  for (auto state : {State::idle, State::await_accept, State::established, State::releasing}) {
    Machine m = at(Role::initiator, state);
    REQUIRE(m.on_receive(Type::abort).ok());
    CHECK(m.state() == State::closed);
    CHECK_FALSE(m.on_send(Type::abort).ok());
  }
}

} // TEST_SUITE

TEST_CASE("full-duplex: FETCH once from the initiator, then each direction runs the simplex rules on its own") {
  // Establishment in full-duplex: the initiator's FETCH is legal, the responder's is not, token frames never.
  for (auto role : {Role::initiator, Role::responder}) {
    Machine m(role);
    REQUIRE(m.set_mode(frame::DialogMode::full_duplex).ok());
    bool i = role == Role::initiator;
    REQUIRE((i ? m.on_send(Type::hello) : m.on_receive(Type::hello)).ok());
    REQUIRE((i ? m.on_receive(Type::accept) : m.on_send(Type::accept)).ok());
    REQUIRE(m.state() == State::established);
    CHECK_FALSE((i ? m.on_receive(Type::fetch) : m.on_send(Type::fetch)).ok()); // from the responder
    auto f = i ? m.on_send(Type::fetch) : m.on_receive(Type::fetch);
    REQUIRE(f.ok());
    CHECK(*f == State::established);
    for (auto t : {Type::give_token, Type::please_token}) {
      auto r = m.on_receive(t);
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().message.find("full-duplex") != std::string::npos);
    }
  }
  // A direction: established at once; its data side sends data and RELEASE,
  // the other confirms; data from the confirming side breaks the rule.
  Machine data_side = Machine::direction(Role::initiator);
  Machine confirming = Machine::direction(Role::responder);
  CHECK(data_side.state() == State::established);
  CHECK(confirming.state() == State::established);
  CHECK(data_side.mode() == frame::DialogMode::simplex);
  auto both = [&](Type t, bool from_data_side) {
    CAPTURE(frame::to_string(t));
    Machine& from = from_data_side ? data_side : confirming;
    Machine& to = from_data_side ? confirming : data_side;
    REQUIRE(from.on_send(t).ok());
    REQUIRE(to.on_receive(t).ok());
  };
  both(Type::offer, true);
  both(Type::resume, false);
  both(Type::data, true);
  both(Type::checkpoint, false);
  CHECK_FALSE(data_side.on_receive(Type::data).ok());
  CHECK_FALSE(confirming.on_receive(Type::checkpoint).ok());
  CHECK_FALSE(data_side.on_receive(Type::fetch).ok());
  both(Type::file_end, true);
  both(Type::file_done, false);
  REQUIRE(data_side.may_release(0).ok());
  CHECK_FALSE(confirming.may_release(0).ok());
  both(Type::release, true);
  both(Type::release_ack, false);
  CHECK(data_side.state() == State::closed);
  CHECK(confirming.state() == State::closed);
}

TEST_CASE("JOIN is never a frame of the session machine (it opens an extra connection)") {
  for (auto role : {Role::initiator, Role::responder}) {
    Machine m(role);
    CHECK_FALSE(m.on_receive(Type::join).ok());
    Machine e(role);
    if (role == Role::initiator) {
      REQUIRE(e.on_send(Type::hello).ok());
      REQUIRE(e.on_receive(Type::accept).ok());
    } else {
      REQUIRE(e.on_receive(Type::hello).ok());
      REQUIRE(e.on_send(Type::accept).ok());
    }
    REQUIRE(e.state() == State::established);
    auto r = e.on_receive(Type::join);
    CHECK_FALSE(r.ok());
    if (!r.ok()) CHECK(r.error().kind == ErrorKind::protocol);
  }
}
