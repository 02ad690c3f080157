// sesscp: send and receive large files in resumable, verified sessions.
#include "cli/output.h"
#include "core/receiver.h"
#include "core/sender.h"

#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <string>

namespace {

std::atomic<bool> g_stop{false};

extern "C" void on_signal(int) { g_stop.store(true); }

void install_signal_handlers() {
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
}

const char* k_exit_codes = R"(Exit codes:
  0   success, or the file was already complete
  64  usage error (bad option, missing source, bad HOST:PORT)
  65  integrity failure that retrying cannot fix
  69  peer unreachable, or it refused the session (busy, version)
  73  cannot create the output file or journal
  74  local I/O error (e.g. disk full)
  75  interrupted; state saved: re-run the same command to resume
  76  protocol error: the peer broke the protocol)";

// Parse "64M", "1G", "4096", "512KiB" (powers of 1024).
sesscp::Result<std::uint64_t> parse_size(const std::string& text, const char* what) {
  std::size_t used = 0;
  unsigned long long value = 0;
  try {
    value = std::stoull(text, &used);
  } catch (...) {
    return sesscp::make_error(sesscp::ErrorKind::usage, std::string("bad ") + what + " '" + text + "'");
  }
  std::string unit = text.substr(used);
  for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (unit.size() > 1 && (unit.substr(1) == "B" || unit.substr(1) == "IB")) unit = unit.substr(0, 1);
  int shift = unit.empty() || unit == "B" ? 0 : unit == "K" ? 10 : unit == "M" ? 20 : unit == "G" ? 30 : -1;
  if (shift < 0 || value > (~0ULL >> shift))
    return sesscp::make_error(sesscp::ErrorKind::usage, std::string("bad ") + what + " '" + text +
                                                            "' (use a number with K, M or G)");
  return value << shift;
}

struct CommonFlags {
  bool quiet = false;
  bool verbose = false;
  double timeout_s = 30;
};

void add_common(CLI::App* cmd, CommonFlags& f) {
  cmd->add_flag("-q,--quiet", f.quiet, "Print only errors");
  cmd->add_flag("-v,--verbose", f.verbose, "Print protocol-level events");
  cmd->add_option("--timeout", f.timeout_s, "Seconds of peer silence that end a session")
      ->default_val(30)
      ->check(CLI::Range(1.0, 86400.0));
}

int fail(sesscp::cli::Output& out, const sesscp::Error& e) {
  out.error(e);
  return sesscp::exit_code_for(e.kind);
}

struct SendArgs {
  std::string source, target, name, chunk = "1M", window = "60M", bwlimit = "0";
};

int run_send(const SendArgs& a, const CommonFlags& f) {
  sesscp::cli::Output out(f.quiet, f.verbose);
  sesscp::SendOptions o;
  o.path = a.source;
  o.name = a.name;
  auto endpoint = sesscp::net::parse_endpoint(a.target, false);
  if (!endpoint) return fail(out, endpoint.error());
  o.endpoint = *endpoint;
  auto chunk = parse_size(a.chunk, "--chunk-size");
  if (!chunk) return fail(out, chunk.error());
  if (*chunk < 4096 || *chunk > (16u << 20) || *chunk % 4096 != 0)
    return fail(out, sesscp::make_error(sesscp::ErrorKind::usage,
                                        "bad --chunk-size '" + a.chunk + "' (a multiple of 4K from 4K to 16M)"));
  o.chunk_size = static_cast<std::uint32_t>(*chunk);
  auto window = parse_size(a.window, "--window");
  if (!window) return fail(out, window.error());
  if (*window == 0) return fail(out, sesscp::make_error(sesscp::ErrorKind::usage, "--window must be positive"));
  o.window = *window;
  auto bwlimit = parse_size(a.bwlimit, "--bwlimit");
  if (!bwlimit) return fail(out, bwlimit.error());
  o.bwlimit = *bwlimit;
  o.timeout_ms = static_cast<int>(f.timeout_s * 1000);
  o.stop = &g_stop;

  sesscp::FileReport report;
  auto status = sesscp::send_file(o, out, report);
  if (!status) return fail(out, status.error());
  return sesscp::exit_code::k_ok;
}

struct RecvArgs {
  std::string listen, dir;
  bool once = false;
  int max_sessions = 16;
};

int run_recv(const RecvArgs& a, const CommonFlags& f) {
  sesscp::cli::Output out(f.quiet, f.verbose);
  sesscp::ReceiveOptions o;
  auto endpoint = sesscp::net::parse_endpoint(a.listen, true);
  if (!endpoint) return fail(out, endpoint.error());
  o.listen = *endpoint;
  o.dir = a.dir;
  o.once = a.once;
  o.max_sessions = a.max_sessions;
  o.timeout_ms = static_cast<int>(f.timeout_s * 1000);
  o.stop = &g_stop;
  auto receiver = sesscp::Receiver::create(o, out);
  if (!receiver) return fail(out, receiver.error());
  out.notice("listening on " + receiver->address() + ", writing into " + a.dir);
  auto status = receiver->serve();
  if (!status) return sesscp::exit_code_for(status.error().kind); // already reported per file/session
  return sesscp::exit_code::k_ok;
}

} // namespace

int main(int argc, char** argv) {
  install_signal_handlers();
  CLI::App app{"sesscp: move large files in sessions that resume from verified checkpoints"};
  app.footer(k_exit_codes);
  app.require_subcommand(1);
  app.set_version_flag("--version", "sesscp " SESSCP_VERSION);

  CommonFlags send_flags, recv_flags;
  SendArgs send_args;
  auto* send = app.add_subcommand("send", "Send FILE to a receiver at HOST:PORT, resuming where it stopped");
  send->add_option("file", send_args.source, "File to send")->required();
  send->add_option("target", send_args.target, "Receiver address, HOST:PORT")->required();
  send->add_option("--name", send_args.name, "Name at the receiver (default: the file's name)");
  send->add_option("--chunk-size", send_args.chunk, "Hashing unit, 4K..16M (default 1M)");
  send->add_option("--window", send_args.window, "Unconfirmed bytes in flight; bounds what a resume re-sends (default 60M)");
  send->add_option("--bwlimit", send_args.bwlimit, "Limit the rate to RATE bytes/s, e.g. 50M (default: none)");
  add_common(send, send_flags);
  send->footer("Examples:\n  sesscp send /big/disk.img backup-host:7070\n"
               "  sesscp send disk.img 10.0.0.2:7070 --name disk-2026-11-24.img --bwlimit 100M\n"
               "Re-running the same command after any interruption resumes it.\n\n" + std::string(k_exit_codes));

  RecvArgs recv_args;
  auto* recv = app.add_subcommand("recv", "Receive files into --dir");
  recv->add_option("--listen", recv_args.listen, "Address to listen on, HOST:PORT (port 0 picks a free one)")->required();
  recv->add_option("--dir", recv_args.dir, "Directory to write files into")->required();
  recv->add_flag("--once", recv_args.once, "Exit after one session, with its exit code");
  recv->add_option("--max-sessions", recv_args.max_sessions, "Concurrent sessions (default 16)")
      ->check(CLI::Range(1, 4096));
  add_common(recv, recv_flags);
  recv->footer("Examples:\n  sesscp recv --listen 0.0.0.0:7070 --dir /data/incoming\n"
               "  sesscp recv --listen 127.0.0.1:0 --dir /tmp/in --once\n\n" + std::string(k_exit_codes));

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return sesscp::exit_code::k_usage;
  }
  if (send->parsed()) return run_send(send_args, send_flags);
  return run_recv(recv_args, recv_flags);
}
