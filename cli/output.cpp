#include "cli/output.h"

#include "core/retry.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <vector>

namespace sesscp {

const char* to_string(FileReport::State state) {
  switch (state) {
  case FileReport::State::complete: return "complete";
  case FileReport::State::already_complete: return "already complete";
  case FileReport::State::interrupted: return "interrupted";
  case FileReport::State::failed: return "failed";
  }
  return "failed";
}

const char* to_string(Events::Phase phase) {
  switch (phase) {
  case Events::Phase::connecting: return "connecting";
  case Events::Phase::verifying: return "verifying resume point";
  case Events::Phase::transferring: return "transferring";
  case Events::Phase::finalising: return "finalising";
  case Events::Phase::reconnecting: return "reconnecting";
  }
  return "";
}

namespace cli {

const char* hint_for(ErrorKind kind) {
  switch (kind) {
  case ErrorKind::usage: return "see 'sesscp --help'";
  case ErrorKind::unreachable: return "check that 'sesscp recv' runs there and the address is right";
  case ErrorKind::refused: return "the receiver refused this file for the reason given";
  case ErrorKind::busy: return "retry later or use another --name";
  case ErrorKind::auth: return "check --key-file (the same key on both hosts), or --cert/--ca/--peer-fingerprint";
  case ErrorKind::version: return "use the same sesscp version on both hosts";
  case ErrorKind::protocol: return "the peer is not a compatible sesscp; check both versions";
  case ErrorKind::timeout:
  case ErrorKind::disconnected:
  case ErrorKind::interrupted: return "state saved; re-run the same command to resume";
  case ErrorKind::io:
  case ErrorKind::corrupt: return "fix the disk problem, then re-run to resume";
  case ErrorKind::no_space: return "free some space, then re-run to resume";
  case ErrorKind::cannot_create: return "check that the directory exists and is writable";
  case ErrorKind::integrity: return "the data cannot be verified; check the source and both disks";
  case ErrorKind::source_changed: return "re-run to send the new version";
  case ErrorKind::internal: return "please report this bug";
  }
  return "";
}

namespace {

// Length of the well-formed UTF-8 sequence at s[i], 0 if it is not one.
std::size_t utf8_length(std::string_view s, std::size_t i) {
  auto c = static_cast<unsigned char>(s[i]);
  std::size_t n = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c <= 0xDF ? 2 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k)
    if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 0;
  // C1 controls (U+0080..U+009F) steer some terminals: escape them too.
  if (n == 2 && c == 0xC2 && static_cast<unsigned char>(s[i + 1]) < 0xA0) return 0;
  return n;
}

} // namespace

std::string printable(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    std::size_t n = c >= 0x20 && c < 0x7F ? 1 : c >= 0x80 ? utf8_length(s, i) : 0;
    if (n == 0) {
      char esc[5];
      std::snprintf(esc, sizeof esc, "\\x%02x", c);
      out += esc;
      ++i;
      continue;
    }
    out.append(s.substr(i, n));
    i += n;
  }
  return out;
}

std::string human_bytes(std::uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) { v /= 1024; ++u; }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}


// ------------------------------------------------------------- formatting

namespace {

constexpr auto k_rate_span = std::chrono::seconds(5);  // current rate: the last 5 s
constexpr auto k_progress_every = std::chrono::milliseconds(250); // --json progress: at most 4/s
constexpr auto k_checkpoint_every = std::chrono::seconds(1);      // --json checkpoint: at most 1/s

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Cut `text` to at most `width` bytes without splitting a UTF-8 sequence.
std::string fit(std::string text, std::size_t width) {
  if (text.size() <= width) return text;
  std::size_t n = width;
  while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;
  text.resize(n);
  return text;
}

std::string percent(std::uint64_t done, std::uint64_t total) {
  int pct = total ? static_cast<int>(100.0 * static_cast<double>(done) / static_cast<double>(total)) : 100;
  return std::to_string(pct) + "%";
}

std::string state_text(const FileProgress& f, Clock::time_point now) {
  switch (f.phase) {
  case Events::Phase::connecting: return f.detail.empty() ? "connecting" : "connecting to " + f.detail;
  case Events::Phase::verifying:
    if (f.verify_total > 0) return "verifying resume point " + percent(f.verify_done, f.verify_total);
    return "verifying resume point";
  case Events::Phase::transferring: {
    std::string text = f.resumed_at > 0 ? "resumed from " + human_bytes(f.resumed_at) : "transferring";
    // The partial being read back meanwhile (docs/JOURNAL.md): how far.
    if (f.verify_total > 0 && f.verify_done < f.verify_total)
      text += ", re-verified " + percent(f.verify_done, f.verify_total);
    return text;
  }
  case Events::Phase::finalising: return "finalising";
  case Events::Phase::reconnecting: {
    double left = std::max(0.0, seconds_between(now, f.retry_at));
    std::string text = "reconnecting in " + std::to_string(static_cast<long long>(std::ceil(left))) + "s";
    if (f.attempt > 0)
      text += " (attempt " + std::to_string(f.attempt) + (f.limit > 0 ? "/" + std::to_string(f.limit) : "") + ")";
    return text;
  }
  }
  return "";
}

} // namespace

