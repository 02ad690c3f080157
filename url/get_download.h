// Inside `sesscp get`: the Download of one URL and its ranged transfers,
// shared by url/get.cpp (probe, resume plan, publish) and url/get_fetch.cpp
// (the libcurl multi loop, body callback, journaling). Not an API.
#pragma once

#include "checkpoint/journal.h"
#include "checkpoint/verify.h"
#include "url/get.h"

#include <chrono>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace sesscp::url::get_detail {

using Clock = std::chrono::steady_clock;

// What the server says about the file, from a HEAD (or FTP/SFTP stat).
struct Remote {
  std::uint64_t size = 0;
  std::int64_t mtime_s = -1;  // -1: unknown
  std::string etag;           // HTTP only
  std::string last_modified;  // HTTP only, as sent
};

// Response headers of the last response (a redirect starts a new set).
struct Headers {
  std::map<std::string, std::string> fields;
  std::string get(const std::string& name) const {
    auto it = fields.find(name);
    return it == fields.end() ? std::string() : it->second;
  }
};

// libcurl header callback: collects a response's fields into a Headers.
size_t on_header(char* data, size_t size, size_t count, void* user);

inline bool is_http(const std::string& scheme) { return scheme == "http" || scheme == "https"; }
inline bool is_ftp(const std::string& scheme) { return scheme == "ftp" || scheme == "ftps"; }

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
  void tidy();
  // Forget the partial download (the remote changed under it).
  void discard();

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

} // namespace sesscp::url::get_detail
