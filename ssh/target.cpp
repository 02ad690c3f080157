#include "ssh/target.h"

#include <cctype>

namespace sesscp::ssh {

namespace {

Error bad(std::string_view text, const std::string& why) {
  return make_error(ErrorKind::usage, "bad SSH target '" + std::string(text) + "' (" + why + ")");
}

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

// "~", "~/x": the remote home, which is where ssh starts the command.
std::string home_relative(std::string path) {
  if (path.empty() || path == "~" || path == "~/") return ".";
  if (path.rfind("~/", 0) == 0) return path.substr(2);
  return path;
}

// [USER@]HOST, with HOST possibly [IPV6]; checks that neither can be taken for an option.
Status split_user_host(std::string_view text, std::string_view authority, Target& t) {
  auto at = authority.rfind('@');
  if (at != std::string_view::npos) {
    t.user = std::string(authority.substr(0, at));
    authority.remove_prefix(at + 1);
    if (t.user.empty()) return bad(text, "empty user name before '@'");
  }
  if (authority.size() >= 2 && authority.front() == '[' && authority.back() == ']')
    authority = authority.substr(1, authority.size() - 2);
  t.host = std::string(authority);
  if (t.host.empty()) return bad(text, "no host");
  if (t.host.front() == '-' || (!t.user.empty() && t.user.front() == '-'))
    return bad(text, "a host or user may not start with '-'");
  for (char c : t.host + t.user)
    if (std::isspace(static_cast<unsigned char>(c)) || std::iscntrl(static_cast<unsigned char>(c)))
      return bad(text, "white space or a control character in the host or user");
  return {};
}

Result<Target> parse_url(std::string_view text) {
  std::string_view rest = text.substr(6); // after "ssh://"
  auto slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string path = slash == std::string_view::npos ? std::string() : std::string(rest.substr(slash));
  Target t;
  // [USER@]HOST[:PORT]; an IPv6 host is bracketed.
  auto close = authority.rfind(']');
  auto colon = authority.rfind(':');
  if (colon != std::string_view::npos && (close == std::string_view::npos || colon > close)) {
    auto port = authority.substr(colon + 1);
    if (!all_digits(port) || port.size() > 5 || std::stoul(std::string(port)) == 0 || std::stoul(std::string(port)) > 65535)
      return bad(text, "the port must be a number from 1 to 65535");
    t.port = static_cast<std::uint16_t>(std::stoul(std::string(port)));
    authority = authority.substr(0, colon);
  }
  SESSCP_TRY(split_user_host(text, authority, t));
  // ssh://host/~/x is home-relative, ssh://host/x is absolute, as in scp.
  if (path.rfind("/~", 0) == 0) path = path.substr(1);
  t.trailing_slash = path.size() > 1 && path.back() == '/';
  t.path = home_relative(path);
  return t;
}

} // namespace

std::string Target::display() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return (user.empty() ? "" : user + "@") + h + (port ? ":" + std::to_string(port) : "") + ":" + path;
}

std::optional<Result<Target>> parse_target(std::string_view text) {
  if (text.rfind("ssh://", 0) == 0) return parse_url(text);
  if (text.find("://") != std::string_view::npos) return std::nullopt; // sesscp://, a libcurl URL
  // The first colon outside [brackets] separates host and path.
  std::size_t colon = std::string_view::npos;
  for (std::size_t i = 0, depth = 0; i < text.size(); ++i) {
    if (text[i] == '[') ++depth;
    else if (text[i] == ']' && depth) --depth;
    else if (text[i] == ':' && depth == 0) {
      colon = i;
      break;
    }
  }
  if (colon == std::string_view::npos) return std::nullopt;
  std::string_view authority = text.substr(0, colon), path = text.substr(colon + 1);
  // scp's rule: a slash before the colon makes it a local path; a plain
  // number after it is a receiver's port.
  if (authority.find('/') != std::string_view::npos || authority.empty()) return std::nullopt;
  if (all_digits(path)) return std::nullopt;
  Target t;
  if (auto st = split_user_host(text, authority, t); !st) return Result<Target>(st.error());
  t.trailing_slash = path.size() > 1 && path.back() == '/';
  t.path = home_relative(std::string(path));
  return Result<Target>(std::move(t));
}

Result<std::vector<std::string>> split_command(std::string_view text) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  char quote = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (quote == '\'') {
      if (c == '\'') quote = 0;
      else word += c;
    } else if (quote == '"') {
      if (c == '"') quote = 0;
      else if (c == '\\' && i + 1 < text.size() && std::string_view("\"\\$`").find(text[i + 1]) != std::string_view::npos)
        word += text[++i];
      else word += c;
    } else if (c == '\'' || c == '"') {
      quote = c;
      in_word = true;
    } else if (c == '\\' && i + 1 < text.size()) {
      word += text[++i];
      in_word = true;
    } else if (std::isspace(static_cast<unsigned char>(c))) {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
    } else {
      word += c;
      in_word = true;
    }
  }
  if (quote) return make_error(ErrorKind::usage, "bad -e/--rsh '" + std::string(text) + "' (unterminated quote)");
  if (in_word) words.push_back(std::move(word));
  if (words.empty()) return make_error(ErrorKind::usage, "bad -e/--rsh: empty command");
  return words;
}

std::string shell_quote(std::string_view word) {
  bool plain = !word.empty();
  for (char c : word)
    if (!std::isalnum(static_cast<unsigned char>(c)) && std::string_view("_-./=:,+@%").find(c) == std::string_view::npos)
      plain = false;
  if (plain) return std::string(word);
  std::string out = "'";
  for (char c : word) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}

std::vector<std::string> prefer_aes_gcm(std::vector<std::string> rsh) {
  if (rsh.empty()) return rsh;
  auto slash = rsh[0].rfind('/');
  if (rsh[0].substr(slash == std::string::npos ? 0 : slash + 1) != "ssh") return rsh;
  for (std::size_t i = 1; i < rsh.size(); ++i) {
    std::string lower;
    for (char c : rsh[i]) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (rsh[i].rfind("-c", 0) == 0 || lower.find("ciphers") != std::string::npos) return rsh;
  }
  rsh.insert(rsh.begin() + 1, {"-o", k_aes_first_ciphers});
  return rsh;
}

std::vector<std::string> ssh_argv(const std::vector<std::string>& rsh, const Target& target,
                                  const std::string& remote_command) {
  std::vector<std::string> argv = rsh;
  if (target.port) argv.insert(argv.end(), {"-p", std::to_string(target.port)});
  if (!target.user.empty()) argv.insert(argv.end(), {"-l", target.user});
  argv.push_back(target.host);
  argv.push_back(remote_command);
  return argv;
}

} // namespace sesscp::ssh
