#include "url/get.h"

#include "base/file_io.h"
#include "checkpoint/journal.h"
#include "checkpoint/verify.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <xxhash.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <ctime>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

namespace sesscp::url {

namespace {

using Clock = std::chrono::steady_clock;
using checkpoint::chunk_count;
using checkpoint::chunk_length;

constexpr int k_max_restarts = 3; // remote changed during one run

// What the server says about the file, from a HEAD (or FTP/SFTP stat).
struct Remote {
  std::uint64_t size = 0;
  std::int64_t mtime_s = -1;  // -1: unknown
  std::string etag;           // HTTP only
  std::string last_modified;  // HTTP only, as sent
};

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  std::size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

// Response headers of the last response (a redirect starts a new set).
struct Headers {
  std::map<std::string, std::string> fields;
  std::string get(const std::string& name) const {
    auto it = fields.find(name);
    return it == fields.end() ? std::string() : it->second;
  }
};

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto* h = static_cast<Headers*>(user);
  std::string line(data, size * count);
  if (line.rfind("HTTP/", 0) == 0) {
    h->fields.clear();
  } else if (auto colon = line.find(':'); colon != std::string::npos) {
    h->fields[lower(line.substr(0, colon))] = trim(line.substr(colon + 1));
  }
  return size * count;
}

size_t discard_body(char*, size_t size, size_t count, void*) { return size * count; }

bool is_http(const std::string& scheme) { return scheme == "http" || scheme == "https"; }
bool is_ftp(const std::string& scheme) { return scheme == "ftp" || scheme == "ftps"; }

std::string utc_time(std::int64_t s) {
  if (s < 0) return "unknown";
  std::time_t t = static_cast<std::time_t>(s);
  std::tm tm{};
  char text[40];
  if (!gmtime_r(&t, &tm) || std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
    return std::to_string(s);
  return text;
}

// Fingerprint of the remote file's identity: what the server says that
// changes when the file does. See docs/JOURNAL.md ("URL downloads").
Hash128 remote_fingerprint(const Remote& r, const std::string& redacted_url) {
  std::string text = "sesscp-url-identity-v1\n" + std::to_string(r.size) + "\n" + r.etag + "\n" +
                     r.last_modified + "\n" + std::to_string(r.mtime_s) + "\n";
  // With neither ETag nor a date nothing but the size identifies the file:
  // tie the journal to the URL too, so another URL never continues it.
  if (r.etag.empty() && r.last_modified.empty() && r.mtime_s < 0) text += redacted_url + "\n";
  return xxh3_128({reinterpret_cast<const std::uint8_t*>(text.data()), text.size()});
}

// One ranged request in flight: chunks [first, end) of the file.
struct Transfer {
  Easy easy;
  char errbuf[CURL_ERROR_SIZE] = {};
  Headers headers;
  std::uint64_t first = 0, end = 0;  // chunk range asked for
  std::uint64_t chunk = 0;           // chunk being filled
  std::vector<std::uint8_t> buf;
  std::size_t fill = 0;
  std::uint64_t skip = 0;            // body bytes to drop (server ignored Range)
  bool checked = false;              // response headers looked at
  bool unit_done = false;            // every chunk of the unit arrived; stop reading
  Clock::time_point last_data = Clock::now(); // for --timeout: when the server last sent body bytes
  std::optional<Error> error;        // why the write callback stopped
  class Download* owner = nullptr;
};

size_t on_body(char* data, size_t size, size_t count, void* user);

class Download {
public:
  Download(const GetOptions& o, Events& events, FileReport& report, std::string out)
      : m_opt(o), m_events(events), m_report(report), m_out(std::move(out)),
        m_part_path(m_out + ".sesscp.part"), m_journal_path(m_out + ".sesscp.journal"),
        m_scheme(scheme_of(o.url)), m_shown_url(redact(o.url)) {}

  Status lock();
  // One attempt: probe, plan the resume point, fetch, finish.
  Status attempt();
  bool restart_requested() const { return m_restart; }
  // After a failure before any data: remove the empty journal that lock()
  // created, so that a refused download leaves nothing behind.
  void tidy() {
    struct stat jst{}, pst{};
    if (fstat(m_lock.get(), &jst) != 0 || jst.st_size != 0) return;
    bool part = ::stat(m_part_path.c_str(), &pst) == 0;
    if (part && pst.st_size != 0) return;
    if (part) ::unlink(m_part_path.c_str());
    ::unlink(m_journal_path.c_str());
  }
  // Forget the partial download (the remote changed under it).
  void discard() {
    m_journal.reset();
    if (ftruncate(m_lock.get(), 0) != 0) {
      // plan() then finds a journal that does not match and starts over anyway.
    }
  }

  size_t body(Transfer& t, const char* data, size_t n);

private:
  Result<Remote> probe();
  Status plan(const Remote& remote);
  Status plan_tail(checkpoint::Replay& replay);
  void reset_chunks();
  Status start_fresh(const std::string& why);
  Status fetch();
  bool fetch_pending() const { return m_journaled < m_chunks || m_reverifier || m_repairs_pending > 0; }
  Status start_transfer(CURLM* multi, std::list<Transfer>& active);
  std::uint64_t unit_chunks(std::uint64_t first, int connections) const;
  void release(CURLM* multi, Transfer& t);
  Status reap(CURLM* multi, std::list<Transfer>& active);
  Status check_silence(const std::list<Transfer>& active) const;
  void start_reverifier(CURLM* multi);
  Status poll_reverifier();
  void report_damage(const std::vector<std::uint64_t>& damaged);
  Result<Hash128> file_root() const;
  Status check_response(Transfer& t);
  Status store_chunk(Transfer& t);
  Status commit(bool force);
  Status finish();
  Status recheck();
  Status verify_digests();
  Error changed(const std::string& what);

  const GetOptions& m_opt;
  Events& m_events;
  FileReport& m_report;
  std::string m_out, m_part_path, m_journal_path, m_scheme, m_shown_url;
  Fd m_lock;
  Fd m_part;
  std::optional<checkpoint::Journal> m_journal;
  checkpoint::Identity m_identity;
  Remote m_remote;
  std::uint64_t m_chunks = 0;
  std::vector<std::uint8_t> m_state;    // per chunk: 0 free, 1 assigned, 2 written
  std::vector<Hash128> m_hashes;        // per chunk, valid when written
  std::vector<Hash128> m_prefix;        // hashes of the chunks journaled before this attempt
  std::uint64_t m_journaled = 0;        // chunks [0, m_journaled) are durable and journaled
  // Per chunk: its hash may go into the file root, because it was computed
  // in this run from the bytes in the part (read back and matched, or hashed
  // from the buffer written), or because --verify-resume tail trusts it.
  std::vector<std::uint8_t> m_checked;
  // --verify-resume full: chunks [0, m_verify_total) came from an earlier
  // run and are read back by m_reverifier while the rest arrives.
  std::unique_ptr<checkpoint::Reverifier> m_reverifier;
  std::uint64_t m_verify_total = 0;
  std::uint64_t m_verify_checked = 0;   // of them, checked so far
  std::uint64_t m_repairs_pending = 0;  // found damaged, not yet rewritten
  bool m_repairs_unsynced = false;      // rewritten below m_journaled since the last fdatasync
  std::uint64_t m_free_from = 0;        // no free chunk below min(this, m_journaled)
  std::uint64_t m_serial = 0;
  Clock::time_point m_last_commit{};
  bool m_ranges_ignored = false;
  bool m_abort_all = false;             // drop every transfer and reschedule (Range ignored)
  bool m_restart = false;               // the remote changed: start again from zero
  bool m_attempted = false;             // an attempt got as far as a resume point
  Clock::time_point m_paced_from{};     // --bwlimit: when this attempt's fetch began
  std::uint64_t m_paced_bytes = 0;      //   and m_report.bytes then
  std::list<Transfer>* m_active = nullptr; // the fetch's transfers, while it runs
  void pace();
};

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  return t->owner->body(*t, data, size * count);
}

Status Download::lock() {
  // The journal's inode carries the lock for the whole download, as at the
  // receiver: two `get`s into one file would splice their data.
  m_lock.reset(::open(m_journal_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!m_lock) return errno_error(ErrorKind::cannot_create, "cannot create " + m_journal_path, errno);
  if (flock(m_lock.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) return make_error(ErrorKind::busy, m_out + " is being downloaded by another sesscp");
    return errno_error(ErrorKind::io, "flock " + m_journal_path, errno);
  }
  return {};
}

Result<Remote> Download::probe() {
  m_events.phase(m_identity.name, Events::Phase::connecting, m_shown_url);
  char errbuf[CURL_ERROR_SIZE];
  auto easy = make_easy(m_opt.url, m_opt.url_options, errbuf);
  if (!easy) return easy.error();
  CURL* h = easy->get();
  Headers headers;
  curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  curl_easy_setopt(h, CURLOPT_FILETIME, 1L);
  curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &headers);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard_body);
  CURLcode rc = curl_easy_perform(h);
  long code = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
  if (rc != CURLE_OK) return transfer_error(rc, code, errbuf, (is_http(m_scheme) ? "HEAD " : "stat ") + m_shown_url);
  curl_off_t length = -1, filetime = -1;
  curl_easy_getinfo(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
  curl_easy_getinfo(h, CURLINFO_FILETIME_T, &filetime);
  if (length < 0)
    return make_error(ErrorKind::refused, m_shown_url + ": the server does not tell the file's size, which a "
                                                        "resumable download needs");
  Remote r;
  r.size = static_cast<std::uint64_t>(length);
  r.mtime_s = filetime;
  if (is_http(m_scheme)) {
    r.etag = headers.get("etag");
    r.last_modified = headers.get("last-modified");
  }
  return r;
}

Status Download::start_fresh(const std::string& why) {
  if (!why.empty()) m_events.info(why);
  m_journal.reset();
  auto journal = checkpoint::Journal::create(m_journal_path, m_identity);
  if (!journal) return journal.error();
  m_journal.emplace(std::move(*journal));
  if (ftruncate(m_part.get(), 0) != 0) return errno_error(ErrorKind::io, "truncate " + m_part_path, errno);
  m_journaled = 0;
  m_serial = 0;
  m_prefix.clear();
  m_verify_total = 0;
  return {};
}

Status Download::plan(const Remote& remote) {
  m_remote = remote;
  m_identity.size = remote.size;
  m_identity.mtime_ns = remote.mtime_s >= 0 ? remote.mtime_s * 1'000'000'000 : 0;
  m_identity.chunk_size = m_opt.chunk_size;
  m_identity.fingerprint = remote_fingerprint(remote, m_shown_url);
  m_chunks = chunk_count(m_identity.chunk_size, remote.size);

  m_part.reset(::open(m_part_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!m_part) return errno_error(ErrorKind::cannot_create, "cannot create " + m_part_path, errno);
  struct stat jst{};
  if (fstat(m_lock.get(), &jst) != 0) return errno_error(ErrorKind::io, "stat " + m_journal_path, errno);
  struct stat pst{};
  fstat(m_part.get(), &pst);
  if (jst.st_size == 0)
    return start_fresh(pst.st_size > 0 ? "a partial file without a journal is not trusted; restarting from zero" : "");

  checkpoint::Replay replay;
  m_journal.reset();
  auto journal = checkpoint::Journal::open(m_journal_path, replay);
  if (!journal) return start_fresh("journal unusable (" + journal.error().message + "); restarting from zero");
  m_journal.emplace(std::move(*journal));
  if (auto diff = checkpoint::identity_mismatch(replay.identity, m_identity); !diff.empty()) {
    if (diff == "content fingerprint differs") diff = "ETag or Last-Modified differs";
    if (auto at = diff.find(", offer "); at != std::string::npos) diff.replace(at, 8, ", server ");
    return start_fresh("remote file changed since the partial download (" + diff + "); restarting from zero");
  }
  // Same chunking as the journal, whatever --chunk-size says now.
  m_identity.chunk_size = replay.identity.chunk_size;
  m_chunks = chunk_count(m_identity.chunk_size, remote.size);
  if (replay.chunk_hashes.size() > m_chunks)
    return start_fresh("journal confirms more chunks than the file has; restarting from zero");
  if (m_opt.resume_check == checkpoint::ResumeCheck::full) {
    // Nothing is read before resuming: fetch() re-reads every confirmed
    // chunk in the background and fetches again whatever differs.
    m_serial = replay.last_serial;
    m_journaled = replay.chunk_hashes.size();
    m_verify_total = m_journaled;
    m_prefix = std::move(replay.chunk_hashes);
    return {};
  }
  return plan_tail(replay);
}

// --verify-resume tail: re-hash the last verify_tail_bytes of confirmed data
// now, trust the journal for the chunks before them, resume after the last
// proven chunk.
Status Download::plan_tail(checkpoint::Replay& replay) {
  const std::uint64_t size = m_identity.size;
  m_verify_total = 0;
  m_events.phase(m_identity.name, Events::Phase::verifying, "");
  auto proven = checkpoint::verify_tail(m_part.get(), m_identity.chunk_size, size, replay.chunk_hashes,
                                        m_opt.verify_tail_bytes);
  if (!proven) return proven.error();
  if (*proven < replay.chunk_hashes.size()) {
    // Rewrite the journal so that it claims only what was proven.
    m_events.info(std::to_string(replay.chunk_hashes.size() - *proven) +
                  " journaled chunks failed re-verification; fetching them again");
    replay.chunk_hashes.resize(*proven);
    m_journal.reset();
    auto fresh = checkpoint::Journal::create(m_journal_path, m_identity);
    if (!fresh) return fresh.error();
    m_journal.emplace(std::move(*fresh));
    m_serial = 0;
    for (std::uint64_t first = 0; first < *proven; first += checkpoint::k_max_record_hashes) {
      auto end = std::min<std::uint64_t>(*proven, first + checkpoint::k_max_record_hashes);
      SESSCP_TRY(m_journal->append({++m_serial, first,
                                    {replay.chunk_hashes.begin() + static_cast<std::ptrdiff_t>(first),
                                     replay.chunk_hashes.begin() + static_cast<std::ptrdiff_t>(end)}}));
    }
  } else {
    m_serial = replay.last_serial;
  }
  m_journaled = *proven;
  m_prefix = std::move(replay.chunk_hashes);
  return {};
}

Error Download::changed(const std::string& what) {
  m_restart = true;
  return make_error(ErrorKind::source_changed, "remote file changed during the download (" + what + ")");
}

// Look at a response before using its body: the right range of the same file.
Status Download::check_response(Transfer& t) {
  t.checked = true;
  const std::uint64_t start = t.first * m_identity.chunk_size;
  if (!is_http(m_scheme)) return {};
  long code = 0;
  curl_easy_getinfo(t.easy.get(), CURLINFO_RESPONSE_CODE, &code);
  std::string etag = t.headers.get("etag");
  if (!m_remote.etag.empty() && !etag.empty() && etag != m_remote.etag)
    return changed("ETag " + m_remote.etag + " became " + etag);
  std::string modified = t.headers.get("last-modified");
  if (!m_remote.last_modified.empty() && !modified.empty() && modified != m_remote.last_modified)
    return changed("Last-Modified " + m_remote.last_modified + " became " + modified);
  if (code == 206) {
    // Content-Range: bytes START-END/TOTAL
    std::string range = t.headers.get("content-range");
    unsigned long long a = 0, b = 0, total = 0;
    if (std::sscanf(range.c_str(), "bytes %llu-%llu/%llu", &a, &b, &total) != 3)
      return make_error(ErrorKind::protocol, "206 response without a usable Content-Range ('" + range + "')");
    if (total != m_remote.size) return changed("size " + std::to_string(m_remote.size) + " became " + std::to_string(total));
    if (a != start) return make_error(ErrorKind::protocol, "asked for bytes from " + std::to_string(start) +
                                                               ", the server sent from " + std::to_string(a));
    return {};
  }
  if (code == 200) {
    curl_off_t length = -1;
    curl_easy_getinfo(t.easy.get(), CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
    if (length >= 0 && static_cast<std::uint64_t>(length) != m_remote.size)
      return changed("size " + std::to_string(m_remote.size) + " became " + std::to_string(length));
    // A whole-file answer to a whole-file range is what was asked for.
    if (start == 0 && t.end == m_chunks) return {};
    // The whole file instead of the range asked for. Never write it at the
    // range's offset: drop what comes before it, and from now on use one
    // connection, since every request costs a download of the prefix.
    if (!m_ranges_ignored)
      m_events.info("the server ignores Range requests (HTTP 200 instead of 206); continuing on one connection, "
                    "skipping the first " + std::to_string(start) + " bytes of the response");
    m_ranges_ignored = true;
    t.skip = start;
    if (t.end != m_chunks) m_abort_all = true; // other transfers and this unit must be rescheduled
    return {};
  }
  return make_error(ErrorKind::protocol, "unexpected HTTP " + std::to_string(code) + " to a ranged GET");
}

size_t Download::body(Transfer& t, const char* data, size_t n) {
  if (!t.checked) {
    if (auto st = check_response(t); !st) {
      t.error = st.error();
      return 0;
    }
  }
  if (m_abort_all) return 0;
  if (m_opt.stop && m_opt.stop->load()) {
    t.error = make_error(ErrorKind::interrupted, "interrupted; state saved");
    return 0;
  }
  t.last_data = Clock::now();
  const size_t total = n;
  m_report.bytes += n;
  if (t.skip > 0) {
    auto drop = static_cast<size_t>(std::min<std::uint64_t>(t.skip, n));
    t.skip -= drop;
    data += drop;
    n -= drop;
  }
  while (n > 0) {
    if (t.chunk >= t.end) {
      t.unit_done = true; // more than asked for (a 200 after the range's end): stop here
      return 0;
    }
    const auto len = static_cast<std::size_t>(chunk_length(t.chunk, m_identity.chunk_size, m_identity.size));
    const size_t take = std::min(n, len - t.fill);
    std::memcpy(t.buf.data() + t.fill, data, take);
    t.fill += take;
    data += take;
    n -= take;
    if (t.fill == len) {
      if (auto st = store_chunk(t); !st) {
        t.error = st.error();
        return 0;
      }
    }
  }
  if (t.chunk >= t.end && t.skip == 0 && t.end < m_chunks) t.unit_done = true;
  // Journal from here too: one curl_multi_perform can carry a whole SFTP
  // file, and the fetch loop only sees the end of it.
  if (auto st = commit(false); !st) {
    t.error = st.error();
    return 0;
  }
  pace();
  return total;
}

// --bwlimit, enforced in the body callback as well as through libcurl's
// per-handle limit: libcurl's SFTP download ignores
// CURLOPT_MAX_RECV_SPEED_LARGE and reads a whole small file in one
// curl_multi_perform. Sleeping here holds every connection of this
// download, which is what a limit over all of them means.
void Download::pace() {
  if (m_opt.bwlimit == 0) return;
  for (;;) {
    const double ahead = static_cast<double>(m_report.bytes - m_paced_bytes) / static_cast<double>(m_opt.bwlimit) -
                         std::chrono::duration<double>(Clock::now() - m_paced_from).count();
    if (ahead <= 0 || (m_opt.stop && m_opt.stop->load())) break;
    std::this_thread::sleep_for(std::chrono::duration<double>(std::min(ahead, 0.1)));
  }
  // Our own pause is not the server's silence (--timeout).
  if (m_active)
    for (auto& x : *m_active) x.last_data = Clock::now();
}

// A whole chunk arrived: hash it and write it at its place.
Status Download::store_chunk(Transfer& t) {
  const auto len = static_cast<std::size_t>(chunk_length(t.chunk, m_identity.chunk_size, m_identity.size));
  Hash128 h = xxh3_128({t.buf.data(), len});
  auto& state = m_state[t.chunk];
  if (state == 2) {
    // Already have it (a full-file response runs over it): it must not differ.
    if (m_hashes[t.chunk] != h) return changed("chunk " + std::to_string(t.chunk) + " differs from the copy fetched before");
  } else {
    if (t.chunk < m_verify_total) {
      // A chunk damaged at rest, fetched again: the server must send what
      // the journal recorded, or the file changed there since that run.
      if (h != m_prefix[t.chunk]) return changed("chunk " + std::to_string(t.chunk) + " differs from the copy journaled before");
      m_report.repaired_bytes += len;
      --m_repairs_pending;
      m_repairs_unsynced = true;
    }
    SESSCP_TRY(pwrite_all(m_part.get(), std::span<const std::uint8_t>(t.buf.data(), len), t.chunk * m_identity.chunk_size, "write " + m_part_path));
    m_hashes[t.chunk] = h;
    m_checked[t.chunk] = 1;
    state = 2;
  }
  ++t.chunk;
  t.fill = 0;
  return {};
}

// Make the contiguous prefix of written chunks durable and journal it. A
// chunk written out of order waits until every chunk before it is there:
// the journal format proves a prefix, nothing else.
Status Download::commit(bool force) {
  std::uint64_t contiguous = m_journaled;
  while (contiguous < m_chunks && m_state[contiguous] == 2) ++contiguous;
  // Repaired chunks lie below m_journaled: the journal already holds their
  // hashes, they only need to be made durable.
  if (contiguous == m_journaled && !m_repairs_unsynced) return {};
  const std::uint64_t pending = (contiguous - m_journaled) * m_identity.chunk_size;
  if (!force && pending < m_opt.sync_bytes && Clock::now() - m_last_commit < std::chrono::seconds(1)) return {};
  // fdatasync before the journal append: a record must never vouch for data
  // that is not on disk yet.
  if (fdatasync(m_part.get()) != 0) return errno_error(ErrorKind::io, "fdatasync " + m_part_path, errno);
  m_repairs_unsynced = false;
  while (m_journaled < contiguous) {
    auto end = std::min<std::uint64_t>(contiguous, m_journaled + checkpoint::k_max_record_hashes);
    SESSCP_TRY(m_journal->append({++m_serial, m_journaled,
                                  {m_hashes.begin() + static_cast<std::ptrdiff_t>(m_journaled),
                                   m_hashes.begin() + static_cast<std::ptrdiff_t>(end)}}));
    m_journaled = end;
  }
  m_last_commit = Clock::now();
  m_events.progress(m_identity.name, std::min(m_journaled * m_identity.chunk_size, m_identity.size), m_identity.size);
  return {};
}

// The most chunks one request from chunk `first` asks for.
std::uint64_t Download::unit_chunks(std::uint64_t first, int connections) const {
  if (connections <= 1) return m_chunks - first;
  // Several units per connection so that fast connections take over the
  // tail, but at least 4 MiB each (aria2 splits no finer than 20 MiB by
  // default): each request costs a round trip, and servers that limit the
  // rate per request often let the first second's worth through at once.
  // At most 16 MiB: only the contiguous prefix is journaled, so a kill
  // can cost up to connections x unit of data fetched out of order.
  const std::uint64_t min_unit = std::max<std::uint64_t>(1, (4u << 20) / m_identity.chunk_size);
  const std::uint64_t max_unit = std::max<std::uint64_t>(min_unit, (16u << 20) / m_identity.chunk_size);
  return std::clamp<std::uint64_t>((m_chunks - first) / (static_cast<std::uint64_t>(connections) * 4), min_unit,
                                   max_unit);
}

// Ask for the next run of chunks nobody has and nobody is fetching. Chunks
// damaged at rest lie below m_journaled, where the search starts then.
Status Download::start_transfer(CURLM* multi, std::list<Transfer>& active) {
  std::uint64_t first = std::min(m_free_from, m_journaled);
  while (first < m_chunks && m_state[first] != 0) ++first;
  m_free_from = first;
  if (first >= m_chunks) return {};
  const int connections = m_ranges_ignored ? 1 : std::max(1, m_opt.connections);
  const std::uint64_t unit = unit_chunks(first, connections);
  std::uint64_t end = first;
  while (end < m_chunks && end - first < unit && (m_state[end] == 0 || m_ranges_ignored)) ++end;

  auto& t = active.emplace_back();
  t.owner = this;
  t.first = t.chunk = first;
  t.end = end;
  t.buf.resize(m_identity.chunk_size);
  auto easy = make_easy(m_opt.url, m_opt.url_options, t.errbuf);
  if (!easy) {
    active.pop_back();
    return easy.error();
  }
  t.easy = std::move(*easy);
  CURL* h = t.easy.get();
  const std::uint64_t from = first * m_identity.chunk_size;
  const std::uint64_t to = std::min(end * std::uint64_t{m_identity.chunk_size}, m_identity.size) - 1;
  std::string range = std::to_string(from) + "-" + std::to_string(to);
  std::string asked = "bytes " + range;
  if (m_ranges_ignored && !is_http(m_scheme) && from > 0) {
    // An FTP server that refused REST: the whole file, dropping what
    // precedes the first missing chunk (as for an HTTP 200 to a Range).
    t.skip = from;
    asked = "the whole file, skipping the first " + std::to_string(from) + " bytes";
  } else {
    curl_easy_setopt(h, CURLOPT_RANGE, range.c_str());
  }
  curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &t.headers);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(h, CURLOPT_PRIVATE, &t);
  // libcurl reads 16 KiB per recv by default: 8192 recv+poll pairs for
  // 128 MiB (strace). 512 KiB cuts the system calls 32-fold.
  curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 512L * 1024);
  if (m_opt.bwlimit > 0)
    curl_easy_setopt(h, CURLOPT_MAX_RECV_SPEED_LARGE,
                     static_cast<curl_off_t>(std::max<std::uint64_t>(1, m_opt.bwlimit / static_cast<std::uint64_t>(connections))));
  for (std::uint64_t i = first; i < end; ++i)
    if (m_state[i] == 0) m_state[i] = 1;
  m_events.debug("GET " + m_shown_url + " " + asked);
  if (CURLMcode mc = curl_multi_add_handle(multi, h); mc != CURLM_OK)
    return make_error(ErrorKind::internal, std::string("curl_multi_add_handle: ") + curl_multi_strerror(mc));
  return {};
}

// Take a transfer out of the multi handle and give its unfinished chunks back.
void Download::release(CURLM* multi, Transfer& t) {
  curl_multi_remove_handle(multi, t.easy.get());
  for (std::uint64_t i = t.first; i < t.end; ++i)
    if (m_state[i] == 1) m_state[i] = 0;
  m_free_from = std::min(m_free_from, t.first);
}

// Look at every transfer that ended; the first failure is the attempt's.
Status Download::reap(CURLM* multi, std::list<Transfer>& active) {
  Status result;
  int left = 0;
  while (CURLMsg* msg = curl_multi_info_read(multi, &left)) {
    if (msg->msg != CURLMSG_DONE) continue;
    Transfer* t = nullptr;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &t);
    CURLcode rc = msg->data.result;
    long code = 0;
    curl_easy_getinfo(t->easy.get(), CURLINFO_RESPONSE_CODE, &code);
    if (t->error) {
      if (result) result = *t->error;
    } else if (rc == CURLE_OK || (rc == CURLE_WRITE_ERROR && t->unit_done)) {
      if (t->chunk < t->end && result)
        result = make_error(ErrorKind::disconnected, "the server ended the response early (at chunk " +
                                                         std::to_string(t->chunk) + " of " + std::to_string(t->end) + ")");
    } else if ((code == 416 || (rc == CURLE_BAD_DOWNLOAD_RESUME && is_ftp(m_scheme))) && result) {
      // HTTP 416, or libcurl saw FTP's SIZE below the REST offset.
      result = changed("the server says the range is past the end of the file");
    } else if (rc == CURLE_FTP_COULDNT_USE_REST && t->first > 0 && !is_http(m_scheme)) {
      // The FTP server cannot start a transfer at an offset: from now on
      // fetch the whole file on one connection and skip what we have.
      if (!m_ranges_ignored)
        m_events.info("the FTP server refuses REST (restarting a transfer at an offset); continuing on one "
                      "connection, fetching the file from its start and skipping the bytes already here");
      m_ranges_ignored = true;
    } else if (result) {
      result = transfer_error(rc, code, t->errbuf, "GET " + m_shown_url);
    }
    release(multi, *t);
    active.remove_if([&](const Transfer& x) { return &x == t; });
  }
  return result;
}

