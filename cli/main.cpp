// sesscp: send and receive large files in resumable, verified sessions.
#include "cli/args.h"
#include "cli/output.h"
#include "cli/s3_cmd.h"
#include "cli/status.h"
#include "cli/ssh_cmd.h"
#include "cli/url_cmd.h"
#include "url/curl.h"
#include "core/dialog/dialog.h"
#include "ssh/target.h"

#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
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
  64  usage error (bad option, missing source, bad HOST:PORT or HOST:PATH)
  65  integrity failure that retrying cannot fix
  69  peer unreachable, or it refused the session (version, dialog mode, name, size);
      over SSH: ssh not installed, or no usable sesscp on the remote host
  70  internal error (a bug in sesscp): please report it
  73  cannot create the output file, journal or --log-file (over SSH: on either host)
  74  local I/O error (e.g. disk full)
  75  interrupted, or the destination is busy; state saved: re-run the same command to resume
  76  protocol error: the peer broke the protocol (e.g. data from the wrong side of a simplex session)
  77  authentication failed (wrong or missing key, untrusted certificate; SSH: key refused, host key unknown or changed))";

using sesscp::cli::parse_size;

struct CommonFlags {
  bool quiet = false;
  bool verbose = false;
  bool json = false;
  std::string log_file;
  double timeout_s = 30;
  sesscp::tls::Options tls;
};

// Output flags shared by every subcommand (send, recv, status).
void add_output_flags(CLI::App* cmd, CommonFlags& f) {
  cmd->add_flag("-q,--quiet", f.quiet, "Print only errors (no progress, no summary)");
  cmd->add_flag("-v,--verbose", f.verbose, "Print protocol-level events");
  cmd->add_flag("--json", f.json, "Newline-delimited JSON events on stdout (docs/JSON.md); human text on stderr");
  cmd->add_option("--log-file", f.log_file, "Append timestamped lines, debug included, to this file");
}

sesscp::cli::OutputOptions output_options(const CommonFlags& f, const char* side) {
  sesscp::cli::OutputOptions o;
  o.quiet = f.quiet;
  o.verbose = f.verbose;
  o.json = f.json;
  o.log_file = f.log_file;
  o.side = side;
  return o;
}

// Exactly one way to protect the session must be chosen; plaintext only on
// request. An explicit --insecure wins over a key from SESSCP_KEY_FILE.
sesscp::Status check_security(sesscp::tls::Options& t) {
  const char* env_key = std::getenv("SESSCP_KEY_FILE");
  if (t.insecure && env_key && t.key_file == env_key) t.key_file.clear();
  int modes = int(t.insecure) + int(!t.key_file.empty()) + int(!t.cert_file.empty() || !t.private_key_file.empty());
  if (modes == 1) return {};
  if (modes == 0)
    return sesscp::make_error(sesscp::ErrorKind::usage,
                              "no authentication configured (use --key-file FILE from 'sesscp keygen', "
                              "or --cert/--key with --ca or --peer-fingerprint, or --insecure for plaintext)");
  return sesscp::make_error(sesscp::ErrorKind::usage,
                            "conflicting security options (choose one of --insecure, --key-file, or --cert/--key)");
}

void add_common(CLI::App* cmd, CommonFlags& f) {
  cmd->add_option("--key-file", f.tls.key_file, "Shared key made by 'sesscp keygen' (TLS 1.3 PSK); env SESSCP_KEY_FILE")
      ->envname("SESSCP_KEY_FILE");
  cmd->add_option("--cert", f.tls.cert_file, "PEM certificate (chain) of this side");
  cmd->add_option("--key", f.tls.private_key_file, "PEM private key of --cert");
  cmd->add_option("--ca", f.tls.ca_file, "CA file that the peer's certificate must chain to");
  cmd->add_option("--peer-fingerprint", f.tls.peer_fingerprint, "Pin the peer's certificate: sha256:HEX");
  cmd->add_flag("--insecure", f.tls.insecure, "Plaintext: no encryption, no authentication (both sides)");
  add_output_flags(cmd, f);
  cmd->add_option("--timeout", f.timeout_s, "Seconds of peer silence that end a session")
      ->default_val(30)
      ->check(CLI::Range(1.0, 86400.0));
}

