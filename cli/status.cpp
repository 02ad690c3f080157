#include "cli/status.h"

#include "checkpoint/journal.h"
#include "checkpoint/verify.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

namespace sesscp::cli {

namespace {

const std::string k_journal_suffix = ".sesscp.journal";
const std::string k_part_suffix = ".sesscp.part";

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string wall_time(std::int64_t ns) {
  return iso_time(std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::nanoseconds(ns))));
}

std::int64_t mtime_ns(const struct stat& st) {
  return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

// What one destination looks like on disk.
struct Destination {
  std::string path; // DIR/NAME
  std::string name;
  std::optional<struct stat> final_st, journal_st, part_st;
  std::optional<Result<checkpoint::Replay>> replay;
  std::optional<long> lock_holder;
  // --verify: the confirmed chunks re-hashed from the part (sorted indexes
  // of the damaged ones), or why they could not be read.
  bool verified = false;
  std::vector<std::uint64_t> damaged;
  std::string verify_error;
};

std::optional<struct stat> lstat_of(const std::string& path) {
  struct stat st{};
  if (lstat(path.c_str(), &st) != 0) return std::nullopt;
  return st;
}

Destination inspect(const std::string& dest) {
  Destination d;
  d.path = dest;
  auto slash = dest.find_last_of('/');
  d.name = slash == std::string::npos ? dest : dest.substr(slash + 1);
  d.final_st = lstat_of(dest);
  d.journal_st = lstat_of(dest + k_journal_suffix);
  d.part_st = lstat_of(dest + k_part_suffix);
  if (d.journal_st && S_ISREG(d.journal_st->st_mode)) {
    d.lock_holder = journal_lock_holder(dest + k_journal_suffix);
    // Journal::read opens O_RDONLY and never writes, truncates or locks.
    if (d.journal_st->st_size > 0) d.replay = checkpoint::Journal::read(dest + k_journal_suffix);
  }
  return d;
}

// The state, whether it can resume, and why not.
struct Verdict {
  std::string state; // partial, complete, starting, unusable, orphan part, missing
  bool resumable = false;
  std::string why;
};

Verdict judge(const Destination& d) {
  bool active = d.lock_holder && *d.lock_holder > 0;
  if (!d.journal_st) {
    if (d.part_st) return {"orphan part", false, "a partial file without a journal is not trusted; a new transfer restarts from zero"};
    if (d.final_st) return {"complete", false, "no partial transfer"};
    return {"missing", false, "nothing there"};
  }
  if (!S_ISREG(d.journal_st->st_mode)) return {"unusable", false, "the journal is not a regular file"};
  if (!d.replay) return {active ? "starting" : "unusable", false, active ? "a session is creating the journal" : "the journal is empty"};
  if (!*d.replay) return {"unusable", false, "journal unreadable (" + d.replay->error().message + "); a new transfer restarts from zero"};
  const auto& r = d.replay->value();
  std::uint64_t confirmed = r.confirmed_bytes();
  if (!d.part_st || !S_ISREG(d.part_st->st_mode))
    return {"unusable", false, "the partial file " + d.name + k_part_suffix + " is missing"};
  auto part_len = static_cast<std::uint64_t>(d.part_st->st_size);
  std::string why = "re-run the same 'sesscp send' to resume at byte " + std::to_string(confirmed);
  // A resume reads every confirmed chunk back and has the damaged or
  // missing ones sent again (docs/JOURNAL.md), so a short part still resumes.
  if (d.verified && !d.damaged.empty())
    why += "; its " + std::to_string(d.damaged.size()) + " damaged or missing chunk(s) will be sent again";
  else if (!d.verified && part_len < confirmed)
    why += "; the partial file holds only " + std::to_string(part_len) + " of the " + std::to_string(confirmed) +
           " confirmed bytes: the missing chunks will be sent again";
  if (!r.tail_problem.empty()) why += " (a damaged journal tail will be ignored: " + r.tail_problem + ")";
  return {"partial", true, why};
}

// The damaged ranges of a verified destination, each as chunks and bytes.
struct DamagedRange {
  checkpoint::ChunkRange chunks;
  std::uint64_t offset = 0, length = 0;
  bool missing = false; // the part ends before the range does
};

std::vector<DamagedRange> damaged_ranges(const Destination& d, const checkpoint::Replay& r) {
  std::vector<DamagedRange> out;
  const auto cs = r.identity.chunk_size;
  const auto part_len = d.part_st ? static_cast<std::uint64_t>(d.part_st->st_size) : 0;
  // A run of damaged chunks is split where the part ends: the chunks before
  // differ, the ones the part ends before are missing.
  std::vector<std::uint64_t> differ, missing;
  for (auto i : d.damaged)
    (i * cs + checkpoint::chunk_length(i, cs, r.identity.size) > part_len ? missing : differ).push_back(i);
  for (const auto* list : {&differ, &missing})
    for (const auto& c : checkpoint::to_ranges(*list)) {
      DamagedRange range{c, c.first * cs, 0, list == &missing};
      const auto last = c.first + c.count - 1;
      range.length = last * cs + checkpoint::chunk_length(last, cs, r.identity.size) - range.offset;
      out.push_back(range);
    }
  return out;
}

void damage_json(Json& j, const Destination& d, const checkpoint::Replay& r) {
  j["damaged_chunks"] = d.damaged.size();
  j["checked_bytes"] = d.verify_error.empty() ? r.confirmed_bytes() : 0;
  if (!d.verify_error.empty()) j["verify_error"] = d.verify_error;
  Json ranges = Json::array();
  for (const auto& x : damaged_ranges(d, r))
    ranges.push_back({{"first_chunk", x.chunks.first}, {"count", x.chunks.count}, {"offset", x.offset},
                      {"length", x.length}, {"missing", x.missing}});
  j["damaged_ranges"] = ranges;
}

// What status says of the part's bytes: read only with --verify.
void print_data(const Destination& d, const checkpoint::Replay& r) {
  if (!d.verified) {
    std::printf("  data:             not read (%zu chunks confirmed by the journal; 'sesscp status --verify' "
                "re-hashes them)\n",
                r.chunk_hashes.size());
    return;
  }
  if (!d.verify_error.empty()) {
    std::printf("  data:             could not be read: %s\n", printable(d.verify_error).c_str());
    return;
  }
  if (d.damaged.empty()) {
    std::printf("  data:             re-hashed %zu chunks (%llu bytes): all match the journal\n", r.chunk_hashes.size(),
                static_cast<unsigned long long>(r.confirmed_bytes()));
    return;
  }
  std::printf("  data:             DAMAGED: %zu of %zu confirmed chunks differ from the journal or are missing\n",
              d.damaged.size(), r.chunk_hashes.size());
  for (const auto& x : damaged_ranges(d, r)) {
    std::string chunks = x.chunks.count == 1 ? "chunk " + std::to_string(x.chunks.first)
                                             : "chunks " + std::to_string(x.chunks.first) + "-" +
                                                   std::to_string(x.chunks.first + x.chunks.count - 1);
    std::printf("    %s (bytes %llu-%llu)%s\n", chunks.c_str(), static_cast<unsigned long long>(x.offset),
                static_cast<unsigned long long>(x.offset + x.length - 1),
                x.missing ? ": missing, the partial file ends before it" : "");
  }
}

// status --verify: re-hash the destination's confirmed chunks from its part,
// read-only (O_RDONLY, no lease taken), with a progress line on a terminal.
void verify_destination(Destination& d, bool show_progress) {
  if (!d.replay || !*d.replay || !d.part_st || !S_ISREG(d.part_st->st_mode)) return;
  const auto& r = d.replay->value();
  d.verified = true;
  Fd part(::open((d.path + k_part_suffix).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!part) {
    d.verify_error = std::string("cannot open ") + d.name + k_part_suffix + ": " + std::strerror(errno);
    return;
  }
  auto progress = [&](std::uint64_t done, std::uint64_t total) {
    if (show_progress)
      std::fprintf(stderr, "\r%s: re-hashing %llu of %llu chunks", printable(d.name).c_str(),
                   static_cast<unsigned long long>(done), static_cast<unsigned long long>(total));
  };
  auto damaged = checkpoint::verify_chunks(part.get(), r.identity.chunk_size, r.identity.size, r.chunk_hashes, progress);
  if (show_progress) std::fprintf(stderr, "\r\033[K");
  if (!damaged) d.verify_error = damaged.error().message;
  else d.damaged = std::move(*damaged);
}

Json to_json(const Destination& d, const Verdict& v) {
  Json j;
  j["name"] = d.name;
  j["path"] = d.path;
  j["state"] = v.state;
  j["resumable"] = v.resumable;
  j["why"] = v.why;
  j["active"] = d.lock_holder ? Json(*d.lock_holder > 0) : Json(nullptr);
  j["lock_pid"] = d.lock_holder && *d.lock_holder > 0 ? Json(*d.lock_holder) : Json(nullptr);
  j["part_bytes"] = d.part_st ? Json(static_cast<std::uint64_t>(d.part_st->st_size)) : Json(nullptr);
  j["final_bytes"] = d.final_st ? Json(static_cast<std::uint64_t>(d.final_st->st_size)) : Json(nullptr);
  if (d.replay && *d.replay) {
    const auto& r = d.replay->value();
    j["size"] = r.identity.size;
    j["confirmed_bytes"] = r.confirmed_bytes();
    j["confirmed_chunks"] = r.chunk_hashes.size();
    j["chunk_size"] = r.identity.chunk_size;
    j["last_serial"] = r.last_serial;
    j["last_checkpoint"] = wall_time(mtime_ns(*d.journal_st));
    j["journal_intact"] = r.tail_problem.empty();
    j["journal_problem"] = r.tail_problem;
    // Whether the part's bytes were read (status --verify) or only the journal.
    j["data_checked"] = d.verified;
    if (d.verified) damage_json(j, d, r);
    j["source"] = {{"name", r.identity.name},
                   {"size", r.identity.size},
                   {"mtime", wall_time(r.identity.mtime_ns)},
                   {"mtime_ns", r.identity.mtime_ns},
                   {"fingerprint", to_hex(r.identity.fingerprint)}};
  }
  return j;
}

void print_human(const Destination& d, const Verdict& v) {
  std::string name = printable(d.name);
  std::string active = !d.lock_holder ? "unknown (cannot read /proc/locks)"
                       : *d.lock_holder > 0 ? "yes: a receiver (pid " + std::to_string(*d.lock_holder) + ") is writing it now"
                                            : "no";
  if (d.replay && *d.replay) {
    const auto& r = d.replay->value();
    std::uint64_t confirmed = r.confirmed_bytes();
    double pct = r.identity.size ? 100.0 * static_cast<double>(confirmed) / static_cast<double>(r.identity.size) : 100;
    std::printf("%s: %s, %s of %s confirmed (%.1f%%, %llu bytes, %zu chunks of %s)\n", name.c_str(), v.state.c_str(),
                human_bytes(confirmed).c_str(), human_bytes(r.identity.size).c_str(), pct,
                static_cast<unsigned long long>(confirmed), r.chunk_hashes.size(),
                human_bytes(r.identity.chunk_size).c_str());
    std::printf("  partial file:     %s\n", d.part_st ? (std::to_string(d.part_st->st_size) + " bytes").c_str() : "missing");
    std::printf("  last checkpoint:  %s (journal modified), serial %llu\n", wall_time(mtime_ns(*d.journal_st)).c_str(),
                static_cast<unsigned long long>(r.last_serial));
    std::printf("  source:           %s, %llu bytes, modified %s, fingerprint %s\n", printable(r.identity.name).c_str(),
                static_cast<unsigned long long>(r.identity.size), wall_time(r.identity.mtime_ns).c_str(),
                to_hex(r.identity.fingerprint).c_str());
    std::printf("  journal:          %s\n",
                r.tail_problem.empty() ? "records intact" : ("damaged tail ignored (" + printable(r.tail_problem) + ")").c_str());
    print_data(d, r);
  } else {
    std::printf("%s: %s\n", name.c_str(), v.state.c_str());
  }
  std::printf("  resumable:        %s (%s)\n", v.resumable ? "yes" : "no", printable(v.why).c_str());
  if (d.journal_st) std::printf("  transfer active:  %s\n", active.c_str());
}

// Destinations with a journal or a part file in `dir`, sorted by name.
Result<std::vector<std::string>> partials_in(const std::string& dir) {
  DIR* dp = opendir(dir.c_str());
  if (!dp) return errno_error(ErrorKind::io, "cannot read directory " + dir, errno);
  std::vector<std::string> names;
  while (auto* e = readdir(dp)) {
    std::string n = e->d_name;
    if (ends_with(n, k_journal_suffix)) names.push_back(n.substr(0, n.size() - k_journal_suffix.size()));
    else if (ends_with(n, k_part_suffix)) names.push_back(n.substr(0, n.size() - k_part_suffix.size()));
  }
  closedir(dp);
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  std::string prefix = dir.empty() || dir.back() == '/' ? dir : dir + "/";
  for (auto& n : names) n = prefix + n;
  return names;
}

} // namespace

std::optional<long> journal_lock_holder(const std::string& journal_path) {
  struct stat st{};
  if (stat(journal_path.c_str(), &st) != 0) return std::nullopt;
  std::ifstream locks("/proc/locks");
  if (!locks) return std::nullopt;
  // "1: FLOCK  ADVISORY  WRITE 1234 08:01:131090 0 EOF"; waiters have "->" after the id.
  std::string line;
  while (std::getline(locks, line)) {
    std::istringstream in(line);
    std::string id, type, advisory, mode, pid, where;
    in >> id >> type;
    if (type == "->") in >> type;
    in >> advisory >> mode >> pid >> where;
    if (type != "FLOCK") continue;
    unsigned maj = 0, min = 0;
    unsigned long long ino = 0;
    if (std::sscanf(where.c_str(), "%x:%x:%llu", &maj, &min, &ino) != 3) continue;
    if (ino == st.st_ino && maj == major(st.st_dev) && min == minor(st.st_dev)) return std::stol(pid);
  }
  return 0;
}

int run_status(const std::string& path, Output& out, bool verify) {
  std::vector<std::string> dests;
  struct stat st{};
  bool is_dir = stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  if (is_dir) {
    auto found = partials_in(path);
    if (!found) {
      out.error(found.error());
      return exit_code_for(found.error().kind);
    }
    dests = std::move(*found);
  } else {
    std::string dest = path;
    if (ends_with(dest, k_journal_suffix)) dest.resize(dest.size() - k_journal_suffix.size());
    else if (ends_with(dest, k_part_suffix)) dest.resize(dest.size() - k_part_suffix.size());
    dests.push_back(dest);
  }
  std::vector<std::pair<Destination, Verdict>> reports;
  const bool show_progress = verify && !out.json() && !out.quiet() && isatty(STDERR_FILENO);
  bool any_damaged = false, any_unreadable = false;
  for (const auto& dest : dests) {
    auto d = inspect(dest);
    if (verify) verify_destination(d, show_progress);
    any_damaged = any_damaged || !d.damaged.empty();
    any_unreadable = any_unreadable || !d.verify_error.empty();
    auto v = judge(d);
    if (!is_dir && v.state == "missing") {
      out.error(make_error(ErrorKind::usage, "nothing to report for " + path + " (no such file, no " + dest +
                                                 k_journal_suffix + ")"));
      return exit_code::k_usage;
    }
    reports.emplace_back(std::move(d), std::move(v));
  }
  if (out.json()) {
    for (const auto& [d, v] : reports) out.event("status", to_json(d, v));
  } else if (reports.empty()) {
    std::printf("%s: no partial transfers\n", printable(path).c_str());
  } else {
    for (const auto& [d, v] : reports) print_human(d, v);
  }
  std::fflush(stdout);
  if (any_damaged) return exit_code::k_integrity;
  if (any_unreadable) return exit_code::k_io;
  return exit_code::k_ok;
}

} // namespace sesscp::cli
