// The --serve side's sending turn: the fetched paths opened beneath the export, then sent as send_file sends.
#include "core/send/plan.h"
#include "core/send/sender.h"
#include "core/send/session.h"

#include "base/fd.h"
#include "core/conn.h"
#include "core/source.h"

#include <fcntl.h>

#include <cerrno>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace sesscp {

namespace {

using send::Clock;
using send::Plan;

// Open `path` beneath the export: no component may be a symlink, and
// nothing outside the directory is reachable (openat2 RESOLVE_BENEATH).
Result<Fd> open_in_export(int serve_fd, const std::string& path) {
  int fd = openat2_beneath(serve_fd, path.c_str(), O_PATH);
  if (fd < 0) {
    int err = errno;
    if (err == ELOOP || err == EXDEV)
      return make_error(ErrorKind::refused, path + ": a symbolic link on the way (links are not followed out of the export)");
    if (err == ENOENT || err == ENOTDIR) return make_error(ErrorKind::refused, path + ": no such file in the export");
    return errno_error(ErrorKind::refused, path + ": cannot open it in the export", err);
  }
  return Fd(fd);
}

// Where a file entry is opened again: beneath its pinned directory.
struct Beneath {
  int fd = -1;
  std::string rel;
};

// The entries of one fetch path, read through `pinned` (its descriptor, as
// /proc/self/fd/N): renamed from the descriptor to the path's last component.
Status add_entries(const frame::FetchPath& f, const std::string& pinned, int pin_fd, std::set<std::string>& names,
                   std::vector<SourceEntry>& all, std::vector<Beneath>& beneath, Events& events) {
  std::vector<std::string> warnings;
  auto entries = collect_sources({pinned + (f.contents ? "/" : "")}, false, warnings);
  if (!entries) return make_error(ErrorKind::refused, "fetch path '" + f.path + "': " + entries.error().message);
  for (const auto& w : warnings) events.info("warning: " + w);
  // Named by the path's last component, not by the descriptor.
  auto slash = f.path.find_last_of('/');
  std::string base = slash == std::string::npos ? f.path : f.path.substr(slash + 1);
  std::string fd_name = pinned.substr(pinned.find_last_of('/') + 1);
  for (auto& e : *entries) {
    if (!f.contents) e.name = base + e.name.substr(fd_name.size());
    if (!names.insert(e.name).second)
      return make_error(ErrorKind::refused, "two fetch paths land on the same name '" + e.name + "'");
    if (e.kind == SourceEntry::Kind::file && e.path.size() > pinned.size() + 1 &&
        e.path.compare(0, pinned.size() + 1, pinned + "/") == 0)
      beneath.push_back({pin_fd, e.path.substr(pinned.size() + 1)});
    else
      beneath.push_back({-1, ""});
    all.push_back(std::move(e));
  }
  return {};
}

// Half-duplex turn: the entries the fetch request names, read through
// descriptors opened beneath the export (held in `pins` while they are
// sent). A file inside a fetched directory is opened again beneath its
// pinned directory (`beneath`), never through a symlink a local user might
// have put there since the walk.
Result<std::vector<SourceEntry>> fetch_entries(int serve_fd, const std::vector<frame::FetchPath>& fetch,
                                               std::vector<Fd>& pins, std::vector<Beneath>& beneath, Events& events) {
  std::vector<SourceEntry> all;
  std::set<std::string> names;
  for (const auto& f : fetch) {
    if (auto why = frame::check_path(f.path); !why.empty())
      return make_error(ErrorKind::refused, "fetch path '" + f.path + "' refused: " + why);
    auto fd = open_in_export(serve_fd, f.path);
    if (!fd) return make_error(ErrorKind::refused, "fetch path refused: " + fd.error().message);
    std::string pinned = "/proc/self/fd/" + std::to_string(fd->get());
    pins.push_back(std::move(*fd));
    SESSCP_TRY(add_entries(f, pinned, pins.back().get(), names, all, beneath, events));
  }
  return all;
}

// Files the turn offered but could not finish get their summary line.
void report_unfinished(Plan& plan, const Status& status, Events& events) {
  if (status) return;
  for (auto& entry : plan.entries) {
    if (entry.done || !entry.offered) continue;
    entry.report.seconds = std::chrono::duration<double>(Clock::now() - entry.first_offer).count();
    entry.report.state = exit_code_for(status.error().kind) == exit_code::k_temp_fail ? FileReport::State::interrupted
                                                                                      : FileReport::State::failed;
    events.file_report(true, entry.report);
  }
}

} // namespace

Status serve_turn(Conn& conn, session::Machine& machine, const TurnOptions& turn,
                  const std::vector<frame::FetchPath>& fetch, Events& events, Dialog dialog) {
  SendOptions options;
  options.timeout_ms = turn.timeout_ms;
  options.bwlimit = turn.bwlimit;
  options.stop = turn.stop;
  std::vector<Fd> pins;
  std::vector<Beneath> beneath;
  auto entries = fetch_entries(turn.serve_fd, fetch, pins, beneath, events);
  if (!entries) {
    conn.send_abort(frame::Reason::bad_name, entries.error().message);
    return entries.error();
  }
  events.debug("serving " + std::to_string(entries->size()) + " entries from " + turn.dir);
  Plan plan(std::move(*entries));
  for (std::size_t i = 0; i < plan.entries.size(); ++i) {
    plan.entries[i].beneath_fd = beneath[i].fd;
    plan.entries[i].beneath_rel = beneath[i].rel;
  }
  send::Session session(options, events, plan, machine);
  auto status = dialog == Dialog::full_duplex ? session.run_direction(conn) : session.run_turn(conn);
  report_unfinished(plan, status, events);
  if (!status && status.error().kind == ErrorKind::source_changed)
    conn.send_abort(frame::Reason::source_changed, status.error().message);
  return status;
}

} // namespace sesscp
