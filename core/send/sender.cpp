// send_file: the sources read into a plan, then one session after another
// (connect, authenticate, run) until the plan is done or the retries are
// spent, and the summary. The session itself is session.cpp's.
#include "core/send/sender.h"

#include "base/file_io.h"
#include "checkpoint/journal.h"
#include "core/conn.h"
#include "core/send/plan.h"
#include "core/send/session.h"
#include "core/source.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <optional>
#include <string>

namespace sesscp {

std::uint64_t window_chunks(std::uint64_t window, std::uint32_t chunk_size) {
  // The receiver holds at most one journal record's worth of unjournaled chunks.
  return std::clamp<std::uint64_t>(window / chunk_size, 1, checkpoint::k_max_record_hashes);
}

std::uint64_t sync_interval_chunks(std::uint64_t window, std::uint32_t chunk_size) {
  return std::max<std::uint64_t>(1, window_chunks(window, chunk_size) / 4);
}

namespace {

using send::Clock;
using send::Plan;

// Check the fetch directory before touching the network.
Status check_fetch_dir(const SendOptions& options) {
  if (options.fetch.empty()) return {};
  struct stat st{};
  if (stat(options.fetch_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return make_error(ErrorKind::usage, "--fetch-dir " + options.fetch_dir + " is not a directory");
  if (access(options.fetch_dir.c_str(), W_OK) != 0)
    return errno_error(ErrorKind::cannot_create, "cannot write to --fetch-dir " + options.fetch_dir, errno);
  return {};
}

// Load keys or certificates before touching the network: a bad key file is a usage error.
Status load_tls(const SendOptions& options, std::optional<tls::Context>& tls) {
  if (options.tls.insecure || options.transport) return {};
  auto ctx = tls::Context::create(options.tls, false);
  if (!ctx) return ctx.error();
  tls.emplace(std::move(*ctx));
  return {};
}

// Connect and authenticate one connection of a session.
Result<std::unique_ptr<Conn>> open_conn(const SendOptions& options, const tls::Context* tls, Events& events,
                                        Transport::Role role) {
  if (options.transport) return options.transport->open(role, events);
  auto fd = net::connect_tcp(options.endpoint, options.timeout_ms);
  if (!fd) return fd.error();
  auto conn = std::make_unique<Conn>(std::move(*fd), options.stop, options.timeout_ms);
  if (tls) {
    // Authenticate both ends before a single frame of the session is sent.
    auto ssl = tls->wrap(conn->fd(), options.endpoint.host);
    if (!ssl) return ssl.error();
    SESSCP_TRY(conn->start_tls(std::move(*ssl), false));
    if (auto peer = tls->check_peer(conn->ssl()); !peer) {
      conn->send_abort(frame::Reason::auth, "the sender does not trust the receiver's certificate");
      return peer.error();
    }
    events.debug(tls->describe() + (tls::ktls_send_active(conn->ssl()) ? ", kernel TLS offload" : ", TLS in user space"));
  }
  return conn;
}

// Connect, authenticate, and run one session over what is left of the plan.
Status connect_and_send(const SendOptions& options, const tls::Context* tls, Events& events, Plan& plan) {
  events.phase(plan.files() == 1 ? plan.entries[0].report.name : "", Events::Phase::connecting,
               options.transport ? options.transport->describe()
                                 : options.endpoint.host + ":" + std::to_string(options.endpoint.port));
  Status status;
  {
    auto first = open_conn(options, tls, events, Transport::Role::session);
    if (!first) return first.error();
    Conn& conn = **first;
    send::Session session(options, events, plan);
    status = session.run(conn, [&]() { return open_conn(options, tls, events, Transport::Role::stream); });
    if (!status && status.error().kind == ErrorKind::interrupted)
      conn.send_abort(frame::Reason::interrupted, "sender interrupted");
    else if (!status && status.error().kind == ErrorKind::source_changed)
      conn.send_abort(frame::Reason::source_changed, status.error().message);
  }
  // The connection is closed: a transport's process (ssh) can now end and say why.
  if (!status && options.transport) return options.transport->explain(status.error(), events);
  return status;
}

// Sessions until the plan is done, a failure no retry can fix, or the
// retries are spent. `name` is the single file's, for the retry lines.
Status attempt_sessions(const SendOptions& options, const tls::Context* tls, Events& events, Plan& plan,
                        const std::string& name) {
  Backoff backoff(options.retry);
  Status status;
  for (int attempt = 1;; ++attempt) {
    status = connect_and_send(options, tls, events, plan);
    if (status || !options.retry.enabled() || !retryable(status.error().kind)) break;
    // A signal here asked us to stop: that is not a failure to retry.
    if (options.stop && options.stop->load()) break;
    double elapsed = std::chrono::duration<double>(Clock::now() - plan.start).count();
    if (auto waited = wait_to_retry(backoff, attempt, elapsed, options.retry.retries, status.error(), events, name,
                                    options.stop);
        !waited) {
      status = waited;
      break;
    }
    ++plan.reconnects;
  }
  return status;
}

// What a send names: one file (its report is the send's, and it gets a
// summary line even if it was never offered), or anything else.
enum class Shape { one_file, several };

// What the files of a send came to, and the summary lines.
struct Totals {
  std::size_t files = 0, complete = 0, already = 0;
  std::uint64_t size = 0, bytes = 0;
};

// A summary line for every file left unfinished that got as far as an offer
// (a single file's always); the totals of every file.
Totals report_files(Plan& plan, FileReport::State left_state, Shape shape, double seconds, Events& events) {
  Totals t;
  for (auto& entry : plan.entries) {
    if (entry.source.kind != SourceEntry::Kind::file) continue;
    auto& r = entry.report;
    ++t.files;
    if (entry.done) {
      t.complete += r.state == FileReport::State::complete;
      t.already += r.state == FileReport::State::already_complete;
    } else if (entry.offered || shape == Shape::one_file) {
      r.state = left_state;
      r.reconnects = plan.reconnects;
      r.seconds = seconds;
      events.file_report(true, r);
    }
    t.size += r.size;
    t.bytes += r.bytes;
  }
  return t;
}

// Several sources: the report is the totals, and the session's line.
void summarise(const SendOptions& options, const Plan& plan, const Totals& t, double seconds, FileReport& report,
               Events& events) {
  report.name = std::to_string(t.files) + " files";
  report.seconds = seconds;
  report.reconnects = plan.reconnects;
  // (A fetch-only session has nothing of its own to sum up.)
  if (t.files > 0 || options.fetch.empty())
    events.info("session: " + std::to_string(t.files) + " files (" + std::to_string(t.complete) + " sent, " +
                std::to_string(t.already) + " already complete), " + std::to_string(report.bytes) + " bytes sent in " +
                std::to_string(seconds).substr(0, std::to_string(seconds).find('.') + 3) + " s");
}

void summarise_fetch(const SendOptions& options, const Plan& plan, Events& events) {
  if (options.fetch.empty()) return;
  events.info(std::string("fetch: ") + (plan.fetched ? "done" : "not finished") + ", " +
              std::to_string(plan.fetched_files) + " files received, " + std::to_string(plan.fetched_already) +
              " already complete, " + std::to_string(plan.fetched_bytes) + " bytes received into " +
              options.fetch_dir);
}

} // namespace

Status send_file(const SendOptions& options, Events& events, FileReport& report) {
  report = FileReport{};
  report.name = options.name.empty() ? basename_of(options.path) : options.name;
  SESSCP_TRY(check_fetch_dir(options));
  // Read the sources first: a missing file is a usage error, not a network one.
  auto plan = send::make_plan(options, events);
  if (!plan) return plan.error();
  auto& entries = plan->entries;
  const auto shape =
      entries.size() == 1 && entries[0].source.kind == SourceEntry::Kind::file ? Shape::one_file : Shape::several;
  if (shape == Shape::one_file) {
    // Open it now, as a single-file send always did: an unreadable file is a usage error.
    auto source = SourceFile::open(entries[0].source.path);
    if (!source) return source.error();
    entries[0].report.size = source->size();
  }
  std::optional<tls::Context> tls;
  SESSCP_TRY(load_tls(options, tls));
  auto status = attempt_sessions(options, tls ? &*tls : nullptr, events, *plan,
                                 shape == Shape::one_file ? entries[0].report.name : "");
  double seconds = std::chrono::duration<double>(Clock::now() - plan->start).count();
  auto left_state = !status && exit_code_for(status.error().kind) == exit_code::k_temp_fail
                        ? FileReport::State::interrupted
                        : FileReport::State::failed;
  auto totals = report_files(*plan, left_state, shape, seconds, events);
  report.size += totals.size;
  report.bytes += totals.bytes;
  if (shape == Shape::one_file) {
    report = entries[0].report;
  } else {
    report.state = status ? FileReport::State::complete : left_state;
    summarise(options, *plan, totals, seconds, report, events);
  }
  summarise_fetch(options, *plan, events);
  return status;
}

} // namespace sesscp
