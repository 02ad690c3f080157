// The attempt loop of a URL transfer (url/attempts.h).
#include "url/attempts.h"

#include <chrono>

namespace sesscp::url {

Status run_attempts(const RetryPolicy& retry, const std::atomic<bool>* stop, Events& events, FileReport& report,
                    const std::function<Status()>& attempt, const std::function<bool(const Error&)>& restart) {
  using Clock = std::chrono::steady_clock;
  auto start = Clock::now();
  Backoff backoff(retry);
  int attempts = 0;
  for (;;) {
    auto status = attempt();
    report.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (status) return status;
    auto kind = status.error().kind;
    report.state = exit_code_for(kind) == exit_code::k_temp_fail ? FileReport::State::interrupted
                                                                 : FileReport::State::failed;
    if (restart && restart(status.error())) continue;
    if (!retry.enabled() || !retryable(kind) || (stop && stop->load())) return status;
    // As send --retry does: back off, then resume from the journal.
    SESSCP_TRY(wait_to_retry(backoff, ++attempts, report.seconds, retry.retries, status.error(), events,
                             report.name, stop));
    ++report.reconnects;
  }
}

} // namespace sesscp::url