int fail(sesscp::cli::Output& out, const sesscp::Error& e) {
  out.error(e);
  return sesscp::exit_code_for(e.kind);
}

struct SendArgs {
  std::vector<std::string> sources; // FILE|DIR... then HOST:PORT last
  std::string target, name, chunk = "1M", window = "60M", bwlimit = "0", retry_for, streams = "1";
  int retry = 0;
  bool follow_links = false;
  std::vector<std::string> fetch; // paths to fetch from the receiver's --serve export (half- or full-duplex)
  std::string fetch_dir = ".";
  std::string duplex;             // --duplex half|full ("" = half with --fetch)
  bool checksum = false;          // --checksum: re-hash the source's chunks confirmed before
  std::string verify_resume = "full"; // what --fetch receives: --verify-resume full|tail
};

sesscp::checkpoint::ResumeCheck resume_check(const std::string& word) {
  return word == "tail" ? sesscp::checkpoint::ResumeCheck::tail : sesscp::checkpoint::ResumeCheck::full;
}

// The --verify-resume option of recv and send (CLI11 checks the word).
void add_verify_resume(CLI::App* cmd, std::string& word, const char* what) {
  cmd->add_option("--verify-resume", word,
                  std::string("On resume, read back ") + what +
                      ": 'full' (default) re-hashes every confirmed chunk of the partial file\n"
                      "in the background while the rest arrives, and has damaged ones sent again;\n"
                      "'tail' re-hashes only the last 64 MiB and trusts the rest to the journal:\n"
                      "damage at rest before that is NOT detected (for storage you trust)")
      ->check(CLI::IsMember({"full", "tail"}));
}

// `send FILE sftp://...`: what a URL destination cannot do, then cli::send_url.
int send_to_url(const SendArgs& a, const CommonFlags& f, const sesscp::cli::SftpSendFlags& sftp,
                sesscp::cli::Output& out) {
  auto bwlimit = parse_size(a.bwlimit, "--bwlimit");
  if (!bwlimit) return fail(out, bwlimit.error());
  if (!a.fetch.empty())
    return fail(out, sesscp::make_error(sesscp::ErrorKind::usage, "--fetch needs a sesscp receiver (HOST:PORT), not a URL"));
  if (a.streams != "1")
    return fail(out, sesscp::make_error(sesscp::ErrorKind::usage, "--streams needs a sesscp receiver (HOST:PORT), not a URL"));
  if (a.sources.size() != 1)
    return fail(out, sesscp::make_error(sesscp::ErrorKind::usage,
                                        "an sftp:// destination takes one FILE, not " + std::to_string(a.sources.size()) +
                                            " sources (directories go to a sesscp receiver)"));
  return sesscp::cli::send_url(a.sources.front(), a.target, sftp, f.tls.insecure, f.timeout_s, *bwlimit, a.retry,
                               a.retry_for, out, &g_stop);
}

