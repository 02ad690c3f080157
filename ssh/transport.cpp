#include "ssh/transport.h"

#include "base/hash.h"
#include "core/conn.h"
#include "ssh/channel.h"

#include <openssl/rand.h>
#include <sys/wait.h>

#include <cstdio>
#include <mutex>
#include <string_view>

namespace sesscp::ssh {

namespace {

// A name for the rendezvous of a session's extra streams on the remote host.
std::string random_id() {
  std::uint8_t raw[12];
  if (RAND_bytes(raw, sizeof raw) != 1) return "";
  return to_hex(raw);
}

// Whether the CPU has AES instructions (the "aes" flag of /proc/cpuinfo).
bool cpu_has_aes() {
  std::FILE* f = std::fopen("/proc/cpuinfo", "r");
  if (!f) return false;
  char line[4096];
  bool aes = false;
  while (!aes && std::fgets(line, sizeof line, f)) {
    std::string_view l(line);
    if (l.rfind("flags", 0) == 0 || l.rfind("Features", 0) == 0) aes = l.find(" aes") != std::string_view::npos;
  }
  std::fclose(f);
  return aes;
}

// The first line of `text` that contains `needle`, or "".
std::string line_with(const std::string& text, std::string_view needle) {
  auto at = text.find(needle);
  if (at == std::string::npos) return "";
  auto begin = text.rfind('\n', at);
  begin = begin == std::string::npos ? 0 : begin + 1;
  auto end = text.find('\n', at);
  return text.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
}

// The remote sesscp's own error line ("sesscp: error: ..."), without its prefix.
std::string remote_error(const std::string& text) {
  auto line = line_with(text, "sesscp: error: ");
  if (line.empty()) return "";
  return line.substr(line.find("sesscp: error: ") + 15);
}

// The remote sesscp's exit code, back to the kind of error it reported.
ErrorKind kind_of_exit(int code, ErrorKind otherwise) {
  switch (code) {
  case exit_code::k_cannot_create: return ErrorKind::cannot_create;
  case exit_code::k_unavailable: return ErrorKind::refused;
  case exit_code::k_no_perm: return ErrorKind::auth;
  case exit_code::k_io: return ErrorKind::io;
  case exit_code::k_integrity: return ErrorKind::integrity;
  default: return otherwise;
  }
}

std::string last_line(const std::string& text) {
  auto end = text.find_last_not_of('\n');
  if (end == std::string::npos) return "";
  auto begin = text.rfind('\n', end);
  return text.substr(begin == std::string::npos ? 0 : begin + 1, end + 1 - (begin == std::string::npos ? 0 : begin + 1));
}


// What ssh itself said: stderr without the remote sesscp's own lines
// (whose "Permission denied" is a file's, not a login's).
std::string ssh_lines(const std::string& text) {
  std::string out;
  std::size_t begin = 0;
  while (begin < text.size()) {
    auto end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + begin, end - begin);
    if (line.rfind("sesscp: ", 0) != 0) out.append(line).push_back('\n');
    begin = end + 1;
  }
  return out;
}

Error classify_impl(const Error& error, const std::string& all, int code, const std::string& host,
                  const std::string& command) {
  const std::string text = ssh_lines(all);
  for (auto needle : {"REMOTE HOST IDENTIFICATION HAS CHANGED", "Host key verification failed",
                      "host key is known", "Host key for"}) {
    if (auto line = line_with(text, needle); !line.empty())
      return make_error(ErrorKind::auth, "ssh to " + host + ": " + line);
  }
  if (auto line = line_with(text, "Permission denied"); !line.empty())
    return make_error(ErrorKind::auth, "ssh to " + host + ": " + line);
  for (auto needle : {"Connection refused", "No route to host", "Could not resolve hostname", "timed out",
                      "Network is unreachable", "Connection reset", "Connection closed by"}) {
    if (auto line = line_with(text, needle); !line.empty())
      return make_error(ErrorKind::unreachable, "ssh to " + host + ": " + line);
  }
  std::string remote = remote_error(all);
  bool not_found = code == 127 || code == 126 || !line_with(text, "command not found").empty();
  if (not_found && remote.empty())
    return make_error(ErrorKind::refused, "no usable sesscp on " + host + " (the remote shell ran '" + command +
                                              "': " + last_line(text) +
                                              "); install sesscp there, or give its path with --remote-sesscp PATH");
  if (code == exit_code::k_usage)
    return make_error(ErrorKind::version, "the sesscp on " + host + " did not take '" + command + "' (" + remote +
                                              "); it may be too old for SSH transfers: install the same version "
                                              "there, or point --remote-sesscp at one");
  if (!remote.empty() && (error.kind == ErrorKind::disconnected || error.kind == ErrorKind::timeout))
    return make_error(kind_of_exit(code, error.kind), "on " + host + ": " + remote);
  if (error.kind == ErrorKind::protocol)
    return make_error(error.kind, error.message + " (over SSH: does the remote login shell print to stdout, e.g. "
                                                  "from .bashrc? The session needs a clean channel)");
  if (error.kind == ErrorKind::disconnected && code == 255 && !last_line(text).empty())
    return make_error(error.kind, error.message + " (ssh: " + last_line(text) + ")");
  return error;
}

class SshTransport final : public Transport {
public:
  explicit SshTransport(Options options) : m_opt(std::move(options)) {
    if (cpu_has_aes()) m_opt.rsh = prefer_aes_gcm(std::move(m_opt.rsh));
  }

