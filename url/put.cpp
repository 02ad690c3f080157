#include "url/put.h"

#include "base/file_io.h"
#include "checkpoint/journal.h"
#include "core/source.h"
#include "url/attempts.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <optional>
#include <vector>

namespace sesscp::url {

namespace {

// Largest remote journal read back (a header-only journal is ~60 bytes).
constexpr std::size_t k_max_remote_journal = 64 * 1024;

struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using Slist = std::unique_ptr<curl_slist, SlistDeleter>;

// A path argument of an SFTP quote command: double-quoted, \ and " escaped.
std::string quoted(const std::string& path) {
  std::string out = "\"";
  for (char c : path) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

// The server path of an sftp:// URL as quote commands want it: "/~/x" (the
// home directory in URLs) is "x", relative to the home directory.
std::string server_path(const std::string& url_text) {
  CURLU* u = curl_url();
  std::string path;
  char* p = nullptr;
  if (u && curl_url_set(u, CURLUPART_URL, url_text.c_str(), 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_PATH, &p, CURLU_URLDECODE) == CURLUE_OK && p)
    path = p;
  curl_free(p);
  curl_url_cleanup(u);
  if (path.rfind("/~/", 0) == 0) path = path.substr(3);
  return path;
}

// A response kept in memory, up to a limit.
struct Sink {
  std::vector<std::uint8_t> data;
  std::size_t limit = 0;
};

size_t collect(char* data, size_t size, size_t count, void* user) {
  auto* out = static_cast<Sink*>(user);
  const size_t n = size * count;
  if (out->data.size() + n > out->limit) return 0;
  out->data.insert(out->data.end(), data, data + n);
  return n;
}

size_t discard(char*, size_t size, size_t count, void*) { return size * count; }

struct ReadState {
  const SourceFile* source = nullptr;
  std::uint64_t offset = 0, end = 0;
  std::uint64_t sent = 0;
  const std::atomic<bool>* stop = nullptr;
  Events* events = nullptr;
  std::string name;
  std::uint64_t base = 0; // bytes already on the server before this upload
  std::optional<Error> error;
};

size_t read_source(char* buffer, size_t size, size_t count, void* user) {
  auto* s = static_cast<ReadState*>(user);
  if (s->stop && s->stop->load()) return CURL_READFUNC_ABORT;
  const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(size * count, s->end - s->offset));
  if (n == 0) return 0;
  if (auto st = s->source->read_at(s->offset, {reinterpret_cast<std::uint8_t*>(buffer), n}); !st) {
    s->error = st.error();
    return CURL_READFUNC_ABORT;
  }
  s->offset += n;
  s->sent += n;
  s->events->progress(s->name, s->offset, s->end);
  return n;
}

class Upload {
public:
  Upload(const PutOptions& o, Events& events, FileReport& report)
      : m_opt(o), m_events(events), m_report(report), m_shown(redact(o.url)), m_part_url(o.url + ".sesscp.part"),
        m_journal_url(o.url + ".sesscp.journal"), m_path(server_path(o.url)), m_part_path(m_path + ".sesscp.part"),
        m_journal_path(m_path + ".sesscp.journal") {}

  Status attempt();

private:
  struct Stat {
    bool exists = false;
    std::uint64_t size = 0;
    std::int64_t mtime_s = -1;
  };
  Result<Stat> stat_remote(const std::string& url);
  Result<std::vector<std::uint8_t>> fetch(const std::string& url, const std::string& range, std::size_t limit,
                                          bool missing_ok);
  Status quote(const std::vector<std::string>& commands, const std::string& what);
  Result<std::uint64_t> resume_point(const checkpoint::Identity& identity);
  Status start_fresh(const checkpoint::Identity& identity);
  Status send_from(std::uint64_t offset, std::uint64_t size);
  Status publish();