// What the session sends and fetches: the sources, --fetch PATH... and --duplex.
sesscp::Status set_contents(const SendArgs& a, sesscp::SendOptions& o) {
  o.paths = a.sources;
  o.path = a.sources.empty() ? "" : a.sources.front();
  o.name = a.name;
  o.follow_links = a.follow_links;
  if (a.sources.empty() && a.fetch.empty())
    return sesscp::make_error(sesscp::ErrorKind::usage, "nothing to send or fetch (give FILE|DIR... or --fetch PATH)");
  for (auto path : a.fetch) {
    // PATH/ fetches the directory's contents, as DIR/ sends them.
    bool contents = path.size() > 1 && path.back() == '/';
    while (path.size() > 1 && path.back() == '/') path.pop_back();
    if (auto why = sesscp::frame::check_path(path); !why.empty())
      return sesscp::make_error(sesscp::ErrorKind::usage, "bad --fetch '" + path + "' (" + why +
                                                              "; paths are relative to the receiver's --serve directory)");
    o.fetch.push_back({path, contents});
  }
  o.fetch_dir = a.fetch_dir;
  if (!a.duplex.empty() && a.fetch.empty())
    return sesscp::make_error(sesscp::ErrorKind::usage, "--duplex applies only with --fetch PATH");
  o.dialog = a.duplex == "full" ? sesscp::Dialog::full_duplex : sesscp::Dialog::half_duplex;
  o.checksum = a.checksum;
  o.verify_resume = resume_check(a.verify_resume);
  return {};
}

// --streams N: several TCP connections for one session, a plain number 1..64.
sesscp::Status set_streams(const std::string& v, sesscp::SendOptions& o) {
  bool digits = !v.empty() && v.size() <= 3 && v.find_first_not_of("0123456789") == std::string::npos;
  int n = digits ? std::stoi(v) : 0;
  if (n < 1 || n > static_cast<int>(sesscp::frame::feature::k_max_streams))
    return sesscp::make_error(sesscp::ErrorKind::usage,
                              "bad --streams '" + v + "' (a number of TCP connections from 1 to 64)");
  if (n > 1 && !o.fetch.empty())
    return sesscp::make_error(sesscp::ErrorKind::usage,
                              "--streams cannot be combined with --fetch (a half- or full-duplex session uses one connection)");
  o.streams = static_cast<unsigned>(n);
  return {};
}

// How the session runs: the receiver's HOST:PORT, chunk size, window, rate,
// streams, timeout and retries.
sesscp::Status set_transport(const SendArgs& a, const CommonFlags& f, sesscp::SendOptions& o, bool ssh) {
  if (!ssh) {
    // sesscp://HOST:PORT is HOST:PORT said unambiguously.
    std::string_view target = a.target;
    if (target.rfind("sesscp://", 0) == 0) target.remove_prefix(9);
    auto endpoint = sesscp::net::parse_endpoint(target, false);
    if (!endpoint) return endpoint.error();
    o.endpoint = *endpoint;
  }
  auto chunk = parse_size(a.chunk, "--chunk-size");
  if (!chunk) return chunk.error();
  if (*chunk < 4096 || *chunk > (16u << 20) || *chunk % 4096 != 0)
    return sesscp::make_error(sesscp::ErrorKind::usage,
                              "bad --chunk-size '" + a.chunk + "' (a multiple of 4K from 4K to 16M)");
  o.chunk_size = static_cast<std::uint32_t>(*chunk);
  auto window = parse_size(a.window, "--window");
  if (!window) return window.error();
  if (*window == 0) return sesscp::make_error(sesscp::ErrorKind::usage, "bad --window '" + a.window + "' (must be positive)");
  o.window = *window;
  auto bwlimit = parse_size(a.bwlimit, "--bwlimit");
  if (!bwlimit) return bwlimit.error();
  o.bwlimit = *bwlimit;
  SESSCP_TRY(set_streams(a.streams, o));
  o.timeout_ms = static_cast<int>(f.timeout_s * 1000);
  o.stop = &g_stop;
  auto retry = sesscp::cli::retry_policy(a.retry, a.retry_for);
  if (!retry) return retry.error();
  o.retry = *retry;
  return {};
}

