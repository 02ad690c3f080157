#include "core/retry.h"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>

using namespace sesscp;

TEST_SUITE("retry") {

TEST_CASE("only failures another attempt may fix are retried") {
  for (auto kind : {ErrorKind::unreachable, ErrorKind::timeout, ErrorKind::disconnected, ErrorKind::busy,
                    ErrorKind::interrupted})
    CHECK(retryable(kind));
  for (auto kind : {ErrorKind::usage, ErrorKind::refused, ErrorKind::protocol, ErrorKind::version, ErrorKind::io,
                    ErrorKind::no_space, ErrorKind::cannot_create, ErrorKind::corrupt, ErrorKind::integrity,
                    ErrorKind::source_changed, ErrorKind::auth, ErrorKind::internal})
    CHECK_FALSE(retryable(kind));
}

TEST_CASE("backoff doubles from the initial delay, with jitter in [d/2, d], capped") {
  RetryPolicy p;
  p.retries = 12;
  for (std::uint64_t seed = 1; seed <= 50; ++seed) {
    Backoff b(p, seed);
    double d = 1;
    for (int attempt = 1; attempt <= 12; ++attempt) {
      auto delay = b.next(attempt, 0);
      REQUIRE(delay);
      CHECK(*delay >= d / 2);
      CHECK(*delay <= d);
      d = std::min(d * 2, 60.0);
    }
    CHECK_FALSE(b.next(13, 0)); // --retry 12: twelve reconnections, no more
  }
}

TEST_CASE("jitter spreads senders restarted together") {
  RetryPolicy p;
  p.retries = 3;
  Backoff a(p, 1), b(p, 2);
  CHECK(*a.next(3, 0) != *b.next(3, 0));
}

TEST_CASE("--retry-for bounds the attempts by time and clips the last delay") {
  RetryPolicy p;
  p.retries = -1;
  p.retry_for_s = 10;
  Backoff b(p, 7);
  CHECK(b.next(100, 9.5).value() <= 0.5 + 1e-9);
  CHECK_FALSE(b.next(2, 10));
  CHECK_FALSE(b.next(2, 11));
  // Both limits: whichever ends first.
  p.retries = 2;
  Backoff c(p, 7);
  CHECK(c.next(2, 0));
  CHECK_FALSE(c.next(3, 0));
}

TEST_CASE("no policy, no retry") {
  RetryPolicy p;
  CHECK_FALSE(p.enabled());
  Backoff b(p, 1);
  CHECK_FALSE(b.next(1, 0));
}

TEST_CASE("describe shows the limit when there is one") {
  RetryPolicy p;
  p.retries = 10;
  CHECK(Backoff(p, 1).describe(3) == "3/10");
  p.retries = -1;
  p.retry_for_s = 60;
  CHECK(Backoff(p, 1).describe(3) == "3");
}

TEST_CASE("a stop request ends the backoff wait at once") {
  std::atomic<bool> stop{true};
  auto t0 = std::chrono::steady_clock::now();
  CHECK_FALSE(sleep_unless_stopped(30, &stop));
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(1));
  stop = false;
  CHECK(sleep_unless_stopped(0.01, &stop));
}

TEST_CASE("durations") {
  CHECK(parse_duration("90").value() == 90);
  CHECK(parse_duration("90s").value() == 90);
  CHECK(parse_duration("15m").value() == 900);
  CHECK(parse_duration("2h").value() == 7200);
  CHECK(parse_duration("1d").value() == 86400);
  CHECK(parse_duration("1.5h").value() == 5400);
  for (const char* bad : {"", "h", "2x", "-5s", "nan", "inf", "1e400", "2 h"}) {
    auto d = parse_duration(bad);
    CHECK_FALSE(d);
    if (!d) CHECK(d.error().kind == ErrorKind::usage);
  }
}

} // TEST_SUITE