// --timeout means what it means for TCP sessions: this long without a
// byte ends the attempt. libcurl's low-speed check alone averages over
// ~5 s of samples and noticed a stall after 7 s with --timeout 2.
Status Download::check_silence(const std::list<Transfer>& active) const {
  const auto silence = std::chrono::duration<double>(m_opt.url_options.timeout_s);
  for (const auto& t : active)
    if (Clock::now() - t.last_data > silence)
      return make_error(ErrorKind::timeout, "GET " + m_shown_url + ": no data from the server for " +
                                                std::to_string(static_cast<int>(m_opt.url_options.timeout_s)) + " s");
  return {};
}

// --verify-resume full: read chunks [0, m_verify_total) back on a thread of
// their own while the rest arrives, instead of before the first request.
void Download::start_reverifier(CURLM* multi) {
  m_verify_checked = 0;
  m_repairs_pending = 0;
  m_repairs_unsynced = false;
  if (m_verify_total == 0) return;
  std::vector<Hash128> expected(m_prefix.begin(), m_prefix.begin() + static_cast<std::ptrdiff_t>(m_verify_total));
  // curl_multi_wakeup is the one libcurl call that is safe from another
  // thread: news ends the fetch loop's curl_multi_poll at once.
  m_reverifier = std::make_unique<checkpoint::Reverifier>(m_part.get(), m_identity.chunk_size, m_identity.size,
                                                          std::move(expected), [multi] { curl_multi_wakeup(multi); });
  m_events.debug("re-verifying " + std::to_string(m_verify_total) + " journaled chunks of " + m_part_path +
                 " in the background");
}

