#include "cli/output.h"

#include <doctest/doctest.h>

#include <cstdio>
#include <string>
#include <thread>
#include <vector>

using sesscp::cli::printable;

TEST_SUITE("output") {

TEST_CASE("text from the network cannot forge log lines or steer the terminal") {
  CHECK(printable("disk.img") == "disk.img");
  CHECK(printable("a\nsesscp: recv forged") == "a\\x0asesscp: recv forged");
  CHECK(printable("x\r") == "x\\x0d");
  CHECK(printable("\x1b[2Jclear") == "\\x1b[2Jclear");
  CHECK(printable(std::string("a\0b", 3)) == "a\\x00b");
  CHECK(printable("\x7f") == "\\x7f");
  // Well-formed UTF-8 stays readable; C1 controls and broken sequences do not pass.
  CHECK(printable("caf\xc3\xa9 \xe2\x82\xac") == "caf\xc3\xa9 \xe2\x82\xac");
  CHECK(printable("\xc2\x9b" "31m") == "\\xc2\\x9b31m");
  CHECK(printable("\x9b") == "\\x9b");
  CHECK(printable("\xc0\xaf") == "\\xc0\\xaf"); // overlong '/'
  CHECK(printable("\xe2\x82") == "\\xe2\\x82"); // truncated
}

TEST_CASE("human_bytes") {
  CHECK(sesscp::cli::human_bytes(512) == "512 B");
  CHECK(sesscp::cli::human_bytes(3u << 20) == "3.0 MiB");
  CHECK(sesscp::cli::human_bytes(1536ull << 20) == "1.5 GiB");
}

TEST_CASE("rates and ETA") {
  using namespace sesscp::cli;
  CHECK(format_rate(0) == "0 B/s");
  CHECK(format_rate(-3) == "0 B/s");
  CHECK(format_rate(512) == "512 B/s");
  CHECK(format_rate(1.5 * 1024 * 1024) == "1.5 MiB/s");
  CHECK(format_eta(-1) == "--:--");
  CHECK(format_eta(0) == "0:00");
  CHECK(format_eta(4.2) == "0:05"); // rounded up: never promise too early
  CHECK(format_eta(65) == "1:05");
  CHECK(format_eta(3725) == "1:02:05");
  CHECK(format_eta(1e9) == ">99h");
}

TEST_CASE("current and average rate, ETA, and the progress line") {
  using namespace sesscp::cli;
  auto t0 = Clock::now();
  FileProgress f;
  f.name = "disk.img";
  f.total = 100u << 20;
  f.resumed_at = f.done = 40u << 20;
  f.phase = sesscp::Events::Phase::transferring;
  f.start = t0;
  f.sample(t0, f.done);
  f.sample(t0 + std::chrono::seconds(2), 50u << 20); // 10 MiB in 2 s
  auto now = t0 + std::chrono::seconds(2);
  CHECK(f.average_rate(now) == doctest::Approx(5.0 * 1024 * 1024));
  CHECK(f.current_rate(now) == doctest::Approx(5.0 * 1024 * 1024));
  CHECK(f.eta(now) == doctest::Approx(10.0)); // 50 MiB left at 5 MiB/s
  // The current rate forgets samples older than a few seconds.
  f.sample(t0 + std::chrono::seconds(10), 90u << 20);
  f.sample(t0 + std::chrono::seconds(11), 91u << 20);
  CHECK(f.current_rate(t0 + std::chrono::seconds(11)) < f.average_rate(t0 + std::chrono::seconds(11)) * 1.6);
  auto text = progress_line(f, t0 + std::chrono::seconds(11), 200);
  CHECK(text.find("disk.img  91.0 MiB / 100.0 MiB  91%") == 0);
  CHECK(text.find("ETA 0:") != std::string::npos);
  CHECK(text.find("resumed from 40.0 MiB") != std::string::npos);
  CHECK(progress_line(f, now, 20).size() <= 20);
  f.phase = sesscp::Events::Phase::reconnecting;
  f.attempt = 2;
  f.limit = 5;
  f.retry_at = now + std::chrono::milliseconds(3500);
  CHECK(progress_line(f, now, 200).find("reconnecting in 4s (attempt 2/5)") != std::string::npos);
}

TEST_CASE("file_done fields") {
  sesscp::FileReport r;
  r.name = "a.bin";
  r.state = sesscp::FileReport::State::complete;
  r.size = 1000;
  r.resumed_at = 200;
  r.bytes = 800;
  r.seconds = 2;
  r.file_root.fill(0xab);
  auto j = sesscp::cli::file_done_fields(true, r);
  CHECK(j["name"] == "a.bin");
  CHECK(j["state"] == "complete");
  CHECK(j["size"] == 1000);
  CHECK(j["resumed_at"] == 200);
  CHECK(j["bytes"] == 800);
  CHECK(j["rate_bps"] == 400);
  CHECK(j["reconnects"] == 0);
  CHECK(j["digest"] == "xxh3-128-list:abababababababababababababababab");
  CHECK(j["direction"] == "sent");
  r.state = sesscp::FileReport::State::interrupted;
  CHECK(sesscp::cli::file_done_fields(false, r)["digest"].is_null());
}

namespace {

std::string slurp(std::FILE* f) {
  std::fflush(f);
  std::rewind(f);
  std::string text;
  char buf[4096];
  while (auto n = std::fread(buf, 1, sizeof buf, f)) text.append(buf, n);
  return text;
}

std::vector<sesscp::cli::Json> events_of(const std::string& text) {
  std::vector<sesscp::cli::Json> out;
  std::size_t start = 0;
  while (start < text.size()) {
    auto end = text.find('\n', start);
    REQUIRE(end != std::string::npos); // every event ends its line
    out.push_back(sesscp::cli::Json::parse(text.substr(start, end - start)));
    start = end + 1;
  }
  return out;
}

} // namespace

TEST_CASE("--json: one object per line, documented fields, bounded progress") {
  std::FILE* out = std::tmpfile();
  std::FILE* err = std::tmpfile();
  REQUIRE(out);
  REQUIRE(err);
  {
    sesscp::cli::OutputOptions o;
    o.json = true;
    o.side = "send";
    o.out = out;
    o.err = err;
    sesscp::cli::Output output(o);
    output.session_start({{"file", "x"}, {"target", "h:1"}});
    output.offered("x", 1000);
    output.phase("x", sesscp::Events::Phase::connecting, "h:1");
    output.phase("x", sesscp::Events::Phase::transferring, "");
    for (int i = 1; i <= 100; ++i) output.progress("x", static_cast<std::uint64_t>(i) * 10, 1000);
    // The sender reports the end again at FILE_DONE: not a second event.
    output.progress("x", 1000, 1000);
    sesscp::FileReport r;
    r.name = "x";
    r.state = sesscp::FileReport::State::complete;
    r.size = r.bytes = 1000;
    output.file_report(true, r);
    CHECK(output.session_end(0) == 0);
  }
  auto events = events_of(slurp(out));
  std::vector<std::string> names;
  int progress = 0;
  for (const auto& e : events) {
    CHECK(e["side"] == "send");
    CHECK(e["time"].get<std::string>().size() == 24);
    if (e["event"] == "progress") ++progress;
    else names.push_back(e["event"]);
  }
  CHECK(names == std::vector<std::string>{"session_start", "file_offered", "phase", "phase", "resume_point",
                                          "checkpoint", "checkpoint", "file_done", "session_end"});
  // 100 checkpoints in a few microseconds: the first and the last only.
  CHECK(progress == 2);
  CHECK(events.back()["exit_code"] == 0);
  CHECK(events.back()["bytes"] == 1000);
  // Human text goes to stderr, never stdout; no carriage returns off a terminal.
  auto human = slurp(err);
  CHECK(human.find("sesscp: send x: complete") != std::string::npos);
  CHECK(human.find('\r') == std::string::npos);
  std::fclose(out);
  std::fclose(err);
}

TEST_CASE("a terminal gets a redrawn line; anything else never gets a carriage return") {
  for (int tty : {0, 1}) {
    std::FILE* err = std::tmpfile();
    REQUIRE(err);
    {
      sesscp::cli::OutputOptions o;
      o.tty = tty;
      o.side = "send";
      o.err = err;
      sesscp::cli::Output output(o);
      output.offered("x", 1000);
      output.phase("x", sesscp::Events::Phase::transferring, "");
      std::this_thread::sleep_for(std::chrono::milliseconds(60)); // past the redraw bound
      output.progress("x", 500, 1000);
      sesscp::FileReport r;
      r.name = "x";
      r.state = sesscp::FileReport::State::complete;
      output.file_report(true, r);
    }
    auto text = slurp(err);
    CHECK((text.find('\r') != std::string::npos) == (tty == 1));
    CHECK(text.find("sesscp: send x: complete") != std::string::npos);
    if (tty == 1) CHECK(text.find("x  500 B / 1000 B  50%") != std::string::npos);
    std::fclose(err);
  }
}

TEST_CASE("errors are one line: what (why); what to do") {
  std::FILE* err = std::tmpfile();
  REQUIRE(err);
  {
    sesscp::cli::OutputOptions o;
    o.err = err;
    sesscp::cli::Output output(o);
    output.error(sesscp::make_error(sesscp::ErrorKind::no_space, "cannot write x.sesscp.part (No space left on device)"));
  }
  CHECK(slurp(err) == "sesscp: error: cannot write x.sesscp.part (No space left on device); free some space, then "
                      "re-run to resume\n");
  std::fclose(err);
}

} // TEST_SUITE
