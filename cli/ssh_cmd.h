// The SSH side of the command line (docs/SSH.md): -e/--rsh and
// --remote-sesscp, the transport of 'send SRC... [USER@]HOST:PATH', 'get
// [USER@]HOST:PATH', and the remote end, 'recv --stdio' / '--stdio-join'.
#pragma once

#include "cli/output.h"
#include "cli/url_cmd.h"
#include "core/recv/receiver.h"
#include "core/send/sender.h"
#include "ssh/target.h"

#include <CLI/CLI.hpp>

#include <atomic>
#include <memory>
#include <string>

namespace sesscp::cli {

struct SshFlags {
  std::string rsh = "ssh";
  std::string remote_sesscp = "sesscp";
  // sftp:// flags that mean the same over SSH: -i KEY, UserKnownHostsFile.
  std::string ssh_key, known_hosts;
};

// -e/--rsh and --remote-sesscp on `send` or `get`.
void add_ssh_options(CLI::App* cmd, SshFlags& flags);

// The transport of a push to `target` (the options' streams, timeout and stop are used).
Result<std::shared_ptr<Transport>> ssh_push_transport(const ssh::Target& target, const SshFlags& flags,
                                                      const SendOptions& options, bool verbose);

// `get [USER@]HOST:PATH`: a pull over SSH into -o DIR (created if it ends
// in '/' or the remote PATH does); `target` as ssh::parse_target gave it.
// Returns the exit code.
int run_get_ssh(const GetArgs& args, const SshFlags& flags, const Result<ssh::Target>& target,
                const std::atomic<bool>* stop);

// Report a failure of a session over SSH with what to do about it in SSH's
// terms (not TLS keys or a listening receiver); returns the exit code.
int fail_over_ssh(Output& out, const Error& error);

struct StdioFlags {
  bool stdio = false;
  std::string stream_id; // --stdio-id: extra streams of this session join at this ID
  std::string join_id;   // --stdio-join: this process carries one extra stream
};

// --stdio, --stdio-id, --stdio-join on `recv` (started by a local sesscp through ssh).
void add_stdio_options(CLI::App* recv, StdioFlags& flags);

// `recv --stdio` or `recv --stdio-join`: `options` filled from the other
// flags (no listen address). Returns the exit code.
int run_recv_stdio(ReceiveOptions& options, const StdioFlags& flags, Output& out);

} // namespace sesscp::cli