int send_session(const SendArgs& a, CommonFlags& f, const sesscp::cli::SftpSendFlags& sftp,
                 sesscp::cli::SshFlags ssh_flags, sesscp::cli::Output& out) {
  if (auto log = out.open_log(); !log) return fail(out, log.error());
  out.session_start({{"file", a.sources.empty() ? std::string() : a.sources.front()},
                     {"sources", a.sources},
                     {"target", sesscp::url::redact(a.target)},
                     {"fetch", a.fetch},
                     {"fetch_dir", a.fetch.empty() ? std::string() : a.fetch_dir}});
  // A URL destination is a separate code path (libcurl, docs/URL.md).
  if (sesscp::url::looks_like_url(a.target)) return send_to_url(a, f, sftp, out);
  // [USER@]HOST:PATH or ssh://: over SSH, which authenticates and encrypts (docs/SSH.md).
  auto ssh = sesscp::ssh::parse_target(a.target);
  if (ssh && !*ssh) return fail(out, ssh->error());
  sesscp::SendOptions o;
  if (!ssh) {
    if (auto sec = check_security(f.tls); !sec) return fail(out, sec.error());
    if (f.tls.insecure) out.notice("WARNING: plaintext session (--insecure): data is neither encrypted nor authenticated");
    o.tls = f.tls;
  }
  if (auto st = set_contents(a, o); !st) return fail(out, st.error());
  if (auto st = set_transport(a, f, o, ssh.has_value()); !st) return fail(out, st.error());
  if (ssh) {
    if (!o.fetch.empty())
      return fail(out, sesscp::make_error(sesscp::ErrorKind::usage, "--fetch needs a sesscp receiver (HOST:PORT); "
                                                                    "over SSH, pull with 'sesscp get HOST:PATH'"));
    ssh_flags.ssh_key = sftp.ssh_key;
    ssh_flags.known_hosts = sftp.known_hosts;
    auto transport = sesscp::cli::ssh_push_transport(**ssh, ssh_flags, o, f.verbose);
    if (!transport) return fail(out, transport.error());
    o.transport = *transport;
  }

  sesscp::dialog::wire(o);

  sesscp::FileReport report;
  auto status = sesscp::send_file(o, out, report);
  if (!status) return ssh ? sesscp::cli::fail_over_ssh(out, status.error()) : fail(out, status.error());
  return sesscp::exit_code::k_ok;
}

int run_send(const SendArgs& a, CommonFlags& f, const sesscp::cli::SftpSendFlags& sftp,
             const sesscp::cli::SshFlags& ssh) {
  sesscp::cli::Output out(output_options(f, "send"));
  return out.session_end(send_session(a, f, sftp, ssh, out));
}

struct RecvArgs {
  std::string listen, dir, serve;
  bool once = false;
  int max_sessions = 16;
  std::string max_size = "0", bwlimit = "0";
  std::string verify_resume = "full";
  sesscp::cli::StdioFlags stdio;
};

int recv_sessions(const RecvArgs& a, CommonFlags& f, sesscp::cli::Output& out) {
  if (auto log = out.open_log(); !log) return fail(out, log.error());
  bool stdio = a.stdio.stdio || !a.stdio.join_id.empty();
  if (stdio == !a.listen.empty() || (!stdio && a.dir.empty()))
    return fail(out, sesscp::make_error(sesscp::ErrorKind::usage,
                                        stdio ? "--listen does not go with --stdio (the session is on stdin/stdout)"
                                              : "recv needs --listen HOST:PORT and --dir DIR (or --stdio, as ssh runs it)"));
  sesscp::ReceiveOptions o;
  if (!stdio) {
    if (auto sec = check_security(f.tls); !sec) return fail(out, sec.error());
    o.tls = f.tls;
    auto endpoint = sesscp::net::parse_endpoint(a.listen, true);
    if (!endpoint) return fail(out, endpoint.error());
    o.listen = *endpoint;
  }
  o.dir = a.dir;
  o.once = a.once;
  o.max_sessions = a.max_sessions;
  auto max_size = parse_size(a.max_size, "--max-size");
  if (!max_size) return fail(out, max_size.error());
  o.max_size = *max_size;
  o.serve_dir = a.serve;
  o.verify_resume = resume_check(a.verify_resume);
  auto bwlimit = parse_size(a.bwlimit, "--bwlimit");
  if (!bwlimit) return fail(out, bwlimit.error());
  o.serve_bwlimit = *bwlimit;
  o.timeout_ms = static_cast<int>(f.timeout_s * 1000);
  o.stop = &g_stop;
  if (stdio) return sesscp::cli::run_recv_stdio(o, a.stdio, out);
  sesscp::dialog::wire(o);
  auto receiver = sesscp::Receiver::create(o, out);
  if (!receiver) return fail(out, receiver.error());
  out.session_start({{"listen", receiver->address()}, {"dir", a.dir}, {"serve", a.serve}, {"security", receiver->security()}});
  out.notice("listening on " + receiver->address() + ", writing into " + a.dir +
             (a.serve.empty() ? "" : ", serving " + a.serve + " read-only to --fetch") + " (" + receiver->security() + ")");
  auto status = receiver->serve();
  // Sessions were reported as they ended; the exit status still gets its
  // error line, so that --quiet and cron see why.
  if (!status) return fail(out, status.error());
  return sesscp::exit_code::k_ok;
}

