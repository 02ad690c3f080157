// The parts of an upload over `--connections` concurrent requests on one
// libcurl multi handle, each journaled once the server confirmed it.
#include "s3/upload_detail.h"
#include "s3/xml.h"

#include "base/hash.h"

#include <openssl/evp.h>

#include <deque>
#include <list>
#include <memory>
#include <thread>

namespace sesscp::s3::detail {

namespace {

// How often one part is tried after throttling or a network failure, and
// after the server found it damaged (BadDigest: once more, then exit 65).
constexpr int k_part_attempts = 8;
constexpr int k_digest_retries = 1;

struct MultiDeleter {
  void operator()(CURLM* m) const { curl_multi_cleanup(m); }
};

} // namespace

PartDigest digest_part(const std::uint8_t* data, std::size_t size, std::uint32_t chunk) {
  PartDigest d;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data, size, md, &len, EVP_md5(), nullptr);
  d.md5_hex = to_hex({md, len});
  unsigned char b64[64];
  int n = EVP_EncodeBlock(b64, md, static_cast<int>(len));
  d.md5_base64.assign(reinterpret_cast<char*>(b64), static_cast<std::size_t>(n));
  RootBuilder root;
  for (std::size_t off = 0; off < size; off += chunk) root.add(xxh3_128({data + off, std::min<std::size_t>(chunk, size - off)}));
  auto r = root.digest();
  d.xxh_hex = to_hex(r);
  return d;
}

// One part on its way: its bytes, digests and request.
struct PartSlot {
  std::uint32_t number = 0;
  int attempts = 0, digest_retries = 0;
  std::vector<std::uint8_t> data;
  PartDigest digest;
  Exchange x;
};

struct Pending {
  std::uint32_t number;
  int attempts, digest_retries;
  Clock::time_point not_before;
};

class PartSender {
public:
  explicit PartSender(Upload& u) : m_u(u), m_multi(curl_multi_init()) {}
  Status run();

private:
  Status start(const Pending& p);
  Status reap();
  Status settle(PartSlot& slot, Status done);
  Upload& m_u;
  std::unique_ptr<CURLM, MultiDeleter> m_multi;
  std::deque<Pending> m_queue;
  std::list<std::unique_ptr<PartSlot>> m_active;
};

Status PartSender::start(const Pending& p) {
  auto slot = std::make_unique<PartSlot>();
  slot->number = p.number;
  slot->attempts = p.attempts + 1;
  slot->digest_retries = p.digest_retries;
  auto data = m_u.read_part(p.number);
  if (!data) return data.error();
  slot->data = std::move(*data);
  slot->digest = digest_part(slot->data.data(), slot->data.size(), m_u.m_opt.chunk_size);
  Request& r = slot->x.request;
  r.method = "PUT";
  r.bucket = m_u.m_opt.dest.bucket;
  r.key = m_u.m_opt.dest.key;
  r.query = "partNumber=" + std::to_string(p.number) + "&uploadId=" + uri_encode(m_u.m_state.upload_id, false);
  r.data = slot->data.data();
  r.size = slot->data.size();
  r.headers = {"Content-MD5: " + slot->digest.md5_base64};
  r.what = "PUT part " + std::to_string(p.number) + " of " + m_u.what();
  SESSCP_TRY(m_u.m_client.prepare(slot->x));
  m_u.m_client.events().debug("s3: PUT part " + std::to_string(p.number) + " (" + std::to_string(r.size) + " bytes)");
  curl_easy_setopt(slot->x.easy.get(), CURLOPT_PRIVATE, slot.get());
  if (curl_multi_add_handle(m_multi.get(), slot->x.easy.get()) != CURLM_OK)
    return make_error(ErrorKind::internal, "curl_multi_add_handle failed");
  m_active.push_back(std::move(slot));
  return {};
}

