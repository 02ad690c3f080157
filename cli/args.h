// Option values shared by the subcommands: sizes and rates ("64M"), and the
// reconnection policy of --retry / --retry-for.
#pragma once

#include "base/result.h"
#include "core/retry.h"

#include <cstdint>
#include <string>

namespace sesscp::cli {

// Parse "64M", "1G", "4096", "512KiB" (powers of 1024; K, M, G in either
// case, optionally followed by B or iB). `what` names the option in the
// usage error, e.g. "--bwlimit".
Result<std::uint64_t> parse_size(const std::string& text, const char* what);

// --retry N and --retry-for DURATION: with --retry-for alone, as many
// attempts as fit in the time. A duration that is not longer than 0 s is a
// usage error.
Result<RetryPolicy> retry_policy(int retry, const std::string& retry_for);

} // namespace sesscp::cli