void FileProgress::sample(Clock::time_point now, std::uint64_t bytes) {
  done = bytes;
  samples.emplace_back(now, bytes);
  while (samples.size() > 2 && now - samples[1].first > k_rate_span) samples.pop_front();
}

double FileProgress::current_rate(Clock::time_point now) const {
  if (samples.empty()) return 0;
  const auto& [t0, b0] = samples.front();
  double dt = seconds_between(t0, now);
  if (dt < 0.2 || done < b0) return 0;
  return static_cast<double>(done - b0) / dt;
}

double FileProgress::average_rate(Clock::time_point now) const {
  double dt = seconds_between(start, now);
  if (start == Clock::time_point{} || dt < 0.2 || done < resumed_at) return 0;
  return static_cast<double>(done - resumed_at) / dt;
}

double FileProgress::eta(Clock::time_point now) const {
  double rate = average_rate(now);
  if (done >= total) return 0;
  if (rate <= 0) return -1;
  return static_cast<double>(total - done) / rate;
}

std::string format_rate(double bytes_per_second) {
  if (!(bytes_per_second > 0)) return "0 B/s";
  return human_bytes(static_cast<std::uint64_t>(bytes_per_second)) + "/s";
}

std::string format_eta(double seconds) {
  if (seconds < 0 || !std::isfinite(seconds)) return "--:--";
  if (seconds > 359999) return ">99h";
  auto s = static_cast<long long>(std::ceil(seconds));
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", s / 60, s % 60);
  return buf;
}

std::string progress_line(const FileProgress& f, Clock::time_point now, std::size_t width) {
  std::string text = printable(f.name) + "  " + human_bytes(f.done) + " / " + human_bytes(f.total) + "  " +
                     percent(f.done, f.total);
  if (f.phase == Events::Phase::transferring || f.phase == Events::Phase::finalising)
    text += "  " + format_rate(f.current_rate(now)) + " (avg " + format_rate(f.average_rate(now)) + ")  ETA " +
            format_eta(f.eta(now));
  text += "  " + state_text(f, now);
  return fit(std::move(text), width);
}

std::string total_line(const std::map<std::string, FileProgress>& files, Clock::time_point now, std::size_t width) {
  std::uint64_t done = 0, total = 0;
  double rate = 0;
  int active = 0;
  for (const auto& [name, f] : files) {
    if (!f.active) continue;
    ++active;
    done += f.done;
    total += f.total;
    rate += f.current_rate(now);
  }
  std::string text = "total: " + std::to_string(active) + " files  " + human_bytes(done) + " / " +
                     human_bytes(total) + "  " + percent(done, total) + "  " + format_rate(rate) + "  ETA " +
                     format_eta(rate > 0 ? static_cast<double>(total - done) / rate : -1);
  return fit(std::move(text), width);
}

Json file_done_fields(bool sending, const FileReport& r) {
  Json j;
  j["name"] = r.name;
  j["state"] = to_string(r.state);
  j["size"] = r.size;
  j["resumed_at"] = r.resumed_at;
  j["bytes"] = r.bytes;
  j["seconds"] = std::round(r.seconds * 1000) / 1000;
  j["rate_bps"] = r.seconds > 0 ? static_cast<std::uint64_t>(static_cast<double>(r.bytes) / r.seconds) : 0;
  j["reconnects"] = r.reconnects;
  j["reverified_bytes"] = r.reverified_bytes;
  j["damaged_chunks"] = r.damaged_chunks;
  j["repaired_bytes"] = r.repaired_bytes;
  if (r.state == FileReport::State::complete)
    j["digest"] = "xxh3-128-list:" + to_hex(r.file_root);
  else
    j["digest"] = nullptr;
  j["direction"] = sending ? "sent" : "received";
  return j;
}