  const PutOptions& m_opt;
  Events& m_events;
  FileReport& m_report;
  std::string m_shown, m_part_url, m_journal_url, m_path, m_part_path, m_journal_path;
  std::optional<SourceFile> m_source;
  char m_errbuf[CURL_ERROR_SIZE] = {};
};

Result<Upload::Stat> Upload::stat_remote(const std::string& url) {
  auto easy = make_easy(url, m_opt.url_options, m_errbuf);
  if (!easy) return easy.error();
  CURL* h = easy->get();
  curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  curl_easy_setopt(h, CURLOPT_FILETIME, 1L);
  CURLcode rc = curl_easy_perform(h);
  Stat st;
  if (rc == CURLE_REMOTE_FILE_NOT_FOUND) return st;
  if (rc != CURLE_OK) return transfer_error(rc, 0, m_errbuf, "stat " + redact(url));
  curl_off_t length = -1, filetime = -1;
  curl_easy_getinfo(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &length);
  curl_easy_getinfo(h, CURLINFO_FILETIME_T, &filetime);
  st.exists = true;
  st.size = length > 0 ? static_cast<std::uint64_t>(length) : 0;
  st.mtime_s = filetime;
  return st;
}

Result<std::vector<std::uint8_t>> Upload::fetch(const std::string& url, const std::string& range, std::size_t limit,
                                                bool missing_ok) {
  auto easy = make_easy(url, m_opt.url_options, m_errbuf);
  if (!easy) return easy.error();
  CURL* h = easy->get();
  Sink sink;
  sink.limit = limit;
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink);
  if (!range.empty()) curl_easy_setopt(h, CURLOPT_RANGE, range.c_str());
  CURLcode rc = curl_easy_perform(h);
  if (rc == CURLE_REMOTE_FILE_NOT_FOUND && missing_ok) return std::vector<std::uint8_t>{};
  if (rc != CURLE_OK) return transfer_error(rc, 0, m_errbuf, "read " + redact(url));
  return std::move(sink.data);
}

Status Upload::quote(const std::vector<std::string>& commands, const std::string& what) {
  // A directory listing of "/" is the cheapest request that carries quote
  // commands on its connection.
  auto easy = make_easy(m_opt.url, m_opt.url_options, m_errbuf);
  if (!easy) return easy.error();
  CURL* h = easy->get();
  Slist list;
  for (const auto& c : commands) {
    curl_slist* next = curl_slist_append(list.get(), c.c_str());
    if (!next) return make_error(ErrorKind::internal, "out of memory");
    (void)list.release();
    list.reset(next);
  }
  curl_easy_setopt(h, CURLOPT_QUOTE, list.get());
  curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
  CURLcode rc = curl_easy_perform(h);
  if (rc != CURLE_OK) return transfer_error(rc, 0, m_errbuf, what);
  return {};
}

// Where the server's part file can be continued, or nothing to start over.
// The server cannot hash, so the last confirmed chunk is read back and
// compared with the source before anything is appended after it.
Result<std::uint64_t> Upload::resume_point(const checkpoint::Identity& identity) {
  auto journal = fetch(m_journal_url, "", k_max_remote_journal, true);
  if (!journal) return journal.error();
  if (journal->empty()) return std::uint64_t{0};
  auto replay = checkpoint::Journal::parse(*journal);
  if (!replay) {
    m_events.info("the server's journal is unusable (" + replay.error().message + "); restarting from zero");
    return std::uint64_t{0};
  }
  if (auto diff = checkpoint::identity_mismatch(replay->identity, identity); !diff.empty()) {
    m_events.info("source changed since the partial upload (" + diff + "); restarting from zero");
    return std::uint64_t{0};
  }
  auto part = stat_remote(m_part_url);
  if (!part) return part.error();
  if (!part->exists) return std::uint64_t{0};
  const std::uint64_t have = part->size;
  if (have > identity.size) {
    m_events.info("the server's partial file is longer than the source; restarting from zero");
    return std::uint64_t{0};
  }
  if (have == 0) return std::uint64_t{0};
  // Re-check the last whole chunk and whatever follows it.
  const std::uint64_t chunk = identity.chunk_size;
  const std::uint64_t whole = have / chunk;
  const std::uint64_t from = whole > 0 ? (whole - 1) * chunk : 0;
  auto remote = fetch(m_part_url, std::to_string(from) + "-" + std::to_string(have - 1), have - from, false);
  if (!remote) return remote.error();
  std::vector<std::uint8_t> local(have - from);
  SESSCP_TRY(m_source->read_at(from, local));
  if (*remote != local) {
    m_events.info("the server's copy of bytes " + std::to_string(from) + ".." + std::to_string(have - 1) +
                  " differs from the source; restarting from zero");
    return std::uint64_t{0};
  }
  m_events.debug("read back bytes " + std::to_string(from) + ".." + std::to_string(have - 1) + ": identical");
  return have;
}

// A journal header on the server: the identity of what the part file holds.
Status Upload::start_fresh(const checkpoint::Identity& identity) {
  char dir[] = "/tmp/sesscp-put.XXXXXX";
  if (!mkdtemp(dir)) return errno_error(ErrorKind::io, "mkdtemp", errno);
  std::string path = std::string(dir) + "/journal";
  std::vector<std::uint8_t> bytes;
  {
    auto journal = checkpoint::Journal::create(path, identity);
    if (!journal) {
      ::rmdir(dir);
      return journal.error();
    }
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st{};
    if (fd && fstat(fd.get(), &st) == 0) {
      bytes.resize(static_cast<std::size_t>(st.st_size));
      if (::pread(fd.get(), bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) bytes.clear();
    }
  }
  ::unlink(path.c_str());
  ::rmdir(dir);
  if (bytes.empty()) return make_error(ErrorKind::io, "could not build the journal header");
  auto easy = make_easy(m_journal_url, m_opt.url_options, m_errbuf);
  if (!easy) return easy.error();
  CURL* h = easy->get();
  struct Mem {
    const std::vector<std::uint8_t>* data;
    std::size_t at = 0;
  } mem{&bytes};
  auto reader = +[](char* buffer, size_t size, size_t count, void* user) -> size_t {
    auto* m = static_cast<Mem*>(user);
    const size_t n = std::min(size * count, m->data->size() - m->at);
    std::copy_n(m->data->data() + m->at, n, buffer);
    m->at += n;
    return n;
  };
  curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
  curl_easy_setopt(h, CURLOPT_FTP_CREATE_MISSING_DIRS, static_cast<long>(CURLFTP_CREATE_DIR));
  curl_easy_setopt(h, CURLOPT_READFUNCTION, reader);
  curl_easy_setopt(h, CURLOPT_READDATA, &mem);
  curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(bytes.size()));
  CURLcode rc = curl_easy_perform(h);
  if (rc != CURLE_OK) return transfer_error(rc, 0, m_errbuf, "write " + redact(m_journal_url));
  return {};
}

// Upload source bytes [offset, size) to the part file: appended after the
// `offset` bytes already there, or replacing the file when offset is 0.
Status Upload::send_from(std::uint64_t offset, std::uint64_t size) {
  auto easy = make_easy(m_part_url, m_opt.url_options, m_errbuf);
  if (!easy) return easy.error();
  CURL* h = easy->get();
  ReadState state;
  state.source = &*m_source;
  state.offset = offset;
  state.end = size;
  state.stop = m_opt.stop;
  state.events = &m_events;
  state.name = m_report.name;
  curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
  curl_easy_setopt(h, CURLOPT_APPEND, offset > 0 ? 1L : 0L);
  curl_easy_setopt(h, CURLOPT_FTP_CREATE_MISSING_DIRS, static_cast<long>(CURLFTP_CREATE_DIR));
  curl_easy_setopt(h, CURLOPT_READFUNCTION, read_source);
  curl_easy_setopt(h, CURLOPT_READDATA, &state);
  curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(size - offset));
  if (m_opt.bwlimit > 0)
    curl_easy_setopt(h, CURLOPT_MAX_SEND_SPEED_LARGE, static_cast<curl_off_t>(m_opt.bwlimit));
  m_events.phase(m_report.name, Events::Phase::transferring, "");
  CURLcode rc = curl_easy_perform(h);
  m_report.bytes += state.sent;
  if (state.error) return *state.error;
  if (rc == CURLE_ABORTED_BY_CALLBACK && m_opt.stop && m_opt.stop->load())
    return make_error(ErrorKind::interrupted, "interrupted; re-run to resume");
  if (rc != CURLE_OK) return transfer_error(rc, 0, m_errbuf, "write " + redact(m_part_url));
  return {};
}

