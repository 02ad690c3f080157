// sesscp over SSH, the local side: each connection of a session is an ssh
// client process running 'sesscp recv --stdio' on the remote host
// (docs/SSH.md). The session protocol is unchanged; SSH authenticates both
// hosts and encrypts, so the session has no TLS of its own.
#pragma once

#include "core/transport.h"
#include "ssh/target.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sesscp::ssh {

struct Options {
  Target target;
  std::vector<std::string> rsh{"ssh"};   // -e/--rsh, split into words
  std::string remote_sesscp = "sesscp";  // --remote-sesscp, run by the remote shell as given
  enum class Mode { push, pull } mode = Mode::push;
  unsigned streams = 1;                  // --streams: extra ssh connections join the first
  int timeout_ms = 30'000;
  bool verbose = false;                  // pass -v to the remote sesscp
  std::uint64_t serve_bwlimit = 0;       // pull: the remote's --bwlimit (0 = none)
  const std::atomic<bool>* stop = nullptr;
};

// The remote command of the session's first connection, for messages and tests.
std::string remote_command(const Options& options, const std::string& stream_id);

std::shared_ptr<Transport> make_transport(const Options& options);

// The error to report after a session over ssh failed with `error`: what
// ssh wrote to stderr (its own lines and the remote sesscp's "sesscp:
// error:" line) and its exit status (-1: killed by a signal) say why.
// `command` is the remote command, for the message. docs/SSH.md has the table.
Error classify(const Error& error, const std::string& ssh_stderr, int exit_status, const std::string& host,
               const std::string& command);

} // namespace sesscp::ssh