// Take the Reverifier's news: chunks proven, chunks damaged at rest (given
// back to the scheduler: state free, below its cursor), or a read error.
Status Download::poll_reverifier() {
  if (!m_reverifier) return {};
  auto news = m_reverifier->take();
  if (news.error)
    return make_error(ErrorKind::io, "cannot re-verify " + m_part_path + " (" + news.error->message +
                                         "); kept it and its journal");
  std::size_t next = 0;
  for (std::uint64_t i = m_verify_checked; i < news.checked; ++i) {
    if (next < news.damaged.size() && news.damaged[next] == i) {
      ++next;
      m_state[i] = 0;
      ++m_repairs_pending;
    } else {
      m_checked[i] = 1;
    }
  }
  const auto bytes = [&](std::uint64_t chunks) { return std::min(chunks * m_identity.chunk_size, m_identity.size); };
  m_report.reverified_bytes += bytes(news.checked) - bytes(m_verify_checked);
  m_verify_checked = news.checked;
  if (!news.damaged.empty()) {
    m_free_from = std::min(m_free_from, news.damaged.front());
    m_report.damaged_chunks += news.damaged.size();
    report_damage(news.damaged);
  }
  if (news.done) {
    m_reverifier.reset();
    m_events.debug("re-verification done: " + std::to_string(m_verify_checked) + " chunks read back");
  }
  return {};
}

