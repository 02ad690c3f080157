#include "s3/client.h"

#include "s3/xml.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>

namespace sesscp::s3 {

namespace {

constexpr int k_attempts = 8;

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* x = static_cast<Exchange*>(user);
  x->response.body.append(data, size * count);
  return size * count;
}

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto* x = static_cast<Exchange*>(user);
  std::string line(data, size * count);
  if (line.rfind("HTTP/", 0) == 0) x->response.headers.clear(); // a new response (100 Continue)
  auto colon = line.find(':');
  if (colon == std::string::npos) return size * count;
  std::string name = line.substr(0, colon);
  for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string value = line.substr(colon + 1);
  value.erase(0, value.find_first_not_of(" \t"));
  while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' ')) value.pop_back();
  x->response.headers[name] = value;
  return size * count;
}

size_t on_read(char* buffer, size_t size, size_t count, void* user) {
  auto* x = static_cast<Exchange*>(user);
  const Request& r = x->request;
  const std::uint8_t* data = r.data ? r.data : reinterpret_cast<const std::uint8_t*>(r.body.data());
  std::size_t total = r.data ? r.size : r.body.size();
  std::size_t n = std::min(size * count, total - x->sent);
  std::memcpy(buffer, data + x->sent, n);
  x->sent += n;
  return n;
}

#define S3_SETOPT(h, opt, value)                                                             \
  do {                                                                                       \
    if (CURLcode rc_ = curl_easy_setopt(h, opt, value); rc_ != CURLE_OK)                     \
      return make_error(ErrorKind::internal, std::string("curl_easy_setopt " #opt ": ") +   \
                                                 curl_easy_strerror(rc_));                   \
  } while (0)

Status set_method(CURL* h, Exchange& x) {
  const Request& r = x.request;
  if (r.method == "HEAD") {
    S3_SETOPT(h, CURLOPT_NOBODY, 1L);
  } else if (r.method == "PUT") {
    S3_SETOPT(h, CURLOPT_UPLOAD, 1L);
    S3_SETOPT(h, CURLOPT_READFUNCTION, on_read);
    S3_SETOPT(h, CURLOPT_READDATA, &x);
    S3_SETOPT(h, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(r.data ? r.size : r.body.size()));
  } else if (r.method == "POST") {
    // In memory, so that libcurl can hash it for the signature.
    S3_SETOPT(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(r.body.size()));
    S3_SETOPT(h, CURLOPT_POSTFIELDS, r.body.c_str());
  } else if (r.method == "DELETE") {
    S3_SETOPT(h, CURLOPT_CUSTOMREQUEST, "DELETE");
  }
  return {};
}

} // namespace

std::string Response::code() const { return xml_text(body, "Code"); }

Status Client::prepare(Exchange& x) {
  url::UrlOptions uo;
  uo.cacert = m_config.cacert;
  uo.timeout_s = m_config.timeout_s;
  uo.password_env.clear();
  const Request& r = x.request;
  auto easy = url::make_easy(request_url(m_config, r.bucket, r.key, r.query), uo, x.errbuf);
  if (!easy) return easy.error();
  x.easy = std::move(*easy);
  CURL* h = x.easy.get();
  x.response = {};
  x.sent = 0;
  // Redirects would be re-signed for another host: S3 answers 301 with the
  // right region instead, which is an error to report.
  S3_SETOPT(h, CURLOPT_FOLLOWLOCATION, 0L);
  std::string sigv4 = "aws:amz:" + m_config.region + ":s3";
  S3_SETOPT(h, CURLOPT_AWS_SIGV4, sigv4.c_str());
  S3_SETOPT(h, CURLOPT_USERNAME, m_config.credentials.access_key.c_str());
  S3_SETOPT(h, CURLOPT_PASSWORD, m_config.credentials.secret_key.c_str());
  S3_SETOPT(h, CURLOPT_WRITEFUNCTION, on_body);
  S3_SETOPT(h, CURLOPT_WRITEDATA, &x);
  S3_SETOPT(h, CURLOPT_HEADERFUNCTION, on_header);
  S3_SETOPT(h, CURLOPT_HEADERDATA, &x);
  // No wait for "100 Continue" before each part's body. (An "Expect:" header
  // would remove it, but libcurl would sign that empty header too.)
  S3_SETOPT(h, CURLOPT_EXPECT_100_TIMEOUT_MS, 0L);
  SESSCP_TRY(set_method(h, x));
  curl_slist* list = nullptr;
  auto add = [&](const std::string& line) { list = curl_slist_append(list, line.c_str()); };
  // libcurl 7.88 signs the SHA-256 of an empty payload and sends no
  // x-amz-content-sha256, which S3 and RGW then take as UNSIGNED-PAYLOAD: the
  // signatures differ. Given this header, libcurl signs its value instead.
  // Content-MD5 covers each body's integrity.
  add(k_unsigned_payload);
  if (!m_config.credentials.session_token.empty()) add("x-amz-security-token: " + m_config.credentials.session_token);
  for (const auto& line : r.headers) add(line);
  x.headers.reset(list);
  S3_SETOPT(h, CURLOPT_HTTPHEADER, list);
  return {};
}

