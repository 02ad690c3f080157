// crashreplay: rebuild a directory as a power cut at one point of a crashsim
// trace would have left it. For tests only; the model is in
// docs/RELIABILITY.md ("Crash model").
//
//   crashreplay count TRACE              number of records N (crash points are 0..N)
//   crashreplay list TRACE               one line per record
//   crashreplay points TRACE             the crash points worth checking, "K why" per
//                                        line: just before and just after every
//                                        sync, after every directory operation, the
//                                        start (after the baseline) and N
//   crashreplay build [--sector N] TRACE K SEED OUT
//                                        write into the empty directory OUT the files
//                                        that exist after a power cut just before
//                                        record K (a K inside the baseline, the
//                                        directory as tracing found it, counts as
//                                        just after it); SEED decides what happens to what
//                                        was not yet synced. Prints one line that
//                                        says what it chose. --sector sets the unit
//                                        of a torn write (default 4096; 512 tears
//                                        small journal records too)
//
// Exit status: 0 done, 1 bad trace or I/O error, 64 usage.
//
// The model, in short: a file's writes, size changes and metadata changes
// since its last fsync/fdatasync are "pending"; at the crash each file's
// pending changes are, by seed, all lost, all applied, or torn (each 4 KiB
// sector, or --sector bytes, of each write and each size change kept or not, independently).
// fdatasync makes data and size durable, fsync also mtime and mode.
// Directory operations (create, link, rename, unlink) since the last fsync
// of the directory persist as a prefix of their order, of a length chosen by
// seed. sync/syncfs make everything durable.

#include "crashsim_trace.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace {

using crashsim::Op;
using crashsim::TraceHeader;

std::uint64_t g_sector = 4096; // unit of a torn write (--sector)

struct Record {
  TraceHeader h;
  std::string name, name2;
  const std::uint8_t* data = nullptr;
};

class Trace {
public:
  bool load(const char* path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return complain(std::string("cannot open ") + path + ": " + std::strerror(errno));
    struct stat st{};
    if (fstat(fd, &st) != 0) return complain(std::string("cannot stat ") + path);
    m_size = static_cast<std::size_t>(st.st_size);
    if (m_size < sizeof crashsim::k_trace_magic) {
      close(fd);
      return complain(std::string(path) + " is not a crashsim trace (too short)");
    }
    void* map = mmap(nullptr, m_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return complain(std::string("cannot map ") + path + ": " + std::strerror(errno));
    m_base = static_cast<const std::uint8_t*>(map);
    if (std::memcmp(m_base, crashsim::k_trace_magic, sizeof crashsim::k_trace_magic) != 0)
      return complain(std::string(path) + " is not a crashsim trace (bad magic)");
    std::size_t off = sizeof crashsim::k_trace_magic;
    while (off < m_size) {
      Record r;
      if (m_size - off < sizeof r.h) break;
      std::memcpy(&r.h, m_base + off, sizeof r.h);
      std::uint64_t need = sizeof r.h + std::uint64_t{r.h.name_len} + r.h.name2_len + r.h.data_len;
      if (need > m_size - off || r.h.seq != m_records.size()) break;
      const char* p = reinterpret_cast<const char*>(m_base + off + sizeof r.h);
      r.name.assign(p, r.h.name_len);
      r.name2.assign(p + r.h.name_len, r.h.name2_len);
      r.data = m_base + off + sizeof r.h + r.h.name_len + r.h.name2_len;
      m_records.push_back(std::move(r));
      off += need;
    }
    if (off != m_size)
      std::fprintf(stderr, "crashreplay: %s: ignoring %zu bytes of torn or out-of-order trace at offset %zu\n", path,
                   m_size - off, off);
    return true;
  }

  const std::vector<Record>& records() const { return m_records; }
  // The first real crash point: just after the baseline record (crashsim's
  // snapshot of what the directory held when tracing began).
  std::uint64_t first_point() const {
    for (const auto& r : m_records)
      if (static_cast<Op>(r.h.op) == Op::baseline) return r.h.seq + 1;
    return 0;
  }

private:
  static bool complain(const std::string& msg) {
    std::fprintf(stderr, "crashreplay: %s\n", msg.c_str());
    return false;
  }
  const std::uint8_t* m_base = nullptr;
  std::size_t m_size = 0;
  std::vector<Record> m_records;
};

bool is_dir_op(Op op) { return op == Op::create || op == Op::link || op == Op::rename || op == Op::unlink; }

// Follows the names files have while the trace is read (for messages).
struct Names {
  std::map<std::uint32_t, std::string> of;
  void apply(const Record& r) {
    auto op = static_cast<Op>(r.h.op);
    if (op == Op::create || op == Op::link) of[r.h.id] = r.name;
    if (op == Op::rename)
      for (auto& [id, n] : of)
        if (n == r.name) n = r.name2;
  }
  std::string operator()(std::uint32_t id) const {
    auto it = of.find(id);
    return it == of.end() ? "#" + std::to_string(id) : it->second;
  }
};

// ------------------------------------------------------------------ model

struct Change {
  Op op;
  std::uint64_t a = 0;
  const std::uint8_t* data = nullptr;
  std::uint64_t len = 0;
};

struct File {
  std::vector<std::uint8_t> bytes; // durable content; its size is the durable size
  std::optional<std::uint64_t> mode, mtime;
  std::vector<Change> data_pending;
  std::optional<std::uint64_t> mode_pending, mtime_pending;