void Download::report_damage(const std::vector<std::uint64_t>& damaged) {
  constexpr std::size_t k_ranges_shown = 4;
  auto ranges = checkpoint::to_ranges(damaged);
  std::string list;
  for (std::size_t k = 0; k < ranges.size() && k < k_ranges_shown; ++k) {
    if (k > 0) list += ", ";
    list += std::to_string(ranges[k].first);
    if (ranges[k].count > 1) list += "-" + std::to_string(ranges[k].first + ranges[k].count - 1);
  }
  if (ranges.size() > k_ranges_shown) list += ", ...";
  const auto n = damaged.size();
  m_events.info(m_identity.name + ": " + std::to_string(n) + (n == 1 ? " chunk" : " chunks") +
                " damaged at rest in the partial (" + (n == 1 ? "chunk " : "chunks ") + list +
                "); fetching them again");
}

// Per-chunk state at the start of an attempt: the journaled prefix written.
void Download::reset_chunks() {
  m_state.assign(m_chunks, 0);
  m_hashes.assign(m_chunks, Hash128{});
  m_checked.assign(m_chunks, 0);
  for (std::uint64_t i = 0; i < m_journaled; ++i) {
    m_state[i] = 2;
    m_hashes[i] = m_prefix[i];
    m_checked[i] = i >= m_verify_total; // --verify-resume tail: trusted
  }
  m_free_from = m_journaled;
}