// What a finished part means: journaled, queued again, or the end.
Status PartSender::settle(PartSlot& slot, Status done) {
  const Response& resp = slot.x.response;
  const std::string& what = slot.x.request.what;
  bool transient = done ? retryable(resp)
                        : (done.error().kind == ErrorKind::disconnected || done.error().kind == ErrorKind::timeout);
  if (done && resp.ok()) {
    std::string etag = unquote(resp.header("etag"));
    // S3's part ETag is the MD5 of the bytes it stored.
    if (etag != slot.digest.md5_hex)
      return make_error(ErrorKind::integrity, what + ": server's ETag " + etag + " is not the part's MD5 " + slot.digest.md5_hex);
    PartRecord rec{slot.number, etag, slot.digest.md5_hex, slot.digest.xxh_hex};
    SESSCP_TRY(m_u.m_journal->add(rec));
    m_u.m_state.parts[slot.number] = rec;
    m_u.m_done_bytes += slot.data.size();
    m_u.m_report.bytes += slot.data.size();
    m_u.m_client.events().progress(m_u.m_report.name, m_u.m_done_bytes, m_u.m_id.size);
    return {};
  }
  if (done && response_error(resp, what).kind == ErrorKind::integrity && slot.digest_retries < k_digest_retries) {
    m_u.m_client.events().info(what + ": the server found it damaged (" + resp.code() + "); sending it again");
    m_queue.push_front({slot.number, slot.attempts, slot.digest_retries + 1, Clock::now()});
    return {};
  }
  if (transient && slot.attempts < k_part_attempts) {
    // A transfer error's message names the part already.
    m_u.m_client.events().info((done ? what + ": HTTP " + std::to_string(resp.status) + " " + resp.code()
                                     : done.error().message) + "; retrying");
    double delay = std::min(8.0, 0.25 * double(1u << std::min(slot.attempts, 6)));
    m_queue.push_front({slot.number, slot.attempts, slot.digest_retries,
                        Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(delay))});
    return {};
  }
  if (!done) return done.error();
  if (resp.code() == "NoSuchUpload" || (resp.status == 404 && resp.code() == "NoSuchKey"))
    return make_error(ErrorKind::refused, what + ": upload id " + m_u.m_state.upload_id +
                                              " no longer exists on the server (expired or aborted); re-run to start a new upload");
  return response_error(resp, what);
}

Status PartSender::reap() {
  int left = 0;
  while (CURLMsg* msg = curl_multi_info_read(m_multi.get(), &left)) {
    if (msg->msg != CURLMSG_DONE) continue;
    PartSlot* slot = nullptr;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &slot);
    CURLcode code = msg->data.result;
    curl_multi_remove_handle(m_multi.get(), msg->easy_handle);
    auto done = m_u.m_client.finish(slot->x, code);
    auto st = settle(*slot, done);
    m_active.remove_if([slot](const auto& p) { return p.get() == slot; });
    SESSCP_TRY(st);
  }
  return {};
}

Status PartSender::run() {
  if (!m_multi) return make_error(ErrorKind::internal, "curl_multi_init failed");
  for (std::uint32_t n = 1; n <= m_u.part_count(); ++n)
    if (!m_u.m_state.parts.count(n)) m_queue.push_back({n, 0, 0, Clock::now()});
  m_u.m_client.events().phase(m_u.m_report.name, Events::Phase::transferring, "");
  while (!m_queue.empty() || !m_active.empty()) {
    if (m_u.m_opt.stop && m_u.m_opt.stop->load())
      return make_error(ErrorKind::interrupted, "upload of " + m_u.what() + " interrupted; re-run to resume");
    while (static_cast<int>(m_active.size()) < m_u.m_opt.connections && !m_queue.empty() &&
           m_queue.front().not_before <= Clock::now()) {
      Pending p = m_queue.front();
      m_queue.pop_front();
      SESSCP_TRY(start(p));
    }
    if (m_active.empty()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    int running = 0;
    curl_multi_perform(m_multi.get(), &running);
    SESSCP_TRY(reap());
    curl_multi_poll(m_multi.get(), nullptr, 0, 100, nullptr);
  }
  return {};
}

Status Upload::send_parts() {
  PartSender sender(*this);
  return sender.run();
}

} // namespace sesscp::s3::detail
