// The URL side of the command line: `sesscp get URL` and `sesscp send FILE
// sftp://...` (docs/URL.md). Kept apart from main.cpp's TCP commands.
#pragma once

#include "cli/output.h"

#include <CLI/CLI.hpp>

#include <atomic>
#include <string>

namespace sesscp::cli {

struct GetArgs {
  std::string url, output, bwlimit, sha256, xxh128, cacert, ssh_key, known_hosts, retry_for;
  std::string verify_resume = "full";
  int connections = 1;
  int retry = 0;
  double timeout_s = 30;
  std::string log_file;
  bool insecure = false, quiet = false, verbose = false, json = false;
};

// Register `get` on `app`; its flags land in `args`.
CLI::App* add_get_command(CLI::App& app, GetArgs& args);

// How `get` reports (-q, -v, --json, --log-file).
OutputOptions get_output_options(const GetArgs& args);

// Run `sesscp get`; returns the exit code.
int run_get(const GetArgs& args, const std::atomic<bool>* stop);

struct SftpSendFlags {
  std::string ssh_key, known_hosts;
};

// Register the sftp:// options of `send`.
void add_sftp_send_options(CLI::App* send, SftpSendFlags& flags);

// Run `sesscp send FILE URL`, reporting to `out` (whose session_start and
// session_end the caller emits); returns the exit code.
int send_url(const std::string& source, const std::string& url, const SftpSendFlags& flags, bool insecure,
             double timeout_s, std::uint64_t bwlimit, int retry, const std::string& retry_for, Output& out,
             const std::atomic<bool>* stop);

} // namespace sesscp::cli
