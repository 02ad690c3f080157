// The attempt loop that `get` and the sftp upload share: attempt, record the
// outcome in the report, then restart, back off and retry, or give up.
#pragma once

#include "base/result.h"
#include "core/events.h"
#include "core/retry.h"

#include <atomic>
#include <functional>

namespace sesscp::url {

// Run `attempt` until it succeeds or its failure ends the transfer. After
// each attempt report.seconds is the time since the start and, on a failure,
// report.state is interrupted (exit 75) or failed. A failure for which
// `restart` (if set) returns true is tried again at once, without backoff
// and without counting as a retry. Otherwise a retryable failure is retried
// within `retry` (backing off, announced to `events`, ++report.reconnects)
// unless `stop` is set; any other ends the loop with that failure.
Status run_attempts(const RetryPolicy& retry, const std::atomic<bool>* stop, Events& events, FileReport& report,
                    const std::function<Status()>& attempt,
                    const std::function<bool(const Error&)>& restart = {});

} // namespace sesscp::url