Status Upload::publish() {
  m_events.phase(m_report.name, Events::Phase::finalising, "");
  // The source's mtime on the part, then the part replaces the final name
  // (SFTP v3 rename refuses an existing target, hence the rm), and only then
  // the journal goes: a crash in between leaves a final file that the next
  // run recognises as complete.
  char date[64];
  std::time_t t = static_cast<std::time_t>(m_source->mtime_ns() / 1'000'000'000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return quote({"mtime " + quoted(date) + " " + quoted(m_part_path), "*rm " + quoted(m_path),
                "rename " + quoted(m_part_path) + " " + quoted(m_path), "*rm " + quoted(m_journal_path)},
               "publish " + m_shown);
}

Status Upload::attempt() {
  auto source = SourceFile::open(m_opt.path);
  if (!source) return source.error();
  m_source.emplace(std::move(*source));
  const std::uint64_t size = m_source->size();
  m_report.size = size;
  auto fingerprint = m_source->fingerprint();
  if (!fingerprint) return fingerprint.error();
  checkpoint::Identity identity{m_report.name, size, m_source->mtime_ns(), m_opt.chunk_size, *fingerprint};
  m_events.phase(m_report.name, Events::Phase::connecting, m_shown);
  m_events.offered(m_report.name, size);

  // Already complete: the final file has the source's size and mtime and no
  // partial upload is under way.
  auto final_stat = stat_remote(m_opt.url);
  if (!final_stat) return final_stat.error();
  auto part_stat = stat_remote(m_part_url);
  if (!part_stat) return part_stat.error();
  if (final_stat->exists && !part_stat->exists && final_stat->size == size &&
      final_stat->mtime_s == m_source->mtime_ns() / 1'000'000'000) {
    m_report.state = FileReport::State::already_complete;
    m_report.resumed_at = size;
    return {};
  }
  m_events.phase(m_report.name, Events::Phase::verifying, "");
  auto offset = resume_point(identity);
  if (!offset) return offset.error();
  // The report keeps the first attempt's resume point (as send --retry does).
  if (m_report.reconnects == 0) m_report.resumed_at = *offset;
  if (*offset > 0 || m_report.reconnects > 0) m_events.resumed(m_report.name, *offset, size);
  if (*offset == 0) SESSCP_TRY(start_fresh(identity));
  if (*offset < size || *offset == 0) SESSCP_TRY(send_from(*offset, size));
  SESSCP_TRY(m_source->check_unchanged());
  SESSCP_TRY(publish());
  m_report.state = FileReport::State::complete;
  return {};
}

} // namespace

Status put_sftp(const PutOptions& o, Events& events, FileReport& report) {
  report.name = basename_of(server_path(o.url));
  if (report.name.empty()) return make_error(ErrorKind::usage, "the sftp:// URL must name a file: " + redact(o.url));
  // Each attempt a new Upload; the last one lives on through the backoff
  // that follows it, as it did when the loop held it.
  std::optional<Upload> upload;
  return run_attempts(o.retry, o.stop, events, report, [&] {
    upload.reset();
    upload.emplace(o, events, report);
    return upload->attempt();
  });
}

} // namespace sesscp::url