int run_recv(const RecvArgs& a, CommonFlags& f) {
  auto options = output_options(f, "recv");
  options.hints = !a.stdio.stdio && a.stdio.join_id.empty();
  sesscp::cli::Output out(options);
  return out.session_end(recv_sessions(a, f, out));
}

int run_keygen(const std::string& path) {
  sesscp::cli::OutputOptions options;
  options.side = "keygen";
  sesscp::cli::Output out(options);
  auto text = sesscp::tls::generate_key_text();
  if (!text) return fail(out, text.error());
  if (path.empty()) {
    std::fputs(text->c_str(), stdout);
    return sesscp::exit_code::k_ok;
  }
  if (auto st = sesscp::tls::write_key_file(path, *text); !st) return fail(out, st.error());
  out.notice("wrote a new key to " + path + " (mode 0600); copy it to both hosts and use --key-file " + path);
  return sesscp::exit_code::k_ok;
}

// A command line CLI11 rejected: one line in the usual error format (and an
// "error" event when --json was asked for), exit 64.
int usage_error(std::string why, const std::string& sub, int argc, char** argv) {
  for (auto& c : why)
    if (c == '\n') c = ' ';
  sesscp::cli::OutputOptions options;
  options.side = sub;
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--json") == 0) options.json = true;
  sesscp::cli::Output out(options);
  std::string what = sub.empty() ? "bad command line" : "bad command line for 'sesscp " + sub + "'";
  out.error(sesscp::make_error(sesscp::ErrorKind::usage, what + " (" + why + ")"));
  return sesscp::exit_code::k_usage;
}

// The whole program's help: examples and exit codes; one subcommand required.
void describe_app(CLI::App& app) {
  app.footer(std::string("Examples:\n  sesscp keygen -o sesscp.key\n"
                         "  sesscp recv --listen 0.0.0.0:7070 --dir /data/incoming --key-file sesscp.key\n"
                         "  sesscp send /big/disk.img backup-host:7070 --key-file sesscp.key\n"
                         "  sesscp status /data/incoming\n"
                         "  sesscp get https://mirror.example/disk.img -o /data/disk.img --connections 8\n"
                         "  sesscp send /big/disk.img backup@nas:/data/   # over SSH, no daemon (docs/SSH.md)\n"
                         "  sesscp send /big/disk.img s3://bucket/disk.img --connections 8   # S3 (docs/S3.md)\n"
                         "'sesscp COMMAND --help' for each command; 'man sesscp' for the manual.\n\n") +
             k_exit_codes);
  app.require_subcommand(1);
  app.set_version_flag("--version", "sesscp " SESSCP_VERSION);
}