const char* json_name(Events::Phase phase) {
  switch (phase) {
  case Events::Phase::connecting: return "connecting";
  case Events::Phase::verifying: return "verifying";
  case Events::Phase::transferring: return "transferring";
  case Events::Phase::finalising: return "finalising";
  case Events::Phase::reconnecting: return "reconnecting";
  }
  return "";
}

std::string iso_time(std::chrono::system_clock::time_point time) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
  return buf;
}

// ----------------------------------------------------------------- Output

Output::Output(OutputOptions options) : m_opt(std::move(options)) {
  bool tty = m_opt.tty < 0 ? isatty(fileno(m_opt.err)) == 1 : m_opt.tty == 1;
  // The progress block is for a person watching a terminal: never with
  // --quiet or --json, never into cron mail or a pipe.
  m_draw = tty && !m_opt.quiet && !m_opt.json && (m_opt.side == "send" || m_opt.side == "recv");
  if (m_draw) m_ticker = std::thread([this] { tick(); });
}

Output::~Output() {
  {
    std::lock_guard lock(m_mutex);
    m_stopping = true;
  }
  m_wake.notify_all();
  if (m_ticker.joinable()) m_ticker.join();
  std::lock_guard lock(m_mutex);
  clear();
  if (m_log) std::fclose(m_log);
}

Status Output::open_log() {
  if (m_opt.log_file.empty()) return {};
  std::FILE* f = std::fopen(m_opt.log_file.c_str(), "ae");
  if (!f) return errno_error(ErrorKind::cannot_create, "cannot open --log-file " + m_opt.log_file, errno);
  std::lock_guard lock(m_mutex);
  m_log = f;
  return {};
}

void Output::tick() {
  std::unique_lock lock(m_mutex);
  while (!m_stopping) {
    m_wake.wait_for(lock, k_progress_every);
    if (!m_stopping && m_drawn_lines > 0) draw(Clock::now());
  }
}

void Output::log(const char* level, const std::string& text) {
  if (!m_log) return;
  std::fprintf(m_log, "%s sesscp[%d] %s %s: %s\n", iso_time(std::chrono::system_clock::now()).c_str(),
               static_cast<int>(getpid()), m_opt.side.empty() ? "-" : m_opt.side.c_str(), level,
               printable(text).c_str());
  std::fflush(m_log);
}

void Output::emit(const std::string& event, Json fields) {
  if (!m_opt.json) return;
  Json j;
  j["event"] = event;
  j["time"] = iso_time(std::chrono::system_clock::now());
  j["side"] = m_opt.side;
  for (auto it = fields.begin(); it != fields.end(); ++it) j[it.key()] = it.value();
  // Names from the network may hold any bytes: never fail on bad UTF-8.
  std::string text = j.dump(-1, ' ', false, Json::error_handler_t::replace);
  text += '\n';
  std::fputs(text.c_str(), m_opt.out);
  std::fflush(m_opt.out);
}

void Output::clear() {
  if (m_drawn_lines == 0) return;
  // The cursor is at the end of the block's last line: back to its first.
  std::string seq = "\r";
  if (m_drawn_lines > 1) seq += "\033[" + std::to_string(m_drawn_lines - 1) + "A";
  seq += "\033[J";
  std::fputs(seq.c_str(), m_opt.err);
  m_drawn_lines = 0;
}

void Output::draw(Clock::time_point now) {
  if (!m_draw) return;
  std::size_t width = 80;
  winsize ws{};
  if (ioctl(fileno(m_opt.err), TIOCGWINSZ, &ws) == 0 && ws.ws_col > 10) width = ws.ws_col;
  std::vector<std::string> lines;
  for (const auto& [name, f] : m_files)
    if (f.active) lines.push_back(progress_line(f, now, width - 1));
  if (lines.size() > 1) lines.push_back(total_line(m_files, now, width - 1));
  clear();
  std::string block;
  for (std::size_t i = 0; i < lines.size(); ++i) block += (i ? "\n" : "") + lines[i];
  std::fputs(block.c_str(), m_opt.err);
  std::fflush(m_opt.err);
  m_drawn_lines = static_cast<int>(lines.size());
  m_last_draw = now;
}

void Output::line(const std::string& text) {
  bool redraw = m_drawn_lines > 0;
  clear();
  // Names and messages come from the network: never let them forge a line
  // or send escape sequences to the terminal.
  std::fprintf(m_opt.err, "sesscp: %s\n", printable(text).c_str());
  if (redraw) draw(Clock::now());
  std::fflush(m_opt.err);
}