Status Client::finish(Exchange& x, CURLcode code) {
  long status = 0;
  curl_easy_getinfo(x.easy.get(), CURLINFO_RESPONSE_CODE, &status);
  x.response.status = status;
  if (code != CURLE_OK) return url::transfer_error(code, status, x.errbuf, x.request.what);
  return {};
}

Result<Response> Client::send(const Request& request) {
  for (int attempt = 1;; ++attempt) {
    Exchange x;
    x.request = request;
    SESSCP_TRY(prepare(x));
    bool named = request.what.compare(0, request.method.size() + 1, request.method + " ") == 0;
    m_events.debug("s3: " + (named ? request.what : request.method + " " + request.what));
    auto done = finish(x, curl_easy_perform(x.easy.get()));
    bool again = done ? retryable(x.response) : (done.error().kind == ErrorKind::disconnected ||
                                                 done.error().kind == ErrorKind::timeout);
    if (!again || attempt == k_attempts) {
      if (!done) return done.error();
      return std::move(x.response);
    }
    // A transfer error's message names the request already.
    m_events.info((done ? request.what + ": HTTP " + std::to_string(x.response.status) + " " + x.response.code()
                        : done.error().message) +
                  "; retrying (" + std::to_string(attempt) + "/" + std::to_string(k_attempts - 1) + ")");
    backoff(attempt);
  }
}

bool retryable(const Response& r) {
  return r.status == 500 || r.status == 502 || r.status == 503 || r.status == 504 || r.code() == "SlowDown";
}

void backoff(int attempt) {
  static thread_local std::mt19937 rng{std::random_device{}()};
  double base = std::min(8.0, 0.25 * static_cast<double>(1u << std::min(attempt - 1, 6)));
  std::uniform_real_distribution<double> jitter(0.5, 1.0);
  std::this_thread::sleep_for(std::chrono::duration<double>(base * jitter(rng)));
}

Error response_error(const Response& r, const std::string& what) {
  std::string code = r.code();
  std::string msg = what + ": server answered HTTP " + std::to_string(r.status) + (code.empty() ? "" : " " + code);
  if (code == "BadDigest" || code == "InvalidDigest" || code == "XAmzContentSHA256Mismatch")
    return make_error(ErrorKind::integrity, msg + " (the data arrived damaged)");
  if (r.status == 401 || r.status == 403) {
    std::string why = code == "SignatureDoesNotMatch" ? " (wrong secret key?)"
                      : code == "InvalidAccessKeyId"  ? " (unknown access key)"
                                                      : " (no permission?)";
    return make_error(ErrorKind::auth, msg + why);
  }
  if (code == "NoSuchBucket") return make_error(ErrorKind::refused, msg + " (no such bucket)");
  if (r.status == 404) return make_error(ErrorKind::refused, msg + " (not found)");
  if (retryable(r)) return make_error(ErrorKind::busy, msg);
  return make_error(ErrorKind::refused, msg);
}

} // namespace sesscp::s3
