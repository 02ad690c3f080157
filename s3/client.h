// Signed S3 requests over libcurl: SigV4 by CURLOPT_AWS_SIGV4, the
// credentials by CURLOPT_USERNAME/PASSWORD (never in a URL, a header we
// log, or a message), bodies from memory, answers kept in memory.
#pragma once

#include "core/events.h"
#include "s3/config.h"
#include "url/curl.h"

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace sesscp::s3 {

struct Request {
  std::string method = "GET";          // GET, HEAD, PUT, POST, DELETE
  std::string bucket, key;
  std::string query;                   // sorted name=value pairs joined by '&', encoded
  std::string body;                    // POST body (XML) or a small PUT body
  const std::uint8_t* data = nullptr;  // a PUT body that is not copied (a part)
  std::size_t size = 0;
  std::vector<std::string> headers;    // "Name: value"
  std::string what;                    // for messages: "PUT s3://b/k part 3"
};

struct Response {
  long status = 0;
  std::string body;
  std::map<std::string, std::string> headers; // names in lower case
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string() : it->second;
  }
  bool ok() const { return status >= 200 && status < 300; }
  // S3's error code from the body (<Code>), "" when none.
  std::string code() const;
};

// The payload-hash header every request carries (see Client::prepare).
inline constexpr const char* k_unsigned_payload = "x-amz-content-sha256: UNSIGNED-PAYLOAD";

struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using Slist = std::unique_ptr<curl_slist, SlistDeleter>;

// One request and its answer, prepared for an easy or a multi handle. Do
// not move it once prepared: libcurl holds pointers into it.
struct Exchange {
  url::Easy easy;
  char errbuf[CURL_ERROR_SIZE] = {};
  Slist headers;
  Request request;
  Response response;
  std::size_t sent = 0;  // body bytes handed to libcurl
};

class Client {
public:
  Client(Config config, Events& events) : m_config(std::move(config)), m_events(events) {}
  const Config& config() const { return m_config; }
  Events& events() { return m_events; }

  // Make `x.easy` a signed handle for `x.request`.
  Status prepare(Exchange& x);
  // After libcurl finished `x` with `code`: the response, or the transport error.
  Status finish(Exchange& x, CURLcode code);
  // Send `request` and wait, retrying throttling (503 SlowDown), 500 and
  // network errors with backoff; any other answer is returned as is.
  Result<Response> send(const Request& request);

private:
  Config m_config;
  Events& m_events;
};

// True for an answer worth trying again: 500, 502, 503 (SlowDown), 504.
bool retryable(const Response& response);

// Sleep before try number `attempt` (1-based) after a retryable failure:
// 0.25 s doubling to 8 s, with jitter.
void backoff(int attempt);

// A typed error for a failed answer: 403 auth (77), 404 refused (69),
// 503 busy (75), BadDigest integrity (65); S3's code in the message.
Error response_error(const Response& response, const std::string& what);

} // namespace sesscp::s3
