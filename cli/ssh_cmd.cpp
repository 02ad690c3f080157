#include "cli/ssh_cmd.h"

#include "cli/args.h"
#include "core/dialog/dialog.h"
#include "ssh/stdio.h"
#include "ssh/transport.h"

#include <sys/stat.h>

#include <cerrno>

namespace sesscp::cli {

namespace {

const char* ssh_hint(ErrorKind kind) {
  switch (kind) {
  case ErrorKind::auth: return "ssh refused: fix the key or known_hosts as ssh says (-e 'ssh -i KEY -o UserKnownHostsFile=FILE')";
  case ErrorKind::unreachable: return "check the host name and that sshd runs there; --retry N or --retry-for DURATION reconnects";
  case ErrorKind::refused: return "see the reason given: -e names the local ssh, --remote-sesscp PATH the remote sesscp";
  case ErrorKind::version: return "install the same sesscp version on both hosts, or name it with --remote-sesscp PATH";
  case ErrorKind::cannot_create: return "the remote directory must exist and be writable by the SSH user";
  case ErrorKind::protocol: return "make the remote login print nothing to stdout for a command, or check both versions";
  default: return nullptr;
  }
}

int fail(Output& out, const Error& e) { return fail_over_ssh(out, e); }

Result<ssh::Options> base_options(const ssh::Target& target, const SshFlags& f, int timeout_ms, bool verbose,
                                  const std::atomic<bool>* stop) {
  auto rsh = ssh::split_command(f.rsh);
  if (!rsh) return rsh.error();
  if (!f.ssh_key.empty()) rsh->insert(rsh->end(), {"-i", f.ssh_key});
  if (!f.known_hosts.empty()) rsh->insert(rsh->end(), {"-o", "UserKnownHostsFile=" + f.known_hosts});
  if (f.remote_sesscp.empty()) return make_error(ErrorKind::usage, "--remote-sesscp is empty");
  ssh::Options o;
  o.target = target;
  o.rsh = std::move(*rsh);
  o.remote_sesscp = f.remote_sesscp;
  o.timeout_ms = timeout_ms;
  o.verbose = verbose;
  o.stop = stop;
  return o;
}

// The remote PATH of a pull, split into the directory the remote sesscp
// serves and the name fetched from it.
Result<std::pair<std::string, std::string>> split_remote(const ssh::Target& t) {
  std::string path = t.path;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  auto slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  if (name.empty() || name == "." || name == "..")
    return make_error(ErrorKind::usage, "'" + t.display() + "' names no file or directory to get (give HOST:PATH/NAME)");
  return std::pair{dir, name};
}

} // namespace

int fail_over_ssh(Output& out, const Error& e) {
  if (const char* hint = ssh_hint(e.kind)) out.error(e, hint);
  else out.error(e);
  return exit_code_for(e.kind);
}

void add_ssh_options(CLI::App* cmd, SshFlags& f) {
  cmd->add_option("-e,--rsh", f.rsh,
                  "For [USER@]HOST:PATH and ssh:// targets: the ssh command, e.g. 'ssh -p 2222 -i KEY'\n"
                  "(default 'ssh'; env SESSCP_RSH)")
      ->envname("SESSCP_RSH");
  cmd->add_option("--remote-sesscp", f.remote_sesscp,
                  "The sesscp to run on the SSH host (default 'sesscp', found in its PATH; run by its shell)");
}

Result<std::shared_ptr<Transport>> ssh_push_transport(const ssh::Target& target, const SshFlags& flags,
                                                      const SendOptions& options, bool verbose) {
  auto o = base_options(target, flags, options.timeout_ms, verbose, options.stop);
  if (!o) return o.error();
  o->mode = ssh::Options::Mode::push;
  o->streams = options.streams;
  return ssh::make_transport(*o);
}

// -o DEST of a pull: an existing directory, or one to create when asked for with a trailing '/'.
Status prepare_dest(const std::string& dest, bool contents) {
  struct stat st{};
  if (stat(dest.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return {};
    return make_error(ErrorKind::usage, "-o " + dest + " is not a directory (over SSH, -o names the directory files land in)");
  }
  if (!contents && dest.back() != '/')
    return make_error(ErrorKind::usage, "-o " + dest + " does not exist (over SSH, -o names a directory: write " + dest +
                                            "/ to create it)");
  if (mkdir(dest.c_str(), 0777) != 0) return errno_error(ErrorKind::cannot_create, "cannot create " + dest, errno);
  return {};
}

int get_over_ssh(const GetArgs& a, const SshFlags& flags, const ssh::Target& target, const std::atomic<bool>* stop,
                 Output& out) {
  if (a.connections != 1 || !a.sha256.empty() || !a.xxh128.empty() || !a.cacert.empty() || a.insecure)
    return fail(out, make_error(ErrorKind::usage, "--connections, --sha256, --xxh128, --cacert and --insecure are for URLs; "
                                                  "over SSH every chunk is verified against the source's hashes"));
  auto names = split_remote(target);
  if (!names) return fail(out, names.error());
  SendOptions o;
  o.fetch.push_back({names->second, target.trailing_slash});
  if (auto why = frame::check_path(names->second); !why.empty())
    return fail(out, make_error(ErrorKind::usage, "bad remote name '" + names->second + "' (" + why + ")"));
  o.fetch_dir = a.output.empty() ? "." : a.output;
  if (auto st = prepare_dest(o.fetch_dir, target.trailing_slash); !st) return fail(out, st.error());
  o.dialog = Dialog::half_duplex;
  o.verify_resume = a.verify_resume == "tail" ? checkpoint::ResumeCheck::tail : checkpoint::ResumeCheck::full;
  o.timeout_ms = static_cast<int>(a.timeout_s * 1000);
  o.stop = stop;
  auto policy = retry_policy(a.retry, a.retry_for);
  if (!policy) return fail(out, policy.error());
  o.retry = *policy;
  ssh::Target served = target;
  served.path = names->first;
  auto so = base_options(served, flags, o.timeout_ms, a.verbose, stop);
  if (!so) return fail(out, so.error());
  so->mode = ssh::Options::Mode::pull;
  if (!a.bwlimit.empty()) {
    auto rate = parse_size(a.bwlimit, "--bwlimit");
    if (!rate) return fail(out, rate.error());
    so->serve_bwlimit = *rate;
  }
  o.transport = ssh::make_transport(*so);
  dialog::wire(o);
  FileReport report;
  auto status = send_file(o, out, report);
  if (!status) return fail(out, status.error());
  return exit_code::k_ok;
}

int run_get_ssh(const GetArgs& a, const SshFlags& flags, const Result<ssh::Target>& target,
                const std::atomic<bool>* stop) {
  Output out(get_output_options(a));
  auto run = [&]() {
    if (auto log = out.open_log(); !log) return fail(out, log.error());
    out.session_start({{"url", a.url}, {"output", a.output}});
    if (!target) return fail(out, target.error());
    return get_over_ssh(a, flags, target.value(), stop, out);
  };
  return out.session_end(run());
}

void add_stdio_options(CLI::App* recv, StdioFlags& f) {
  recv->add_flag("--stdio", f.stdio,
                 "Serve one session over stdin/stdout, as 'sesscp send HOST:PATH' starts it through ssh\n"
                 "(no --listen, no TLS: SSH authenticates and encrypts)");
  recv->add_option("--stdio-id", f.stream_id, "With --stdio: let extra streams join this session at ID (--streams)")
      ->group("");
  recv->add_option("--stdio-join", f.join_id, "Carry one extra stream of the --stdio session ID over stdin/stdout")
      ->group("");
}

int run_recv_stdio(ReceiveOptions& o, const StdioFlags& f, Output& out) {
  if (!f.join_id.empty()) {
    if (!ssh::valid_stream_id(f.join_id))
      return fail(out, make_error(ErrorKind::usage, "bad --stdio-join ID '" + f.join_id + "'"));
    auto st = ssh::join_stream(f.join_id);
    if (!st) return fail(out, st.error());
    return exit_code::k_ok;
  }
  if (o.dir.empty() && o.serve_dir.empty())
    return fail(out, make_error(ErrorKind::usage, "recv --stdio needs --dir DIR (to receive) or --serve DIR (to be fetched from)"));
  o.stdio = true;
  o.once = true;
  o.tls.insecure = true;
  Fd streams;
  if (!f.stream_id.empty()) {
    if (!ssh::valid_stream_id(f.stream_id))
      return fail(out, make_error(ErrorKind::usage, "bad --stdio-id ID '" + f.stream_id + "'"));
    auto l = ssh::listen_stream_socket(f.stream_id);
    if (!l) return fail(out, l.error());
    streams = std::move(*l);
    o.stream_listener = streams.get();
  }
  dialog::wire(o);
  auto receiver = Receiver::create(o, out);
  if (!receiver) {
    if (streams) ssh::unlink_stream_socket(f.stream_id);
    return fail(out, receiver.error());
  }
  auto bridge = ssh::StdioBridge::start();
  if (!bridge) return fail(out, bridge.error());
  auto status = receiver->serve((*bridge)->take_session_socket());
  (*bridge)->finish();
  if (streams) ssh::unlink_stream_socket(f.stream_id);
  if (!status) return fail(out, status.error());
  return exit_code::k_ok;
}

} // namespace sesscp::cli