FileProgress& Output::file(const std::string& name) {
  auto& f = m_files[name];
  if (f.name.empty()) f.name = name;
  f.active = true;
  return f;
}

void Output::info(const std::string& text) {
  std::lock_guard lock(m_mutex);
  log("info", text);
  emit("message", {{"level", "info"}, {"text", text}});
  if (!m_opt.quiet) line(text);
}

void Output::notice(const std::string& text) { info(text); }

void Output::debug(const std::string& text) {
  std::lock_guard lock(m_mutex);
  log("debug", text);
  if (!m_opt.verbose) return;
  emit("message", {{"level", "debug"}, {"text", text}});
  if (!m_opt.quiet) line(text);
}

void Output::report_resume_point(FileProgress& f) {
  if (f.resume_reported) return;
  f.resume_reported = true;
  emit("resume_point", {{"name", f.name}, {"offset", f.resumed_at}, {"size", f.total}});
}

void Output::phase(const std::string& name, Phase phase, const std::string& detail) {
  std::lock_guard lock(m_mutex);
  log("debug", (name.empty() ? "" : name + ": ") + to_string(phase) + (detail.empty() ? "" : " (" + detail + ")"));
  emit("phase", {{"name", name}, {"phase", json_name(phase)}, {"detail", detail}});
  if (name.empty()) return;
  auto& f = file(name);
  auto now = Clock::now();
  if (phase == Phase::connecting || phase == Phase::reconnecting) f.resume_reported = false;
  if (phase == Phase::transferring) {
    // A fresh start has no resumed() call: its resume point is offset 0.
    if (!f.resume_reported) {
      f.resumed_at = 0;
      f.done = 0;
    }
    report_resume_point(f);
    f.start = now;
    f.samples.clear();
    f.sample(now, f.done);
  }
  if (phase == Phase::verifying) f.verify_done = f.verify_total = 0;
  f.phase = phase;
  f.detail = detail;
  if (m_drawn_lines > 0 || m_draw) draw(now);
}

void Output::reconnecting(int attempt, int limit, double delay_s, const std::string& reason) {
  {
    std::lock_guard lock(m_mutex);
    emit("reconnect", {{"attempt", attempt}, {"limit", limit}, {"delay_s", std::round(delay_s * 1000) / 1000},
                       {"reason", reason}});
    auto now = Clock::now();
    for (auto& [name, f] : m_files) {
      if (!f.active) continue;
      f.attempt = attempt;
      f.limit = limit;
      f.retry_at = now + std::chrono::milliseconds(static_cast<long long>(delay_s * 1000));
    }
  }
  char buf[128];
  std::string count = attempt_label(attempt, limit);
  std::snprintf(buf, sizeof buf, delay_s < 10 ? "reconnecting (attempt %s) in %.1fs" : "reconnecting (attempt %s) in %.0fs",
                count.c_str(), delay_s);
  info(std::string(buf) + " after: " + reason);
}

void Output::resumed(const std::string& name, std::uint64_t offset, std::uint64_t size) {
  {
    std::lock_guard lock(m_mutex);
    auto& f = file(name);
    f.total = size;
    f.resumed_at = offset;
    f.done = offset;
    f.resume_reported = false;
    report_resume_point(f);
  }
  info(name + ": resumed at " + human_bytes(offset) + " of " + human_bytes(size) + " (byte " +
       std::to_string(offset) + ")");
}

void Output::verify_progress(const std::string& name, std::uint64_t done, std::uint64_t total) {
  std::lock_guard lock(m_mutex);
  auto& f = file(name);
  f.verify_done = done;
  f.verify_total = total;
  auto now = Clock::now();
  if (done >= total || now - f.last_verify_event >= k_progress_every) {
    f.last_verify_event = now;
    emit("verify_progress", {{"name", name}, {"done", done}, {"total", total}});
  }
}

void Output::offered(const std::string& name, std::uint64_t size) {
  std::lock_guard lock(m_mutex);
  // Not active yet: a sender offers up to 32 files ahead of the one it sends.
  auto& f = m_files[name];
  if (f.name.empty()) f.name = name;
  f.total = size;
  if (f.offered) return;
  f.offered = true;
  log("debug", "offering " + name + " (" + std::to_string(size) + " bytes)");
  emit("file_offered", {{"name", name}, {"size", size}});
}