  void apply(const Change& c) {
    if (c.op == Op::set_size) {
      bytes.resize(c.a);
    } else {
      if (bytes.size() < c.a + c.len) bytes.resize(c.a + c.len);
      std::memcpy(bytes.data() + c.a, c.data, c.len);
    }
  }
  void sync_data() {
    for (const auto& c : data_pending) apply(c);
    data_pending.clear();
  }
  void sync_meta() {
    if (mode_pending) mode = std::exchange(mode_pending, std::nullopt);
    if (mtime_pending) mtime = std::exchange(mtime_pending, std::nullopt);
  }
};

struct DirOp {
  Op op;
  std::uint32_t id = 0;
  std::string name, name2;
  std::uint64_t flags = 0;
};

struct Model {
  std::map<std::uint32_t, File> files;
  std::map<std::string, std::uint32_t> names; // durable directory
  std::vector<DirOp> dir_pending;

  void apply(const DirOp& d) {
    switch (d.op) {
    case Op::create:
    case Op::link: names[d.name] = d.id; break;
    case Op::unlink: names.erase(d.name); break;
    case Op::rename: {
      auto from = names.find(d.name);
      if (d.flags & 2 /* RENAME_EXCHANGE */) {
        auto to = names.find(d.name2);
        if (from != names.end() && to != names.end()) std::swap(from->second, to->second);
      } else if (from != names.end()) {
        std::uint32_t id = from->second;
        names.erase(from);
        names[d.name2] = id;
      }
      break;
    }
    default: break;
    }
  }
  void sync_dir() {
    for (const auto& d : dir_pending) apply(d);
    dir_pending.clear();
  }

