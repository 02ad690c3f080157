// Terminal and log output for both subcommands.
#pragma once

#include "core/events.h"
#include "core/result.h"

#include <chrono>
#include <mutex>
#include <string>

namespace sesscp::cli {

class Output final : public Events {
public:
  Output(bool quiet, bool verbose);
  ~Output() override;

  void info(const std::string& line) override;
  void debug(const std::string& line) override;
  void progress(const std::string& name, std::uint64_t done, std::uint64_t total) override;
  void file_report(bool sending, const FileReport& report) override;
  void reconnecting(int attempt, int limit, double delay_s, const std::string& reason) override;
  void resumed(const std::string& name, std::uint64_t offset, std::uint64_t size) override;

  // A line shown unless --quiet.
  void notice(const std::string& line);
  // `sesscp: error: <what>; <what the user can do>`, always shown.
  void error(const Error& error);
  // The same with a hint of the caller's choosing (URL transfers have their own).
  void error(const Error& error, const std::string& hint);

private:
  void line(const std::string& text); // caller holds m_mutex
  std::mutex m_mutex;
  bool m_quiet;
  bool m_verbose;
  bool m_tty;
  bool m_progress_shown = false;
  std::chrono::steady_clock::time_point m_last_draw{};
};

// Return `text` with control characters, C1 controls and invalid UTF-8
// written as \xNN, so text from the network cannot forge log lines.
std::string printable(std::string_view text);

// Return "1.5 GiB", "12.0 MiB", "512 B".
std::string human_bytes(std::uint64_t bytes);

} // namespace sesscp::cli