void Output::progress(const std::string& name, std::uint64_t done, std::uint64_t total) {
  // Called at each confirmed checkpoint. On a terminal the ticker redraws;
  // --json gets bounded events; cron and pipes get the summary line alone.
  std::lock_guard lock(m_mutex);
  auto& f = file(name);
  auto now = Clock::now();
  if (!f.offered) {
    // The receiver learns of a file from the sender's offer.
    f.offered = true;
    emit("file_offered", {{"name", name}, {"size", total}});
  }
  f.total = total;
  f.sample(now, done);
  bool last = done >= total;
  if (last && f.final_emitted) return;
  f.final_emitted = last;
  if (last || now - f.last_checkpoint_event >= k_checkpoint_every) {
    f.last_checkpoint_event = now;
    emit("checkpoint", {{"name", name}, {"confirmed", done}, {"size", total}});
  }
  if (last || now - f.last_progress_event >= k_progress_every) {
    f.last_progress_event = now;
    double eta = f.eta(now);
    emit("progress", {{"name", name},
                      {"done", done},
                      {"total", total},
                      {"percent", total ? std::floor(1000.0 * static_cast<double>(done) / static_cast<double>(total)) / 10 : 100.0},
                      {"rate_bps", static_cast<std::uint64_t>(f.current_rate(now))},
                      {"avg_bps", static_cast<std::uint64_t>(f.average_rate(now))},
                      {"eta_s", eta < 0 ? Json(nullptr) : Json(std::round(eta * 10) / 10)}});
  }
  // At most 20 redraws a second; the ticker covers the gaps.
  if (m_draw && (last || now - m_last_draw >= std::chrono::milliseconds(50))) draw(now);
}

void Output::file_report(bool sending, const FileReport& r) {
  std::lock_guard lock(m_mutex);
  m_files.erase(r.name);
  ++m_files_done;
  if (r.state == FileReport::State::complete || r.state == FileReport::State::already_complete) ++m_files_complete;
  m_bytes += r.bytes;
  emit("file_done", file_done_fields(sending, r));
  double rate = r.seconds > 0 ? static_cast<double>(r.bytes) / r.seconds / 1e6 : 0;
  char buf[512];
  std::snprintf(buf, sizeof buf, "%s %s: %s, %llu bytes total, resumed at %llu, %llu bytes %s, %.2f s, %.1f MB/s",
                sending ? "send" : "recv", r.name.c_str(), to_string(r.state),
                static_cast<unsigned long long>(r.size), static_cast<unsigned long long>(r.resumed_at),
                static_cast<unsigned long long>(r.bytes), sending ? "sent" : "received", r.seconds, rate);
  std::string text = buf;
  if (r.reconnects > 0) text += ", " + std::to_string(r.reconnects) + (r.reconnects == 1 ? " reconnect" : " reconnects");
  if (r.reverified_bytes > 0) text += ", re-verified " + std::to_string(r.reverified_bytes) + " bytes";
  if (r.damaged_chunks > 0)
    text += ", " + std::to_string(r.damaged_chunks) + " chunks damaged at rest, " + std::to_string(r.repaired_bytes) +
            " bytes re-sent";
  log("summary", text);
  if (!m_opt.quiet) line(text);
  else clear();
}

void Output::error(const Error& e) { error(e, hint_for(e.kind)); }

void Output::error(const Error& e, const std::string& hint) {
  std::lock_guard lock(m_mutex);
  std::string text = "error: " + e.message + (m_opt.hints && !hint.empty() ? "; " + hint : "");
  log("error", text);
  emit("error", {{"kind", to_string(e.kind)}, {"message", e.message}, {"hint", hint},
                 {"exit_code", exit_code_for(e.kind)}});
  clear();
  std::fprintf(m_opt.err, "sesscp: %s\n", printable(text).c_str());
  std::fflush(m_opt.err);
}

void Output::session_start(Json fields) {
  std::lock_guard lock(m_mutex);
  fields["version"] = SESSCP_VERSION;
  log("debug", "start " + fields.dump(-1, ' ', false, Json::error_handler_t::replace));
  emit("session_start", std::move(fields));
}

int Output::session_end(int exit_code) {
  std::lock_guard lock(m_mutex);
  double secs = seconds_between(m_started, Clock::now());
  log("debug", "end: exit " + std::to_string(exit_code));
  emit("session_end", {{"exit_code", exit_code},
                       {"files", m_files_done},
                       {"files_complete", m_files_complete},
                       {"bytes", m_bytes},
                       {"seconds", std::round(secs * 1000) / 1000}});
  return exit_code;
}

void Output::event(const std::string& name, Json fields) {
  std::lock_guard lock(m_mutex);
  emit(name, std::move(fields));
}

} // namespace cli
} // namespace sesscp
