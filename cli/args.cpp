#include "cli/args.h"

#include <cctype>

namespace sesscp::cli {

Result<std::uint64_t> parse_size(const std::string& text, const char* what) {
  std::size_t used = 0;
  unsigned long long value = 0;
  try {
    value = std::stoull(text, &used);
  } catch (...) {
    return make_error(ErrorKind::usage, std::string("bad ") + what + " '" + text + "' (not a number; use e.g. 64M)");
  }
  std::string unit = text.substr(used);
  for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (unit.size() > 1 && (unit.substr(1) == "B" || unit.substr(1) == "IB")) unit = unit.substr(0, 1);
  int shift = unit.empty() || unit == "B" ? 0 : unit == "K" ? 10 : unit == "M" ? 20 : unit == "G" ? 30 : -1;
  if (shift < 0 || value > (~0ULL >> shift))
    return make_error(ErrorKind::usage, std::string("bad ") + what + " '" + text + "' (use a number with K, M or G)");
  return value << shift;
}

Result<RetryPolicy> retry_policy(int retry, const std::string& retry_for) {
  RetryPolicy p;
  p.retries = retry;
  if (!retry_for.empty()) {
    auto d = parse_duration(retry_for);
    if (!d) return d.error();
    if (*d <= 0) return make_error(ErrorKind::usage, "bad --retry-for '" + retry_for + "' (must be longer than 0 s)");
    p.retry_for_s = *d;
    if (retry == 0) p.retries = -1; // --retry-for alone: bounded by time only
  }
  return p;
}

} // namespace sesscp::cli
