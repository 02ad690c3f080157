// What an SSH destination or source looks like on the command line, and the
// commands sesscp runs through ssh (docs/SSH.md).
//
//   [USER@]HOST:PATH              scp's form: the colon is followed by
//                                 something that is not a plain port number
//   ssh://[USER@]HOST[:PORT]/PATH unambiguous
//   HOST:PORT, sesscp://HOST:PORT a listening 'sesscp recv' (not SSH)
#pragma once

#include "base/result.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sesscp::ssh {

struct Target {
  std::string user;       // "" = ssh's default (its config, or the local user)
  std::string host;
  std::uint16_t port = 0; // 0 = ssh's default
  std::string path;       // remote path; relative to the remote home ("." for none)
  bool trailing_slash = false; // PATH/ : a directory's contents (pull)
  std::string display() const; // [user@]host[:port]:path, for messages
};

// Nothing when `text` is not an SSH target (a HOST:PORT receiver, a URL, a
// local path); a usage error when it is one but malformed.
std::optional<Result<Target>> parse_target(std::string_view text);

// Split an -e/--rsh command line into words: whitespace separates, single
// and double quotes group, a backslash escapes the next character (as a
// POSIX shell does, without expansions).
Result<std::vector<std::string>> split_command(std::string_view text);

// `word` quoted for a POSIX shell (the remote login shell runs the command).
std::string shell_quote(std::string_view word);

// The local argv that runs `remote_command` on the target: the -e words,
// then -p PORT and -l USER when the target names them, then the host and
// the command.
std::vector<std::string> ssh_argv(const std::vector<std::string>& rsh, const Target& target,
                                  const std::string& remote_command);

// OpenSSH's default cipher order with AES-GCM first: on a CPU with AES
// instructions it moved a file 25 % faster than chacha20-poly1305 (the
// default) here (docs/SSH.md). Added as -o Ciphers=... after the program
// when it is ssh and the words choose no cipher themselves (-c, Ciphers=).
inline constexpr const char* k_aes_first_ciphers =
    "Ciphers=aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr";
std::vector<std::string> prefer_aes_gcm(std::vector<std::string> rsh);

} // namespace sesscp::ssh