Status Download::fetch() {
  reset_chunks();
  m_last_commit = Clock::now();
  Multi multi(curl_multi_init());
  if (!multi) return make_error(ErrorKind::internal, "curl_multi_init failed");
  std::list<Transfer> active;
  auto drop_all = [&] {
    for (auto& t : active) release(multi.get(), t);
    active.clear();
  };
  Status result;
  m_events.phase(m_identity.name, Events::Phase::transferring, "");
  m_paced_from = Clock::now();
  m_paced_bytes = m_report.bytes;
  m_active = &active;
  start_reverifier(multi.get());
  // Until every byte is journaled and, on a resume, every earlier chunk is
  // read back and each damaged one fetched again.
  while (fetch_pending()) {
    if (m_opt.stop && m_opt.stop->load()) {
      result = make_error(ErrorKind::interrupted, "interrupted; state saved");
      break;
    }
    if (result = poll_reverifier(); !result) break;
    const int connections = m_ranges_ignored ? 1 : std::max(1, m_opt.connections);
    while (static_cast<int>(active.size()) < connections) {
      const auto before = active.size();
      if (auto st = start_transfer(multi.get(), active); !st) { result = st; break; }
      if (active.size() == before) break; // nothing left to ask for
    }
    if (!result) break;
    int running = 0;
    curl_multi_perform(multi.get(), &running);
    if (m_abort_all) {
      m_abort_all = false;
      drop_all();
      continue;
    }
    if (result = reap(multi.get(), active); !result) break;
    if (result = check_silence(active); !result) break;
    // With nothing in flight there is nothing to wait for: journal now.
    if (auto st = commit(active.empty()); !st) { result = st; break; }
    // Woken by data, by the Reverifier's news (curl_multi_wakeup), or after
    // 100 ms, which bounds how late a stop request or a damaged chunk is seen.
    if (fetch_pending() && (!active.empty() || m_reverifier)) curl_multi_poll(multi.get(), nullptr, 0, 100, nullptr);
  }
  drop_all();
  m_active = nullptr;
  m_reverifier.reset(); // before `multi`, which its notify wakes
  // Whatever happened, what is written in order is worth keeping; repaired
  // chunks are made durable here at the latest.
  if (auto st = commit(true); !st && result) result = st;
  return result;
}