// The examples and exit codes under `send --help`.
std::string send_footer() {
  return "Examples:\n  sesscp send /big/disk.img backup-host:7070\n"
               "  sesscp send /big/disk.img backup@backup-host:/data/   # over SSH, no daemon (docs/SSH.md)\n"
               "  sesscp send photos/ ssh://me@nas:2222/srv/photos --streams 4 -e 'ssh -i ~/.ssh/nas'\n"
               "  sesscp send /big/disk.img backup-host:7070 --retry-for 2h --quiet   # from cron\n"
               "  sesscp send disk.img 10.0.0.2:7070 --name disk-2026-11-24.img --bwlimit 100M\n"
               "  sesscp send disk.img far-host:7070 --streams 4   # four TCP connections for one file\n"
               "  sesscp send photos/ notes.txt backup-host:7070   # photos' contents and notes.txt, one session\n"
               "  sesscp send disk.img sftp://backup@host/srv/disk.img   # any SSH server (docs/URL.md)\n"
               "  sesscp send disk.img backup-host:7070 --json | jq -c 'select(.event == \"file_done\")'\n"
               "  sesscp send ./logs/ host:7070 --fetch reports/ --fetch-dir ./in   # push, then pull, one session\n"
               "  sesscp send ./logs/ host:7070 --fetch reports/ --duplex full   # push and pull at once\n"
               "Re-running the same command after any interruption resumes it; after success it\n"
               "exits 0 at once. On a terminal a progress line is redrawn in place; otherwise\n"
               "only one summary line per file (none with --quiet) and errors, on stderr.\n\n" +
               std::string(k_exit_codes);
}

CLI::App* add_send_command(CLI::App& app, SendArgs& send_args, CommonFlags& send_flags,
                           sesscp::cli::SftpSendFlags& sftp_flags, sesscp::cli::SshFlags& ssh_flags) {
  auto* send = app.add_subcommand("send", "Send files and directories to a receiver at HOST:PORT, or over SSH to HOST:PATH, in one session, resuming where it stopped");
  send->add_option("sources", send_args.sources,
                   "Files and directories to send (DIR/ sends DIR's contents), then the destination:\n"
                   "  HOST:PORT or sesscp://HOST:PORT   a listening 'sesscp recv' (PORT: digits only)\n"
                   "  [USER@]HOST:PATH or ssh://[USER@]HOST[:PORT]/PATH   over SSH, no daemon: runs\n"
                   "      'sesscp recv --stdio' there; PATH is a directory (HOST: alone = the remote home)\n"
                   "  sftp://[user@]host[:port]/path   one FILE to any SFTP server\n"
                   "With --fetch the sources may be omitted")
      ->required()
      ->expected(1, -1);
  send->add_option("--name", send_args.name, "Name at the receiver of a single file (default: the file's name)");
  send->add_flag("--follow-links", send_args.follow_links,
                 "Send what symlinks inside directories point to (default: send them as links)");
  send->add_option("--chunk-size", send_args.chunk, "Hashing unit, 4K..16M (default 1M)");
  send->add_option("--window", send_args.window, "Unconfirmed bytes in flight; bounds what a resume re-sends (default 60M)");
  send->add_option("--bwlimit", send_args.bwlimit, "Limit the rate to RATE bytes/s, e.g. 50M (default: none; all streams together)");
  send->add_option("--streams", send_args.streams,
                   "Use N TCP connections (1..64, default 1); each carries different chunks of files\n"
                   "larger than one chunk, all checkpointed in the one journal (for links where one\n"
                   "TCP connection is limited, e.g. per-connection shaping or long fat pipes)")
      ->type_name("N");
  send->add_option("--retry", send_args.retry,
                   "After a network failure, reconnect and resume up to N times (backoff 1s, 2s, 4s... max 60s, with jitter)")
      ->check(CLI::Range(0, 1000000));
  send->add_option("--retry-for", send_args.retry_for,
                   "Keep reconnecting for up to DURATION (e.g. 90s, 15m, 2h, 1d); with --retry, both limits apply");
  send->add_option("--fetch", send_args.fetch,
                   "Fetch PATH from the receiver's --serve directory in the same session: after sending\n"
                   "(half-duplex: the data token passes to the receiver, then back), or while sending\n"
                   "with --duplex full; PATH/ fetches a directory's contents; repeat for more paths")
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  send->add_option("--fetch-dir", send_args.fetch_dir, "Where fetched files land (default: the current directory)");
  send->add_option("--duplex", send_args.duplex,
                   "With --fetch: 'half' (default) sends, then fetches, taking turns with the data token;\n"
                   "'full' sends and fetches at once over the one connection")
      ->check(CLI::IsMember({"half", "full"}));
  send->add_flag("--checksum", send_args.checksum,
                 "On resume, re-hash the source's chunks that the receiver confirmed before (overlapped\n"
                 "with sending the rest) and send again any that differ: catches a source changed in\n"
                 "place without a new size or mtime, which the default quick check can miss");
  add_verify_resume(send, send_args.verify_resume, "what --fetch receives");
  add_common(send, send_flags);
  sesscp::cli::add_sftp_send_options(send, sftp_flags);
  sesscp::cli::add_ssh_options(send, ssh_flags);
  send->footer(send_footer());
  return send;
}

