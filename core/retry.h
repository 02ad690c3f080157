// When and how long to wait before reconnecting after a failure that a
// later attempt could fix. Shared by every transport (TCP sessions, URLs).
#pragma once

#include "base/result.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <random>
#include <string>

namespace sesscp {

struct RetryPolicy {
  int retries = 0;               // reconnections allowed after the first attempt; -1 = no count limit
  double retry_for_s = 0;        // give up once this much time has passed since the start; 0 = no limit
  double initial_delay_s = 1;    // first backoff
  double max_delay_s = 60;       // backoff cap
  bool enabled() const { return retries != 0 || retry_for_s > 0; }
};

// True for errors another attempt may fix: the peer was unreachable, the
// connection broke or stalled, the destination was busy, or the peer's disk
// failed (its state is saved and it may have been fixed). Not for usage,
// authentication, protocol, integrity or local I/O errors, which would fail
// the same way again.
bool retryable(ErrorKind kind);

// Exponential backoff with jitter: attempt 1 waits about initial_delay_s,
// each later attempt about twice the previous, capped at max_delay_s; the
// actual delay is drawn uniformly from [d/2, d] so that many senders
// restarted together do not reconnect in lockstep.
class Backoff {
public:
  explicit Backoff(RetryPolicy policy, std::uint64_t seed = std::random_device{}());

  // The delay before reconnection number `attempt` (1-based), or nothing
  // when the policy allows no more attempts at `elapsed_s` since the start.
  // The delay is shortened so it never runs past retry_for_s.
  std::optional<double> next(int attempt, double elapsed_s);

  // "3/10", or "3" when only --retry-for limits the attempts.
  std::string describe(int attempt) const;

private:
  RetryPolicy m_policy;
  std::mt19937_64 m_rng;
};

// "3/10" for attempt 3 of a --retry 10, or "3" when `limit` <= 0 (only
// --retry-for bounds the attempts).
std::string attempt_label(int attempt, int limit);

// Sleep up to `seconds`, returning early (false) when `stop` is set.
bool sleep_unless_stopped(double seconds, const std::atomic<bool>* stop);

class Events;

// After failed attempt `attempt` (1-based) of a transfer that began
// `elapsed_s` ago: announce the reconnection of `name` to `events` and wait
// the backoff's delay. Returns the error that ends the transfer instead when
// the policy allows no more attempts ("gave up after N attempts: <why>") or
// `stop` is set while waiting. Shared by send, get and the sftp upload.
Status wait_to_retry(Backoff& backoff, int attempt, double elapsed_s, int limit, const Error& failure,
                     Events& events, const std::string& name, const std::atomic<bool>* stop);

// Parse a duration such as "90", "90s", "15m", "2h", "1d" into seconds.
Result<double> parse_duration(const std::string& text);

} // namespace sesscp