  Result<std::unique_ptr<Conn>> open(Role role, Events& events) override {
    std::lock_guard lock(m_mutex);
    if (role == Role::session) {
      m_session = nullptr;
      m_channels.clear(); // the last attempt's processes (the destructor waits for them)
      m_stream_id = m_opt.streams > 1 ? random_id() : "";
      m_command = remote_command(m_opt, m_stream_id);
    }
    std::string command = role == Role::session ? m_command
                                                : m_opt.remote_sesscp + " recv --stdio-join " + m_stream_id;
    auto argv = ssh_argv(m_opt.rsh, m_opt.target, command);
    events.debug("running: " + join(argv));
    auto channel = Channel::start(argv, events);
    if (!channel) return channel.error();
    auto conn = std::make_unique<Conn>((*channel)->take_socket(), m_opt.stop, m_opt.timeout_ms);
    if (role == Role::session) m_session = channel->get();
    m_channels.push_back(std::move(*channel));
    return conn;
  }

  Error explain(const Error& error, Events& events) override {
    std::lock_guard lock(m_mutex);
    if (!m_session) return error;
    auto status = m_session->wait_exit(3000);
    std::string text = m_session->stderr_text();
    int code = status && WIFEXITED(*status) ? WEXITSTATUS(*status) : -1;
    events.debug("ssh exited " + (status ? (WIFEXITED(*status) ? "with " + std::to_string(code)
                                                                : "on signal " + std::to_string(WTERMSIG(*status)))
                                         : std::string("not yet")));
    return classify_impl(error, text, code, m_opt.target.host, m_command);
  }

  std::string describe() const override {
    return "ssh " + m_opt.target.display() + " (" + m_opt.rsh.front() + ", then '" + m_opt.remote_sesscp +
           " recv --stdio' there)";
  }

private:
  static std::string join(const std::vector<std::string>& argv) {
    std::string s;
    for (auto& a : argv) s += (s.empty() ? "" : " ") + shell_quote(a);
    return s;
  }

  Options m_opt;
  std::mutex m_mutex;
  std::vector<std::unique_ptr<Channel>> m_channels;
  Channel* m_session = nullptr;
  std::string m_stream_id, m_command;
};

} // namespace

std::string remote_command(const Options& o, const std::string& stream_id) {
  std::string cmd = o.remote_sesscp + " recv --stdio";
  if (o.mode == Options::Mode::push) cmd += " --dir " + shell_quote(o.target.path);
  else cmd += " --serve " + shell_quote(o.target.path);
  cmd += " --timeout " + std::to_string(std::max(1, o.timeout_ms / 1000));
  if (o.serve_bwlimit) cmd += " --bwlimit " + std::to_string(o.serve_bwlimit);
  if (!stream_id.empty()) cmd += " --stdio-id " + stream_id;
  if (o.verbose) cmd += " -v";
  return cmd;
}

Error classify(const Error& error, const std::string& ssh_stderr, int exit_status, const std::string& host,
               const std::string& command) {
  return classify_impl(error, ssh_stderr, exit_status, host, command);
}

std::shared_ptr<Transport> make_transport(const Options& options) { return std::make_shared<SshTransport>(options); }

} // namespace sesscp::ssh