  void step(const Record& r) {
    auto op = static_cast<Op>(r.h.op);
    File& f = files[r.h.id]; // id 0 (directory-wide records) stays an empty, nameless file
    switch (op) {
    case Op::create:
    case Op::link:
    case Op::rename:
    case Op::unlink: dir_pending.push_back({op, r.h.id, r.name, r.name2, r.h.a}); break;
    case Op::write: f.data_pending.push_back({op, r.h.a, r.data, r.h.data_len}); break;
    case Op::set_size: f.data_pending.push_back({op, r.h.a, nullptr, 0}); break;
    case Op::set_mtime: f.mtime_pending = r.h.a; break;
    case Op::set_mode: f.mode_pending = r.h.a; break;
    case Op::fdatasync: f.sync_data(); break;
    case Op::fsync:
      f.sync_data();
      f.sync_meta();
      break;
    case Op::dir_sync: sync_dir(); break;
    case Op::sync_all:
      for (auto& [id, file] : files) {
        file.sync_data();
        file.sync_meta();
      }
      sync_dir();
      break;
    case Op::injected:
    case Op::baseline: break;
    }
  }
};

// What the power cut does to one file's pending changes; returns a note.
std::string crash_file(File& f, std::mt19937_64& rng) {
  std::size_t n = f.data_pending.size() + (f.mode_pending ? 1 : 0) + (f.mtime_pending ? 1 : 0);
  if (n == 0) return {};
  switch (rng() % 3) {
  case 0:
    f.data_pending.clear();
    f.mode_pending.reset();
    f.mtime_pending.reset();
    return "lost(" + std::to_string(n) + " changes)";
  case 1:
    f.sync_data();
    f.sync_meta();
    return "applied(" + std::to_string(n) + " changes)";
  default: break;
  }
  // Torn: every sector of every write, and every size change, on its own.
  std::size_t kept = 0, total = 0;
  for (const auto& c : f.data_pending) {
    if (c.op == Op::set_size) {
      ++total;
      if (rng() & 1) {
        f.apply(c);
        ++kept;
      }
      continue;
    }
    for (std::uint64_t at = c.a; at < c.a + c.len;) {
      std::uint64_t end = std::min(c.a + c.len, (at / g_sector + 1) * g_sector);
      ++total;
      if (rng() & 1) {
        f.apply({Op::write, at, c.data + (at - c.a), end - at});
        ++kept;
      }
      at = end;
    }
  }
  f.data_pending.clear();
  if (f.mode_pending && (rng() & 1)) f.mode = f.mode_pending;
  if (f.mtime_pending && (rng() & 1)) f.mtime = f.mtime_pending;
  f.mode_pending.reset();
  f.mtime_pending.reset();
  return "torn(" + std::to_string(kept) + "/" + std::to_string(total) + " pieces kept)";
}

bool write_file(const std::string& path, const File& f) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return false;
  std::size_t done = 0;
  while (done < f.bytes.size()) {
    ssize_t n = write(fd, f.bytes.data() + done, f.bytes.size() - done);
    if (n <= 0) {
      close(fd);
      return false;
    }
    done += static_cast<std::size_t>(n);
  }
  if (f.mode) fchmod(fd, static_cast<mode_t>(*f.mode));
  if (f.mtime) {
    auto ns = static_cast<std::int64_t>(*f.mtime);
    std::int64_t sec = ns / 1'000'000'000, nsec = ns % 1'000'000'000;
    if (nsec < 0) {
      sec -= 1;
      nsec += 1'000'000'000;
    }
    timespec times[2] = {{0, UTIME_OMIT}, {static_cast<time_t>(sec), static_cast<long>(nsec)}};
    futimens(fd, times);
  }
  return close(fd) == 0;
}

int build(const Trace& trace, std::uint64_t k, std::uint64_t seed, const std::string& out) {
  const auto& recs = trace.records();
  if (k > recs.size()) {
    std::fprintf(stderr, "crashreplay: crash point %llu is past the end of the trace (%zu records)\n",
                 static_cast<unsigned long long>(k), recs.size());
    return 64;
  }
  // Inside the baseline there is nothing to crash: it was all on disk already.
  k = std::max(k, trace.first_point());
  Model m;
  Names names;
  for (std::uint64_t i = 0; i < k; ++i) {
    m.step(recs[i]);
    names.apply(recs[i]);
  }
  std::seed_seq seq{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32),
                    static_cast<std::uint32_t>(k), static_cast<std::uint32_t>(k >> 32)};
  std::mt19937_64 rng(seq);
  std::string notes;
  for (auto& [id, f] : m.files) {
    auto note = crash_file(f, rng);
    if (!note.empty()) notes += " " + names(id) + ":" + note;
  }
  std::size_t pending = m.dir_pending.size();
  std::size_t kept = pending ? rng() % (pending + 1) : 0;
  for (std::size_t i = 0; i < kept; ++i) m.apply(m.dir_pending[i]);
  std::map<std::uint32_t, std::string> written;
  for (const auto& [name, id] : m.names) {
    std::string path = out + "/" + name;
    if (auto it = written.find(id); it != written.end()) {
      if (link(it->second.c_str(), path.c_str()) != 0) {
        std::fprintf(stderr, "crashreplay: link %s: %s\n", path.c_str(), std::strerror(errno));
        return 1;
      }
      continue;
    }
    if (!write_file(path, m.files[id])) {
      std::fprintf(stderr, "crashreplay: write %s: %s\n", path.c_str(), std::strerror(errno));
      return 1;
    }
    written[id] = path;
  }
  std::string last = k == 0 ? "start" : std::string(crashsim::op_name(recs[k - 1].h.op));
  std::printf("crash at %llu/%zu (after %s) seed %llu:%s%s; directory: %zu/%zu pending operations kept; %zu files\n",
              static_cast<unsigned long long>(k), recs.size(), last.c_str(), static_cast<unsigned long long>(seed),
              notes.empty() ? " no pending data" : "", notes.c_str(), kept, pending, m.names.size());
  return 0;
}

