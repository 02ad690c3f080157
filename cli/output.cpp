#include "cli/output.h"

#include "core/retry.h"

#include <unistd.h>

#include <cstdio>

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

namespace {

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

Output::Output(bool quiet, bool verbose) : m_quiet(quiet), m_verbose(verbose), m_tty(isatty(STDERR_FILENO)) {}

Output::~Output() {
  std::lock_guard lock(m_mutex);
  if (m_progress_shown) std::fputs("\n", stderr);
}

void Output::line(const std::string& text) {
  if (m_progress_shown) { std::fputs("\r\033[K", stderr); m_progress_shown = false; }
  // Names and messages come from the network: never let them forge a line
  // or send escape sequences to the terminal.
  std::fprintf(stderr, "sesscp: %s\n", printable(text).c_str());
}

void Output::info(const std::string& text) {
  std::lock_guard lock(m_mutex);
  if (!m_quiet) line(text);
}

void Output::notice(const std::string& text) { info(text); }

void Output::debug(const std::string& text) {
  std::lock_guard lock(m_mutex);
  if (m_verbose) line(text);
}

void Output::progress(const std::string& name, std::uint64_t done, std::uint64_t total) {
  // Redraw in place on a terminal only, at most ten times a second; cron and
  // pipes get the summary line alone.
  std::lock_guard lock(m_mutex);
  if (m_quiet || !m_tty) return;
  auto now = std::chrono::steady_clock::now();
  if (done < total && now - m_last_draw < std::chrono::milliseconds(100)) return;
  m_last_draw = now;
  int pct = total ? static_cast<int>(100.0 * static_cast<double>(done) / static_cast<double>(total)) : 100;
  std::fprintf(stderr, "\r\033[K%s  %s / %s  %d%%", printable(name).c_str(), human_bytes(done).c_str(),
               human_bytes(total).c_str(), pct);
  m_progress_shown = true;
}

void Output::reconnecting(int attempt, int limit, double delay_s, const std::string& reason) {
  char buf[128];
  std::string count = attempt_label(attempt, limit);
  std::snprintf(buf, sizeof buf, delay_s < 10 ? "reconnecting (attempt %s) in %.1fs" : "reconnecting (attempt %s) in %.0fs",
                count.c_str(), delay_s);
  info(std::string(buf) + " after: " + reason);
}

void Output::resumed(const std::string& name, std::uint64_t offset, std::uint64_t size) {
  info(name + ": resumed at " + human_bytes(offset) + " of " + human_bytes(size) + " (byte " +
       std::to_string(offset) + ")");
}

void Output::file_report(bool sending, const FileReport& r) {
  std::lock_guard lock(m_mutex);
  if (m_quiet) return;
  double rate = r.seconds > 0 ? static_cast<double>(r.bytes) / r.seconds / 1e6 : 0;
  char buf[512];
  std::snprintf(buf, sizeof buf, "%s %s: %s, %llu bytes total, resumed at %llu, %llu bytes %s, %.2f s, %.1f MB/s",
                sending ? "send" : "recv", r.name.c_str(), to_string(r.state),
                static_cast<unsigned long long>(r.size), static_cast<unsigned long long>(r.resumed_at),
                static_cast<unsigned long long>(r.bytes), sending ? "sent" : "received", r.seconds, rate);
  std::string text = buf;
  if (r.reconnects > 0) text += ", " + std::to_string(r.reconnects) + (r.reconnects == 1 ? " reconnect" : " reconnects");
  line(text);
}

void Output::error(const Error& e) { error(e, hint_for(e.kind)); }

void Output::error(const Error& e, const std::string& hint) {
  std::lock_guard lock(m_mutex);
  if (m_progress_shown) { std::fputs("\r\033[K", stderr); m_progress_shown = false; }
  std::fprintf(stderr, "sesscp: error: %s; %s\n", printable(e.message).c_str(), hint.c_str());
}

} // namespace cli
} // namespace sesscp