CLI::App* add_recv_command(CLI::App& app, RecvArgs& recv_args, CommonFlags& recv_flags) {
  auto* recv = app.add_subcommand("recv", "Receive files into --dir");
  recv->add_option("--listen", recv_args.listen, "Address to listen on, HOST:PORT (port 0 picks a free one); required\n"
                                                "unless --stdio");
  recv->add_option("--dir", recv_args.dir, "Directory to write files into (required, except for --stdio --serve DIR)");
  sesscp::cli::add_stdio_options(recv, recv_args.stdio);
  recv->add_flag("--once", recv_args.once, "Exit after one session, with its exit code");
  recv->add_option("--max-sessions", recv_args.max_sessions, "Concurrent sessions (default 16)")
      ->check(CLI::Range(1, 4096));
  recv->add_option("--max-size", recv_args.max_size, "Largest file accepted, e.g. 100G (default: no limit)");
  recv->add_option("--serve", recv_args.serve,
                   "Export DIR read-only to senders that --fetch from it (half- and full-duplex sessions); paths stay\n"
                   "beneath DIR and symlinks are never followed out of it");
  recv->add_option("--bwlimit", recv_args.bwlimit, "Limit the rate of files sent from --serve, e.g. 50M (default: none)");
  add_verify_resume(recv, recv_args.verify_resume, "a partial file");
  add_common(recv, recv_flags);
  recv->footer("Examples:\n  sesscp recv --listen 0.0.0.0:7070 --dir /data/incoming --key-file /etc/sesscp.key\n"
               "  sesscp recv --listen 127.0.0.1:0 --dir /tmp/in --once\n"
               "  sesscp recv --listen [::]:7070 --dir /in --quiet --log-file /var/log/sesscp.log\n"
               "  sesscp recv --listen 0.0.0.0:7070 --dir /in --serve /srv/reports   # senders may --fetch\n"
               "As a service: docs/examples/sesscp-recv.service. See what is partial: 'sesscp status DIR'.\n\n" +
               std::string(k_exit_codes));
  return recv;
}

struct StatusArgs {
  CommonFlags flags;
  std::string path;
  bool verify = false;
};

