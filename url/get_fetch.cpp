// `sesscp get URL`: the Download's transfers: ranged requests on a libcurl
// multi handle, the body callback that hashes and writes whole chunks, the
// journaling of the contiguous prefix, and the background re-verification.
#include "url/get_download.h"

#include "base/file_io.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <span>
#include <thread>

namespace sesscp::url::get_detail {

namespace {

using checkpoint::chunk_length;

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  return t->owner->body(*t, data, size * count);
}

} // namespace

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
  const std::uint64_t before = m_journal->confirmed_chunks();
  auto appended = m_journal->append_chunks(
      std::span<const Hash128>(m_hashes).subspan(m_journaled, contiguous - m_journaled), m_serial);
  m_journaled += m_journal->confirmed_chunks() - before; // as far as it got, also on a failure
  SESSCP_TRY(appended);
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

} // namespace sesscp::url::get_detail