int list(const Trace& trace) {
  Names names;
  for (const auto& r : trace.records()) {
    names.apply(r);
    auto op = static_cast<Op>(r.h.op);
    std::printf("%llu %s", static_cast<unsigned long long>(r.h.seq), crashsim::op_name(r.h.op));
    if (r.h.id) std::printf(" %s", names(r.h.id).c_str());
    if (is_dir_op(op) && op != Op::create && op != Op::link) std::printf(" %s", r.name.c_str());
    if (op == Op::rename) std::printf(" -> %s", r.name2.c_str());
    if (op == Op::write) std::printf(" @%llu +%llu", static_cast<unsigned long long>(r.h.a),
                                     static_cast<unsigned long long>(r.h.data_len));
    if (op == Op::set_size) std::printf(" %llu", static_cast<unsigned long long>(r.h.a));
    if (op == Op::injected) std::printf(" %s errno %llu", r.name.c_str(), static_cast<unsigned long long>(r.h.a));
    std::printf("\n");
  }
  return 0;
}

int points(const Trace& trace) {
  const auto& recs = trace.records();
  std::map<std::uint64_t, std::string> why;
  const std::uint64_t first = trace.first_point();
  why[first] = "start";
  why[recs.size()] = "end";
  Names names;
  for (const auto& r : recs) {
    names.apply(r);
    auto op = static_cast<Op>(r.h.op);
    std::string what = std::string(crashsim::op_name(r.h.op)) + (r.h.id ? " " + names(r.h.id) : "");
    if (op == Op::rename) what += " " + r.name + " -> " + r.name2;
    else if (op == Op::unlink) what += " " + r.name;
    if (op == Op::fsync || op == Op::fdatasync || op == Op::dir_sync || op == Op::sync_all) {
      why.emplace(r.h.seq, "before " + what);
      why.emplace(r.h.seq + 1, "after " + what);
    } else if (is_dir_op(op)) {
      why.emplace(r.h.seq + 1, "after " + what);
    }
  }
  for (const auto& [k, w] : why)
    if (k >= first) std::printf("%llu %s\n", static_cast<unsigned long long>(k), w.c_str());
  return 0;
}

int usage() {
  std::fprintf(stderr, "usage: crashreplay count|list|points TRACE\n"
                       "       crashreplay build [--sector N] TRACE K SEED OUTDIR\n");
  return 64;
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage();
  std::string cmd = argv[1];
  Trace trace;
  if (cmd == "count" || cmd == "list" || cmd == "points") {
    if (argc != 3) return usage();
    if (!trace.load(argv[2])) return 1;
    if (cmd == "count") std::printf("%zu\n", trace.records().size());
    if (cmd == "list") return list(trace);
    if (cmd == "points") return points(trace);
    return 0;
  }
  if (cmd == "build" && argc == 8 && std::string(argv[2]) == "--sector") {
    char* end = nullptr;
    g_sector = std::strtoull(argv[3], &end, 10);
    if (*end || g_sector == 0) return usage();
    argv += 2;
    argc -= 2;
  }
  if (cmd == "build" && argc == 6) {
    char* end = nullptr;
    std::uint64_t k = std::strtoull(argv[3], &end, 10);
    if (*end) return usage();
    std::uint64_t seed = std::strtoull(argv[4], &end, 10);
    if (*end) return usage();
    if (!trace.load(argv[2])) return 1;
    return build(trace, k, seed, argv[5]);
  }
  return usage();
}