// The digest reported for the file: over hashes of bytes this run saw.
Result<Hash128> Download::file_root() const {
  for (std::uint64_t i = 0; i < m_chunks; ++i)
    if (!m_checked[i] || m_state[i] != 2)
      return make_error(ErrorKind::internal, "chunk " + std::to_string(i) + " was neither read back nor fetched");
  return hash_list_root(m_hashes);
}

Status Download::verify_digests() {
  if (m_opt.sha256.empty() && m_opt.xxh128.empty()) return {};
  m_events.phase(m_identity.name, Events::Phase::finalising, "verifying the whole file");
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> sha(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> xxh(XXH3_createState(), XXH3_freeState);
  if (!sha || !xxh || EVP_DigestInit_ex(sha.get(), EVP_sha256(), nullptr) != 1 || XXH3_128bits_reset(xxh.get()) != XXH_OK)
    return make_error(ErrorKind::internal, "cannot set up the digests");
  std::vector<std::uint8_t> buf(4u << 20);
  std::uint64_t offset = 0;
  while (offset < m_identity.size) {
    ssize_t n = ::pread(m_part.get(), buf.data(), buf.size(), static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(ErrorKind::io, "read " + m_part_path, errno);
    if (n == 0) return make_error(ErrorKind::integrity, m_part_path + " is shorter than the file");
    const auto got = static_cast<std::size_t>(n);
    if (!m_opt.sha256.empty()) EVP_DigestUpdate(sha.get(), buf.data(), got);
    if (!m_opt.xxh128.empty()) XXH3_128bits_update(xxh.get(), buf.data(), got);
    offset += got;
  }
  auto keep = "; kept " + basename_of(m_part_path) + " and its journal: re-run with the right digest to finish "
              "without downloading again, or delete them to download anew";
  if (!m_opt.sha256.empty()) {
    std::uint8_t md[32];
    unsigned int len = 0;
    EVP_DigestFinal_ex(sha.get(), md, &len);
    auto got = to_hex({md, len});
    if (got != m_opt.sha256)
      return make_error(ErrorKind::integrity, "SHA-256 of the download is " + got + ", expected " + m_opt.sha256 + keep);
    m_events.info("SHA-256 verified: " + got);
  }
  if (!m_opt.xxh128.empty()) {
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits_digest(xxh.get()));
    auto got = to_hex({c.digest, sizeof c.digest});
    if (got != m_opt.xxh128)
      return make_error(ErrorKind::integrity, "XXH128 of the download is " + got + ", expected " + m_opt.xxh128 + keep);
    m_events.info("XXH128 verified: " + got);
  }
  return {};
}

// FTP answers carry no validator (HTTP's ETag, Last-Modified, Content-Range):
// a unit asked for after the file was replaced or rewritten on the server
// would be spliced onto the units fetched before. Stat the file again once
// every byte is here; if it changed, fetch it again from zero.
Status Download::recheck() {
  auto now = probe();
  if (!now) return now.error();
  if (now->size != m_remote.size)
    return changed("size " + std::to_string(m_remote.size) + " became " + std::to_string(now->size));
  if (now->mtime_s != m_remote.mtime_s)
    return changed("MDTM " + utc_time(m_remote.mtime_s) + " became " + utc_time(now->mtime_s));
  return {};
}

Status Download::finish() {
  SESSCP_TRY(verify_digests());
  m_events.phase(m_identity.name, Events::Phase::finalising, "");
  // Exact size and the server's mtime, durable, then an atomic rename; the
  // journal goes only once NAME is in place.
  int fd = m_part.get();
  if (ftruncate(fd, static_cast<off_t>(m_identity.size)) != 0)
    return errno_error(ErrorKind::io, "truncate " + m_part_path, errno);
  if (m_remote.mtime_s >= 0) {
    timespec times[2] = {{0, UTIME_OMIT}, {static_cast<time_t>(m_remote.mtime_s), 0}};
    if (futimens(fd, times) != 0) return errno_error(ErrorKind::io, "set mtime of " + m_part_path, errno);
  }
  if (fsync(fd) != 0) return errno_error(ErrorKind::io, "fsync " + m_part_path, errno);
  if (::rename(m_part_path.c_str(), m_out.c_str()) != 0)
    return errno_error(ErrorKind::cannot_create, "rename " + m_part_path + " to " + m_out, errno);
  SESSCP_TRY(fsync_dir(dirname_of(m_out)));
  m_journal.reset();
  if (::unlink(m_journal_path.c_str()) != 0) return errno_error(ErrorKind::io, "remove " + m_journal_path, errno);
  return fsync_dir(dirname_of(m_out));
}

Status Download::attempt() {
  m_restart = false;
  m_ranges_ignored = false;
  m_abort_all = false;
  m_identity.name = basename_of(m_out);
  auto remote = probe();
  if (!remote) return remote.error();
  m_report.size = remote->size;
  m_events.offered(m_identity.name, remote->size);

  // Already complete: NAME has the server's size and mtime, and no journal
  // says a download of it is under way.
  struct stat fst{}, jst{};
  fstat(m_lock.get(), &jst);
  if (jst.st_size == 0 && remote->mtime_s >= 0 && ::stat(m_out.c_str(), &fst) == 0 && S_ISREG(fst.st_mode) &&
      static_cast<std::uint64_t>(fst.st_size) == remote->size && fst.st_mtim.tv_sec == remote->mtime_s &&
      ::access(m_part_path.c_str(), F_OK) != 0) {
    ::unlink(m_journal_path.c_str());
    m_report.state = FileReport::State::already_complete;
    m_report.resumed_at = remote->size;
    return {};
  }
  SESSCP_TRY(plan(*remote));
  const std::uint64_t offset = std::min(m_journaled * m_identity.chunk_size, m_identity.size);
  // The summary's resume point is where this process started; later
  // attempts (--retry) add to the bytes received instead.
  if (!m_attempted) m_report.resumed_at = offset;
  if (offset > 0 || m_attempted) m_events.resumed(m_identity.name, offset, m_identity.size);
  m_attempted = true;
  if (offset > 0) m_events.debug("journal confirms " + std::to_string(m_journaled) + " chunks");
  SESSCP_TRY(fetch());
  if (is_ftp(m_scheme)) SESSCP_TRY(recheck());
  auto root = file_root();
  if (!root) return root.error();
  SESSCP_TRY(finish());
  m_report.file_root = *root;
  m_report.state = FileReport::State::complete;
  return {};
}

// Where the download goes: -o PATH, -o DIR/ (the URL's name inside), or the
// URL's name in the current directory.
Result<std::string> output_path(const GetOptions& o) {
  std::string name = file_name_of(o.url);
  bool name_ok = !name.empty() && name != "." && name != "..";
  struct stat st{};
  if (!o.output.empty() && !(::stat(o.output.c_str(), &st) == 0 && S_ISDIR(st.st_mode))) return o.output;
  if (!name_ok) return make_error(ErrorKind::usage, "cannot tell a file name from the URL; use -o PATH");
  return o.output.empty() ? name : o.output + "/" + name;
}

Status run_attempts(const GetOptions& o, Events& events, FileReport& report, Download& download);

} // namespace

