#include "cli/s3_cmd.h"

#include "cli/args.h"
#include "cli/output.h"
#include "s3/get.h"
#include "s3/manage.h"
#include "s3/tree.h"
#include "s3/upload.h"
#include "s3/upload_journal.h"

#include <CLI/CLI.hpp>

#include <cstring>
#include <ctime>
#include <string>
#include <vector>

namespace sesscp::cli {

namespace {

struct S3Args {
  std::vector<std::string> positional;
  s3::ConfigFlags config;
  std::string part_size, state_dir, output, log_file, bwlimit, verify_resume = "full";
  int connections = 4, list_page = 1000;
  bool all = false, quiet = false, verbose = false, json = false, s3_flag = false;
};

void add_config_flags(CLI::App& app, S3Args& a) {
  app.add_option("--endpoint", a.config.endpoint, "S3 endpoint URL, e.g. http://127.0.0.1:7480 (env AWS_ENDPOINT_URL)");
  app.add_option("--region", a.config.region, "Signing region (env AWS_REGION; default us-east-1)");
  app.add_option("--profile", a.config.profile, "Profile of ~/.aws/credentials and ~/.aws/config (env AWS_PROFILE)");
  app.add_flag("--path-style", a.config.path_style, "Address buckets by path (automatic with a custom endpoint)");
  app.add_option("--cacert", a.config.cacert, "CA bundle (PEM) the endpoint's certificate must chain to");
  app.add_option("--timeout", a.config.timeout_s, "Seconds of server silence that end a request (default 30)")
      ->check(CLI::Range(1.0, 86400.0));
  app.add_option("--state-dir", a.state_dir, "Where upload journals live (default $XDG_STATE_HOME/sesscp)");
  app.add_flag("-q,--quiet", a.quiet, "Print only errors");
  app.add_flag("-v,--verbose", a.verbose, "Print each request (PUT part N, GET bytes A-B)");
  app.add_flag("--json", a.json, "Newline-delimited JSON events on stdout (docs/JSON.md)");
  app.add_option("--log-file", a.log_file, "Append timestamped lines, debug included, to this file");
}

Output make_output(const S3Args& a, const char* side) {
  OutputOptions o;
  o.quiet = a.quiet;
  o.verbose = a.verbose;
  o.json = a.json;
  o.log_file = a.log_file;
  o.side = side;
  return Output(o);
}

int fail(Output& out, const Error& e) {
  const char* hint = nullptr;
  switch (e.kind) {
  case ErrorKind::auth: hint = "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the profile) and the bucket's permissions"; break;
  case ErrorKind::refused: hint = "check the bucket and key (and --endpoint, --region)"; break;
  case ErrorKind::busy: hint = "the server is throttling or failing; re-run later, it resumes"; break;
  case ErrorKind::interrupted: hint = "re-run the same command to resume"; break;
  default: break;
  }
  if (hint) out.error(e, hint);
  else out.error(e);
  return exit_code_for(e.kind);
}

std::string state_dir(const S3Args& a) { return a.state_dir.empty() ? s3::default_state_dir() : a.state_dir; }

int send_all(const S3Args& a, s3::Client& client, Output& out, const std::atomic<bool>* stop) {
  std::vector<std::string> sources(a.positional.begin(), a.positional.end() - 1);
  auto dest = s3::parse_s3_url(a.positional.back());
  if (!dest) return fail(out, dest.error());
  std::vector<std::string> skipped;
  auto plan = s3::plan_tree(sources, *dest, skipped);
  if (!plan) return fail(out, plan.error());
  for (const auto& s : skipped) out.notice("WARNING: skipping " + s + " (not a regular file)");
  s3::UploadOptions o;
  o.state_dir = state_dir(a);
  o.connections = a.connections;
  o.stop = stop;
  if (!a.part_size.empty()) {
    auto size = parse_size(a.part_size, "--part-size");
    if (!size) return fail(out, size.error());
    o.part_size = *size;
  }
  o.dest = *dest;
  auto st = s3::upload_tree(client, *plan, o, [&](const FileReport& report, const Status&) { out.file_report(true, report); });
  if (!st) return fail(out, st.error());
  return exit_code::k_ok;
}

// `get s3://B/PREFIX/`: every object, each reported; the first failure's
// code at the end (the others still go on unless it stops everything).
int get_tree(const S3Args& a, s3::Client& client, const s3::Location& where, const url::GetOptions& o, Output& out) {
  std::string dir = a.output.empty() ? s3::default_tree_dir(where) : a.output;
  auto tree = s3::get_tree(
      client, where, dir, o,
      [&](const FileReport& report, const Status& st) {
        if (report.state != FileReport::State::failed || st) out.file_report(false, report);
        // An error that stops the tree is reported once, at the end.
        if (!st && !s3::stops_tree(st.error().kind)) fail(out, st.error());
      },
      a.list_page);
  if (!tree) return fail(out, tree.error());
  if (!tree->first) return exit_code::k_ok;
  auto first = *tree->first;
  first.message = std::to_string(tree->objects - tree->done) + " of " + std::to_string(tree->objects) +
                  " objects under s3://" + where.bucket + "/" + where.key + " not downloaded (" +
                  std::to_string(tree->failed) + " failed); the first failure: " + first.message;
  return fail(out, first);
}

int get_one(const S3Args& a, s3::Client& client, Output& out, const std::atomic<bool>* stop) {
  auto what = s3::parse_s3_url(a.positional.front());
  if (!what) return fail(out, what.error());
  url::GetOptions o;
  o.output = a.output;
  o.connections = a.connections;
  o.resume_check = a.verify_resume == "tail" ? checkpoint::ResumeCheck::tail : checkpoint::ResumeCheck::full;
  o.stop = stop;
  if (!a.bwlimit.empty()) {
    auto rate = parse_size(a.bwlimit, "--bwlimit");
    if (!rate) return fail(out, rate.error());
    o.bwlimit = *rate;
  }
  if (what->key.empty() || what->key.back() == '/') return get_tree(a, client, *what, o, out);
  FileReport report;
  auto st = s3::get_object(client.config(), *what, o, out, report);
  if (report.state != FileReport::State::failed || st) out.file_report(false, report);
  if (!st) return fail(out, st.error());
  return exit_code::k_ok;
}

// Age of an upload from its ISO 8601 Initiated time, e.g. "3h12m".
std::string age_of(const std::string& initiated) {
  std::tm tm{};
  if (!strptime(initiated.c_str(), "%Y-%m-%dT%H:%M:%S", &tm)) return "?";
  auto s = static_cast<long long>(std::difftime(std::time(nullptr), timegm(&tm)));
  if (s < 0) s = 0;
  return s >= 86400 ? std::to_string(s / 86400) + "d" + std::to_string(s % 86400 / 3600) + "h"
                    : std::to_string(s / 3600) + "h" + std::to_string(s % 3600 / 60) + "m" + std::to_string(s % 60) + "s";
}

// `status --s3` lists; `s3-abort` aborts ours (or every one with --all).
int pending(const S3Args& a, s3::Client& client, Output& out, bool abort) {
  auto where = s3::parse_s3_url(a.positional.front());
  if (!where) return fail(out, where.error());
  auto list = s3::list_uploads(client, *where, state_dir(a));
  if (!list) return fail(out, list.error());
  int shown = 0;
  for (const auto& u : *list) {
    bool ours = !u.journal.empty();
    if (abort && !ours && !a.all) continue;
    if (abort) {
      if (auto st = s3::abort_pending(client, where->bucket, u); !st) return fail(out, st.error());
    }
    std::string line = std::string(abort ? "aborted " : "incomplete ") + "s3://" + where->bucket + "/" + u.key +
                       "  upload " + u.upload_id + "  age " + age_of(u.initiated) +
                       (ours ? "  (sesscp, resumable)" : "  (not started by sesscp here)");
    if (out.json())
      out.event(abort ? "s3_aborted" : "s3_incomplete",
                {{"key", u.key}, {"upload_id", u.upload_id}, {"initiated", u.initiated}, {"sesscp", ours}});
    else
      std::fprintf(stdout, "%s\n", line.c_str());
    ++shown;
  }
  if (!out.json() && shown == 0) std::fprintf(stdout, "no incomplete multipart uploads%s under s3://%s/%s\n",
                                               abort && !a.all ? " started by sesscp" : "", where->bucket.c_str(),
                                               where->key.c_str());
  return exit_code::k_ok;
}

int dispatch(const std::string& cmd, const S3Args& a, Output& out, const std::atomic<bool>* stop) {
  if (auto log = out.open_log(); !log) return fail(out, log.error());
  auto config = s3::load_config(a.config);
  if (!config) return fail(out, config.error());
  out.session_start({{"command", cmd}, {"target", a.positional.back()}, {"endpoint", config->endpoint}});
  s3::Client client(*config, out);
  if (cmd == "send") return send_all(a, client, out, stop);
  if (cmd == "get") return get_one(a, client, out, stop);
  return pending(a, client, out, cmd == "s3-abort");
}

// Which S3 command argv is, "" for none.
std::string s3_command(int argc, char** argv) {
  if (argc < 2) return {};
  std::string cmd = argv[1];
  if (cmd == "s3-abort") return cmd;
  for (int i = 2; i < argc; ++i) {
    if (cmd == "status" && std::strcmp(argv[i], "--s3") == 0) return cmd;
    if ((cmd == "send" || cmd == "get") && std::strncmp(argv[i], "s3://", 5) == 0) return cmd;
  }
  return {};
}

void add_command_options(CLI::App& app, const std::string& cmd, S3Args& a) {
  add_config_flags(app, a);
  app.add_option("args", a.positional, cmd == "send"  ? "FILE|DIR... s3://BUCKET/KEY (or PREFIX/)"
                                         : "s3://BUCKET/KEY, or s3://BUCKET/[PREFIX/] for every object under it")
      ->required()
      ->expected(1, cmd == "send" ? -1 : 1);
  if (cmd == "send" || cmd == "get")
    app.add_option("--connections", a.connections, "Concurrent requests: parts, ranges, or a tree's small objects (default 4)")->check(CLI::Range(1, 256));
  if (cmd == "send") app.add_option("--part-size", a.part_size, "Part size, a multiple of 1 MiB from 5M (default 8M or what fits 10000 parts)");
  if (cmd == "get") {
    app.add_option("-o,--output", a.output, "File to write, or a directory; for s3://B/PREFIX/ the directory to "
                                            "fill, created if missing (default: the key's or prefix's last name here)");
    app.add_option("--list-page", a.list_page, "Keys per ListObjectsV2 page for a PREFIX/ (default 1000)")
        ->check(CLI::Range(1, 1000));
    app.add_option("--bwlimit", a.bwlimit, "Limit the rate to RATE bytes/s over all connections, e.g. 50M");
    app.add_option("--verify-resume", a.verify_resume, "full (default) or tail, as for get URL")->check(CLI::IsMember({"full", "tail"}));
  }
  if (cmd == "get")
    app.footer("Examples:\n  sesscp get s3://bkt/images/disk.img -o disk.img --connections 8\n"
               "  sesscp get s3://bkt/photos/2024/ -o ./2024   # every object under the prefix; the whole bucket: s3://bkt/\n"
               "A PREFIX/ goes into -o DIR (created; default: the prefix's last name, or the bucket's, here), each\n"
               "key at DIR/<key minus the prefix>, a key ending in '/' as a directory. Keys that would leave DIR\n"
               "(absolute, '.', '..', empty components, control characters) are refused (exit 69) and the others\n"
               "still fetched; a failed object does not stop the rest (an interruption, an auth failure or a local\n"
               "I/O error does), and the exit code is the first failure's.\n"
               "No objects under the prefix: exit 69. Re-running resumes: complete files are skipped (one HEAD\n"
               "each), a partial one continues from its journal.");
  if (cmd == "status") app.add_flag("--s3", a.s3_flag, "List the incomplete multipart uploads under s3://BUCKET/[PREFIX]");
  if (cmd == "s3-abort") app.add_flag("--all", a.all, "Abort every incomplete upload there, not only those sesscp started here");
}

} // namespace

std::optional<int> run_s3_command(int argc, char** argv, const std::atomic<bool>* stop) {
  std::string cmd = s3_command(argc, argv);
  if (cmd.empty()) return std::nullopt;
  CLI::App app{"sesscp " + cmd + " (S3; docs/S3.md)", std::string("sesscp ") + cmd};
  S3Args a;
  add_command_options(app, cmd, a);
  try {
    app.parse(argc - 1, argv + 1);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : exit_code::k_usage;
  }
  if (cmd == "send" && a.positional.size() < 2) {
    std::fprintf(stderr, "sesscp: error: send to S3 needs FILE|DIR... then s3://BUCKET/KEY\n");
    return exit_code::k_usage;
  }
  Output out = make_output(a, cmd == "get" ? "get" : "send");
  return out.session_end(dispatch(cmd, a, out, stop));
}

} // namespace sesscp::cli
