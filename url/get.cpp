// `sesscp get URL`: the Download's probe, resume plan (journal, identity,
// --verify-resume) and publish, and the attempt loop; the transfers
// themselves are in url/get_fetch.cpp.
#include "url/get.h"

#include "base/file_io.h"
#include "checkpoint/journal.h"
#include "checkpoint/verify.h"
#include "url/attempts.h"
#include "url/get_download.h"

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
#include <memory>
#include <vector>

namespace sesscp::url {

namespace {

using get_detail::Clock;
using get_detail::Download;
using get_detail::Remote;
using checkpoint::chunk_count;

constexpr int k_max_restarts = 3; // remote changed during one run

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

size_t discard_body(char*, size_t size, size_t count, void*) { return size * count; }

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

} // namespace

namespace get_detail {

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

void Download::tidy() {
  struct stat jst{}, pst{};
  if (fstat(m_lock.get(), &jst) != 0 || jst.st_size != 0) return;
  bool part = ::stat(m_part_path.c_str(), &pst) == 0;
  if (part && pst.st_size != 0) return;
  if (part) ::unlink(m_part_path.c_str());
  ::unlink(m_journal_path.c_str());
}

void Download::discard() {
  m_journal.reset();
  if (ftruncate(m_lock.get(), 0) != 0) {
    // plan() then finds a journal that does not match and starts over anyway.
  }
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
    auto fresh = checkpoint::Journal::rewrite(m_journal_path, m_identity, replay.chunk_hashes);
    if (!fresh) return fresh.error();
    m_journal.emplace(std::move(*fresh));
    m_serial = m_journal->last_serial();
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
  m_identity.name = m_opt.name.empty() ? basename_of(m_out) : m_opt.name;
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

} // namespace get_detail

namespace {

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
  report.name = o.name.empty() ? basename_of(*out) : o.name;
  Download download(o, events, report, *out);
  SESSCP_TRY(download.lock());
  int restarts = 0;
  auto status = run_attempts(o.retry, o.stop, events, report, [&] { return download.attempt(); },
                             [&](const Error& failure) {
                               if (!download.restart_requested() || ++restarts > k_max_restarts) return false;
                               events.info(failure.message + "; restarting from zero");
                               download.discard();
                               return true;
                             });
  if (!status) download.tidy();
  return status;
}

} // namespace sesscp::url