Result<std::string> normalise_hex(const std::string& hex, std::size_t bits, const char* option) {
  std::string h = lower(hex);
  bool ok = h.size() == bits / 4 && std::all_of(h.begin(), h.end(), [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
  if (!ok)
    return make_error(ErrorKind::usage, std::string("bad ") + option + " '" + hex + "' (" + std::to_string(bits / 4) +
                                            " hex digits)");
  return h;
}

Status get_url(const GetOptions& o, Events& events, FileReport& report) {
  auto out = output_path(o);
  if (!out) return out.error();
  report.name = basename_of(*out);
  Download download(o, events, report, *out);
  SESSCP_TRY(download.lock());
  auto status = run_attempts(o, events, report, download);
  if (!status) download.tidy();
  return status;
}

namespace {

Status run_attempts(const GetOptions& o, Events& events, FileReport& report, Download& download) {
  auto start = Clock::now();
  Backoff backoff(o.retry);
  int attempt = 0, restarts = 0;
  for (;;) {
    auto status = download.attempt();
    report.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (status) return status;
    auto kind = status.error().kind;
    report.state = exit_code_for(kind) == exit_code::k_temp_fail ? FileReport::State::interrupted
                                                                 : FileReport::State::failed;
    if (download.restart_requested() && ++restarts <= k_max_restarts) {
      events.info(status.error().message + "; restarting from zero");
      download.discard();
      continue;
    }
    if (!o.retry.enabled() || !retryable(kind) || (o.stop && o.stop->load())) return status;
    // As send --retry does: back off, then resume from the journal.
    SESSCP_TRY(wait_to_retry(backoff, ++attempt, report.seconds, o.retry.retries, status.error(), events,
                             report.name, o.stop));
    ++report.reconnects;
  }
}

} // namespace

} // namespace sesscp::url