CLI::App* add_status_command(CLI::App& app, StatusArgs& a) {
  auto* status = app.add_subcommand("status", "Show what is partial in a destination, and whether it can resume");
  status->add_option("path", a.path, "A destination file, its .sesscp.journal, or a receiver's --dir")->required();
  status->add_flag("--verify", a.verify,
                   "Re-hash every confirmed chunk of each partial file against its journal and list\n"
                   "the damaged or missing ones (without it only the journal is read)");
  add_output_flags(status, a.flags);
  status->footer("Read-only: it never modifies a file or takes the destination's lock, so it is safe\n"
                 "while 'sesscp recv' runs; it says whether a session is writing the file now.\n\n"
                 "Examples:\n  sesscp status /data/incoming                # every partial file there\n"
                 "  sesscp status /data/incoming/disk.img       # one destination\n"
                 "  sesscp status --verify /data/incoming       # re-hash the partial files' data too\n"
                 "  sesscp status /data/incoming/disk.img.sesscp.journal --json\n\n"
                 "Exit codes: 0 report printed (with --verify: no damage), 64 nothing to report at PATH,\n"
                 "65 --verify found damaged or missing chunks, 74 cannot read it.");
  return status;
}

CLI::App* add_keygen_command(CLI::App& app, std::string& keygen_out) {
  auto* keygen = app.add_subcommand("keygen", "Make a shared key for --key-file (prints it without -o)");
  keygen->add_option("-o,--output", keygen_out, "Write the key to this new file, mode 0600");
  keygen->footer("Example:\n  sesscp keygen -o sesscp.key   # then copy sesscp.key to both hosts\n"
                 "  sesscp recv --listen 0.0.0.0:7070 --dir /in --key-file sesscp.key\n"
                 "  sesscp send disk.img host:7070 --key-file sesscp.key");
  return keygen;
}

} // namespace

int main(int argc, char** argv) {
  install_signal_handlers();
  // s3:// targets, status --s3 and s3-abort have their own options (docs/S3.md).
  if (auto code = sesscp::cli::run_s3_command(argc, argv, &g_stop)) return *code;
  CLI::App app{"sesscp: move large files in sessions that resume from verified checkpoints"};
  describe_app(app);

  CommonFlags send_flags, recv_flags;
  SendArgs send_args;
  sesscp::cli::SftpSendFlags sftp_flags;
  sesscp::cli::SshFlags ssh_flags, get_ssh;
  auto* send = add_send_command(app, send_args, send_flags, sftp_flags, ssh_flags);
  RecvArgs recv_args;
  auto* recv = add_recv_command(app, recv_args, recv_flags);
  StatusArgs status_args;
  auto* status = add_status_command(app, status_args);
  sesscp::cli::GetArgs get_args;
  auto* get = sesscp::cli::add_get_command(app, get_args);
  sesscp::cli::add_ssh_options(get, get_ssh);
  std::string keygen_out;
  auto* keygen = add_keygen_command(app, keygen_out);

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return usage_error(e.what(), send->parsed() ? "send" : recv->parsed() ? "recv" : status->parsed() ? "status"
                                                         : get->parsed() ? "get" : keygen->parsed() ? "keygen" : "",
                       argc, argv);
  }
  if (send->parsed()) {
    // The last positional argument is the receiver.
    send_args.target = send_args.sources.back();
    send_args.sources.pop_back();
    return run_send(send_args, send_flags, sftp_flags, ssh_flags);
  }
  if (get->parsed()) {
    get_ssh.ssh_key = get_args.ssh_key;
    get_ssh.known_hosts = get_args.known_hosts;
    if (auto target = sesscp::ssh::parse_target(get_args.url))
      return sesscp::cli::run_get_ssh(get_args, get_ssh, *target, &g_stop);
    return sesscp::cli::run_get(get_args, &g_stop);
  }
  if (keygen->parsed()) return run_keygen(keygen_out);
  if (status->parsed()) {
    sesscp::cli::Output out(output_options(status_args.flags, "status"));
    if (auto log = out.open_log(); !log) return fail(out, log.error());
    return sesscp::cli::run_status(status_args.path, out, status_args.verify);
  }
  return run_recv(recv_args, recv_flags);
}
