#include "core/retry.h"

#include "core/events.h"

#include <algorithm>
#include <cmath>
#include <thread>

namespace sesscp {

bool retryable(ErrorKind kind) {
  switch (kind) {
  case ErrorKind::unreachable:
  case ErrorKind::timeout:
  case ErrorKind::disconnected:
  case ErrorKind::busy:
  case ErrorKind::interrupted: // from a peer: it stopped or its disk failed; see the sender
    return true;
  default: return false;
  }
}

Backoff::Backoff(RetryPolicy policy, std::uint64_t seed) : m_policy(policy), m_rng(seed) {}

std::optional<double> Backoff::next(int attempt, double elapsed_s) {
  if (m_policy.retries >= 0 && attempt > m_policy.retries) return std::nullopt;
  if (m_policy.retries == 0 && m_policy.retry_for_s <= 0) return std::nullopt;
  double left = m_policy.retry_for_s > 0 ? m_policy.retry_for_s - elapsed_s : INFINITY;
  if (left <= 0) return std::nullopt;
  double d = m_policy.initial_delay_s * std::pow(2.0, std::min(attempt - 1, 30));
  d = std::min(d, m_policy.max_delay_s);
  std::uniform_real_distribution<double> jitter(d / 2, d);
  return std::min(jitter(m_rng), left);
}

std::string attempt_label(int attempt, int limit) {
  return std::to_string(attempt) + (limit > 0 ? "/" + std::to_string(limit) : "");
}

std::string Backoff::describe(int attempt) const { return attempt_label(attempt, m_policy.retries); }

Status wait_to_retry(Backoff& backoff, int attempt, double elapsed_s, int limit, const Error& failure,
                     Events& events, const std::string& name, const std::atomic<bool>* stop) {
  auto delay = backoff.next(attempt, elapsed_s);
  if (!delay)
    return make_error(ErrorKind::interrupted, "gave up after " + std::to_string(attempt) + " attempt" +
                                                  (attempt == 1 ? "" : "s") + ": " + failure.message);
  events.phase(name, Events::Phase::reconnecting, failure.message);
  events.reconnecting(attempt, limit, *delay, failure.message);
  if (!sleep_unless_stopped(*delay, stop))
    return make_error(ErrorKind::interrupted, "interrupted by a signal while waiting to reconnect");
  return {};
}

bool sleep_unless_stopped(double seconds, const std::atomic<bool>* stop) {
  using Clock = std::chrono::steady_clock;
  auto due = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  while (Clock::now() < due) {
    if (stop && stop->load()) return false;
    std::this_thread::sleep_for(std::min<Clock::duration>(due - Clock::now(), std::chrono::milliseconds(50)));
  }
  return !(stop && stop->load());
}

Result<double> parse_duration(const std::string& text) {
  std::size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (...) {
    used = 0;
  }
  std::string unit = text.substr(used);
  double scale = unit.empty() || unit == "s" ? 1 : unit == "m" ? 60 : unit == "h" ? 3600 : unit == "d" ? 86400 : -1;
  if (used == 0 || scale < 0 || !(value >= 0) || std::isinf(value))
    return make_error(ErrorKind::usage, "bad duration '" + text + "' (use a number with s, m, h or d, e.g. 90s or 2h)");
  return value * scale;
}

} // namespace sesscp
