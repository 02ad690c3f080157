// The plan of a send, kept across reconnections: one entry per file, directory or link, and the totals.
#pragma once

#include "core/events.h"
#include "core/send/common.h"
#include "core/send/sender.h"
#include "core/source.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sesscp::send {

// One thing to send, with what the sessions so far made of it.
struct PlanEntry {
  SourceEntry source;
  FileReport report;             // named as the entry's destination path
  bool done = false;             // finished, by this session or an earlier one
  bool offered = false;          // offered at least once (worth a summary line)
  bool resumed = false;          // the first resume point is recorded
  Clock::time_point first_offer{}; // when first offered (its report's seconds)
  // Half-duplex turn: a file entry is opened as `beneath_rel` beneath the
  // descriptor `beneath_fd` (no symlink followed) when that is >= 0.
  int beneath_fd = -1;
  std::string beneath_rel;
};

// What a send is made of, kept across reconnections: the entries, and the
// totals of every attempt.
struct Plan {
  explicit Plan(std::vector<SourceEntry> sources);

  std::vector<PlanEntry> entries;
  int reconnects = 0;
  std::uint64_t bytes = 0;    // file bytes sent over every attempt
  bool fetched = false;       // half-duplex: the fetch turn completed
  std::size_t fetched_files = 0, fetched_already = 0; // files of the fetch turns: received, already complete
  std::uint64_t fetched_bytes = 0;                     // file bytes received in them
  Clock::time_point start = Clock::now();

  std::size_t files() const;
};

// Read the command line's sources into a plan (--name renames a single file).
Result<Plan> make_plan(const SendOptions& options, Events& events);

// Passes every event on, and counts the files a fetch turn received.
class FetchEvents : public Events {
public:
  FetchEvents(Events& out, Plan& plan) : m_out(out), m_plan(plan) {}
  void info(const std::string& line) override { m_out.info(line); }
  void debug(const std::string& line) override { m_out.debug(line); }
  void progress(const std::string& name, std::uint64_t done, std::uint64_t total) override {
    m_out.progress(name, done, total);
  }
  void file_report(bool sending, const FileReport& r) override;
  void phase(const std::string& name, Phase phase, const std::string& detail) override {
    m_out.phase(name, phase, detail);
  }
  void reconnecting(int attempt, int limit, double delay_s, const std::string& reason) override {
    m_out.reconnecting(attempt, limit, delay_s, reason);
  }
  void resumed(const std::string& name, std::uint64_t offset, std::uint64_t size) override {
    m_out.resumed(name, offset, size);
  }
  void offered(const std::string& name, std::uint64_t size) override { m_out.offered(name, size); }
  void verify_progress(const std::string& name, std::uint64_t done, std::uint64_t total) override {
    m_out.verify_progress(name, done, total);
  }

private:
  Events& m_out;
  Plan& m_plan;
};

} // namespace sesscp::send
