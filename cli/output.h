// Terminal, JSON and log-file output for every subcommand.
#pragma once

#include "core/events.h"
#include "base/result.h"

#include <nlohmann/json.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace sesscp::cli {

using Json = nlohmann::ordered_json; // keeps fields in the documented order (docs/JSON.md)
using Clock = std::chrono::steady_clock;

struct OutputOptions {
  bool quiet = false;       // only errors on stderr
  bool verbose = false;     // protocol-level detail on stderr (and "debug" events with --json)
  bool json = false;        // newline-delimited JSON events on `out`; human text on `err` only
  std::string log_file;     // append timestamped lines here, debug included ("" = none)
  std::string side;         // "send", "recv", "status", "keygen": the "side" field of events
  int tty = -1;             // draw the progress line: -1 = when `err` is a terminal, 0 = never, 1 = always
  std::FILE* out = stdout;  // JSON events
  std::FILE* err = stderr;  // human text
  // Error lines without the "what to do" hint: recv --stdio, whose errors
  // the local sesscp reports with a hint of its own (docs/SSH.md).
  bool hints = true;
};

// What the progress display knows about one file.
struct FileProgress {
  std::string name;
  std::uint64_t total = 0;       // file size
  std::uint64_t done = 0;        // bytes confirmed durable at the receiver
  std::uint64_t resumed_at = 0;  // offset this attempt started from
  std::uint64_t verify_done = 0, verify_total = 0;
  Events::Phase phase = Events::Phase::connecting;
  std::string detail;            // phase detail (address, reason)
  Clock::time_point start{};     // first byte of this attempt
  Clock::time_point retry_at{};  // when a reconnection is due
  int attempt = 0, limit = 0;
  std::deque<std::pair<Clock::time_point, std::uint64_t>> samples; // (time, done), the last few seconds
  // Internal bookkeeping for events.
  bool offered = false, resume_reported = false, active = false;
  Clock::time_point last_progress_event{}, last_checkpoint_event{}, last_verify_event{};
  bool final_emitted = false;    // checkpoint/progress at done == total were emitted (the sender reports
                                 // it at the last CHECKPOINT and again at FILE_DONE)

  // Bytes per second over the last few seconds (0 when unknown).
  double current_rate(Clock::time_point now) const;
  // Bytes per second since this attempt started.
  double average_rate(Clock::time_point now) const;
  // Seconds still needed at the average rate, or -1 when unknown.
  double eta(Clock::time_point now) const;
  // Record that `bytes` are confirmed at `now`.
  void sample(Clock::time_point now, std::uint64_t bytes);
};

// Return "12.3 MiB/s", "0 B/s".
std::string format_rate(double bytes_per_second);

// Return "0:05", "12:34", "1:02:03", or "--:--" when unknown (negative).
std::string format_eta(double seconds);

// Return the one-line display of `file`, at most `width` columns, e.g.
// "disk.img  512.0 MiB / 1.0 GiB  50%  12.3 MiB/s (avg 11.0 MiB/s)  ETA 0:42  transferring".
std::string progress_line(const FileProgress& file, Clock::time_point now, std::size_t width);

// Return the "total" line shown under several files.
std::string total_line(const std::map<std::string, FileProgress>& files, Clock::time_point now, std::size_t width);

// Return the fields of a file_done event (docs/JSON.md).
Json file_done_fields(bool sending, const FileReport& report);

// Return the stable JSON name of a phase: "connecting", "verifying", ...
const char* json_name(Events::Phase phase);

// Return `time` as "2026-11-25T21:40:01.123Z".
std::string iso_time(std::chrono::system_clock::time_point time);

// Return the "what you can do" hint for an error kind.
const char* hint_for(ErrorKind kind);

class Output final : public Events {
public:
  explicit Output(OutputOptions options);
  ~Output() override;
  Output(const Output&) = delete;
  Output& operator=(const Output&) = delete;

  // Open --log-file; call once before use.
  Status open_log();

  void info(const std::string& line) override;
  void debug(const std::string& line) override;
  void progress(const std::string& name, std::uint64_t done, std::uint64_t total) override;
  void file_report(bool sending, const FileReport& report) override;
  void phase(const std::string& name, Phase phase, const std::string& detail) override;
  void reconnecting(int attempt, int limit, double delay_s, const std::string& reason) override;
  void resumed(const std::string& name, std::uint64_t offset, std::uint64_t size) override;
  void verify_progress(const std::string& name, std::uint64_t done, std::uint64_t total) override;
  void offered(const std::string& name, std::uint64_t size) override;

  // A line shown unless --quiet.
  void notice(const std::string& line);
  // `sesscp: error: <what> (<why>); <what the user can do>`, always shown.
  void error(const Error& error);
  // The same with a hint of the caller's choosing (URL transfers have their own).
  void error(const Error& error, const std::string& hint);

  // Events that frame a run (--json; also written to --log-file).
  void session_start(Json fields);
  // Emit session_end with the totals and return `exit_code`.
  int session_end(int exit_code);
  // Emit one JSON object as an event named `event` (status reports).
  void event(const std::string& event, Json fields);

  bool json() const { return m_opt.json; }
  bool quiet() const { return m_opt.quiet; }

private:
  // All private members: the caller holds m_mutex.
  void line(const std::string& text);
  void emit(const std::string& event, Json fields);
  void log(const char* level, const std::string& text);
  FileProgress& file(const std::string& name);
  void report_resume_point(FileProgress& f);
  void draw(Clock::time_point now);
  void clear();
  void tick();

  OutputOptions m_opt;
  bool m_draw = false; // a progress block on a terminal
  std::FILE* m_log = nullptr;
  std::mutex m_mutex;
  std::map<std::string, FileProgress> m_files;
  int m_drawn_lines = 0;
  Clock::time_point m_last_draw{};
  // Totals for session_end.
  std::uint64_t m_files_done = 0, m_files_complete = 0, m_bytes = 0;
  std::chrono::steady_clock::time_point m_started = Clock::now();
  // Redraws the block four times a second (rates decay, countdowns run).
  std::condition_variable m_wake;
  bool m_stopping = false;
  std::thread m_ticker;
};

// Return `text` with control characters, C1 controls and invalid UTF-8
// written as \xNN, so text from the network cannot forge log lines.
std::string printable(std::string_view text);

// Return "1.5 GiB", "12.0 MiB", "512 B".
std::string human_bytes(std::uint64_t bytes);

} // namespace sesscp::cli
