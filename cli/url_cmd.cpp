#include "cli/url_cmd.h"

#include "cli/args.h"
#include "core/retry.h"
#include "url/get.h"
#include "url/put.h"

namespace sesscp::cli {

namespace {

// What the user can do about a failed URL transfer.
const char* url_hint(ErrorKind kind) {
  switch (kind) {
  case ErrorKind::auth:
    return "check the server's certificate (--cacert FILE) or SSH host key (--known-hosts FILE), and the "
           "credentials (~/.netrc, SESSCP_URL_PASSWORD, --ssh-key)";
  case ErrorKind::unreachable: return "check the URL and that the server is up";
  case ErrorKind::refused: return "the server refused the request for the reason given";
  case ErrorKind::busy: return "the server is busy or failing; retry later (--retry N, --retry-for DURATION)";
  case ErrorKind::source_changed: return "the remote file changed; re-run to fetch the new version";
  case ErrorKind::protocol: return "the server's answer cannot be used safely; re-run, or report the server";
  default: return nullptr;
  }
}

int fail(Output& out, const Error& e) {
  if (const char* hint = url_hint(e.kind)) out.error(e, hint);
  else out.error(e);
  return exit_code_for(e.kind);
}

// A password typed into the URL shows up in `ps` and shell history.
void warn_inline_password(Output& out, const std::string& url_text) {
  if (url::has_inline_password(url_text))
    out.notice("WARNING: the URL contains a password, which other users can see in process listings; "
               "put it in ~/.netrc or in the SESSCP_URL_PASSWORD environment variable instead");
}

} // namespace

CLI::App* add_get_command(CLI::App& app, GetArgs& a) {
  auto* get = app.add_subcommand("get", "Download URL (http, https, ftp, ftps, sftp) or [USER@]HOST:PATH over SSH, resuming where it stopped");
  get->add_option("url", a.url, "URL to download, or [USER@]HOST:PATH / ssh://[USER@]HOST[:PORT]/PATH (a file or a tree; PATH/ for a directory's contents)")->required();
  get->add_option("-o,--output", a.output, "File to write, or a directory (default: the URL's file name here); over SSH: a directory")->type_name("DEST");
  get->add_option("--connections", a.connections, "Concurrent ranged requests (default 1)")
      ->check(CLI::Range(1, 1024));
  get->add_option("--bwlimit", a.bwlimit, "Limit the rate to RATE bytes/s over all connections, e.g. 50M");
  get->add_option("--sha256", a.sha256, "Expected SHA-256 of the whole file (hex); exit 65 if it differs");
  get->add_option("--xxh128", a.xxh128, "Expected XXH128 of the whole file (hex, as xxhsum -H2 prints)");
  get->add_option("--verify-resume", a.verify_resume,
                  "On a resume, re-read the partial file: full (default) re-hashes every confirmed chunk in the "
                  "background while the rest arrives and fetches damaged ones again; tail re-hashes only the last "
                  "64 MiB before resuming: damage at rest before the last 64 MiB is not detected and is published")
      ->check(CLI::IsMember({"full", "tail"}));
  get->add_option("--retry", a.retry, "Reconnect up to N times after a network failure (default 0)")
      ->check(CLI::Range(0, 1000000));
  get->add_option("--retry-for", a.retry_for, "Keep reconnecting for this long, e.g. 90s, 15m, 2h");
  get->add_option("--timeout", a.timeout_s, "Seconds of server silence that end an attempt (default 30)")
      ->check(CLI::Range(1.0, 86400.0));
  get->add_option("--cacert", a.cacert, "CA bundle (PEM) that the server's certificate must chain to");
  get->add_flag("--insecure", a.insecure, "Do not check the server's TLS certificate or SSH host key");
  get->add_option("--ssh-key", a.ssh_key, "Private key for sftp:// (default ~/.ssh/id_ed25519, id_ecdsa, id_rsa)");
  get->add_option("--known-hosts", a.known_hosts, "known_hosts file for sftp:// (default ~/.ssh/known_hosts)");
  get->add_flag("-q,--quiet", a.quiet, "Print only errors (no progress, no summary)");
  get->add_flag("-v,--verbose", a.verbose, "Print each request");
  get->add_flag("--json", a.json, "Newline-delimited JSON events on stdout (docs/JSON.md); human text on stderr");
  get->add_option("--log-file", a.log_file, "Append timestamped lines, debug included, to this file");
  get->footer("Examples:\n  sesscp get https://example.org/disk.img -o /data/disk.img --sha256 HEX\n"
              "  sesscp get sftp://user@host/srv/disk.img --connections 4\n"
              "  sesscp get backup@host:/srv/photos/ -o ./photos   # over SSH, no daemon (docs/SSH.md)\n"
              "  sesscp get s3://bucket/photos/ -o ./photos   # every object under a prefix (docs/S3.md;\n"
              "                                              # 'sesscp get s3://B/K --help' for its options)\n"
              "Passwords come from ~/.netrc or SESSCP_URL_PASSWORD, never from the command line.\n"
              "Re-running the same command after any interruption resumes it.");
  return get;
}

namespace {

int get_session(const GetArgs& a, const std::atomic<bool>* stop, Output& out) {
  if (auto log = out.open_log(); !log) return fail(out, log.error());
  out.session_start({{"url", url::redact(a.url)}, {"output", a.output}});
  warn_inline_password(out, a.url);
  url::GetOptions o;
  o.url = a.url;
  o.output = a.output;
  o.connections = a.connections;
  o.resume_check = a.verify_resume == "tail" ? checkpoint::ResumeCheck::tail : checkpoint::ResumeCheck::full;
  if (!a.bwlimit.empty()) {
    auto rate = parse_size(a.bwlimit, "--bwlimit");
    if (!rate) return fail(out, rate.error());
    o.bwlimit = *rate;
  }
  o.url_options.cacert = a.cacert;
  o.url_options.insecure = a.insecure;
  o.url_options.ssh_key = a.ssh_key;
  o.url_options.known_hosts = a.known_hosts;
  o.url_options.timeout_s = a.timeout_s;
  o.stop = stop;
  if (!url::looks_like_url(a.url))
    return fail(out, make_error(ErrorKind::usage, "'" + url::redact(a.url) + "' is not an http, https, ftp, ftps or sftp URL"));
  if (!a.sha256.empty()) {
    auto h = url::normalise_hex(a.sha256, 256, "--sha256");
    if (!h) return fail(out, h.error());
    o.sha256 = *h;
  }
  if (!a.xxh128.empty()) {
    auto h = url::normalise_hex(a.xxh128, 128, "--xxh128");
    if (!h) return fail(out, h.error());
    o.xxh128 = *h;
  }
  auto policy = retry_policy(a.retry, a.retry_for);
  if (!policy) return fail(out, policy.error());
  o.retry = *policy;
  if (a.insecure) out.notice("WARNING: --insecure: the server's certificate or host key is not checked");

  FileReport report;
  auto status = url::get_url(o, out, report);
  if (report.state != FileReport::State::failed || status) out.file_report(false, report);
  if (!status) return fail(out, status.error());
  return exit_code::k_ok;
}

} // namespace

OutputOptions get_output_options(const GetArgs& a) {
  OutputOptions options;
  options.quiet = a.quiet;
  options.verbose = a.verbose;
  options.json = a.json;
  options.log_file = a.log_file;
  options.side = "get";
  return options;
}

int run_get(const GetArgs& a, const std::atomic<bool>* stop) {
  Output out(get_output_options(a));
  return out.session_end(get_session(a, stop, out));
}

void add_sftp_send_options(CLI::App* send, SftpSendFlags& f) {
  send->add_option("--ssh-key", f.ssh_key, "sftp:// targets: private key (default ~/.ssh/id_ed25519, id_ecdsa, id_rsa)");
  send->add_option("--known-hosts", f.known_hosts, "sftp:// targets: known_hosts file (default ~/.ssh/known_hosts)");
}

int send_url(const std::string& source, const std::string& url_text, const SftpSendFlags& f, bool insecure,
             double timeout_s, std::uint64_t bwlimit, int retry, const std::string& retry_for, Output& out,
             const std::atomic<bool>* stop) {
  warn_inline_password(out, url_text);
  if (url::scheme_of(url_text) != "sftp")
    return fail(out, make_error(ErrorKind::usage, "send to a URL supports sftp:// only, not '" + url::redact(url_text) + "'"));
  url::PutOptions o;
  o.path = source;
  o.url = url_text;
  o.url_options.insecure = insecure;
  o.url_options.ssh_key = f.ssh_key;
  o.url_options.known_hosts = f.known_hosts;
  o.url_options.timeout_s = timeout_s;
  o.bwlimit = bwlimit;
  o.stop = stop;
  auto policy = retry_policy(retry, retry_for);
  if (!policy) return fail(out, policy.error());
  o.retry = *policy;
  if (insecure) out.notice("WARNING: --insecure: the server's SSH host key is not checked");
  FileReport report;
  auto status = url::put_sftp(o, out, report);
  out.file_report(true, report);
  if (!status) return fail(out, status.error());
  return exit_code::k_ok;
}

} // namespace sesscp::cli
