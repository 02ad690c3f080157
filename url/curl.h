// What every URL transfer shares: libcurl handles with owners, the security
// and timeout options, credential-free URLs for messages, and the mapping of
// libcurl and server errors to sesscp's typed errors.
#pragma once

#include "base/result.h"

#include <curl/curl.h>

#include <functional>
#include <memory>
#include <string>

namespace sesscp::url {

struct UrlOptions {
  std::string cacert;          // --cacert: trust this CA bundle instead of the system's
  bool insecure = false;       // --insecure: skip TLS certificate and SSH host key checks
  std::string ssh_key;         // --ssh-key: private key for sftp:// (default ~/.ssh/id_*)
  std::string known_hosts;     // --known-hosts (default ~/.ssh/known_hosts)
  double timeout_s = 30;       // connect timeout and longest stall
  std::string password_env = "SESSCP_URL_PASSWORD"; // env var holding the password or key passphrase
  // Called last on every new handle, for what this layer does not know
  // (s3/ signs requests with it).
  std::function<Status(CURL*)> configure;
};

// Initialise libcurl once per process (thread-safe; idempotent).
Status global_init();

struct EasyDeleter {
  void operator()(CURL* h) const { curl_easy_cleanup(h); }
};
using Easy = std::unique_ptr<CURL, EasyDeleter>;

struct MultiDeleter {
  void operator()(CURLM* m) const { curl_multi_cleanup(m); }
};
using Multi = std::unique_ptr<CURLM, MultiDeleter>;

// A new easy handle for `url` with the options every transfer uses: TLS and
// host key checks, credentials from the environment or ~/.netrc, timeouts,
// no signals, an error buffer. `errbuf` must outlive the handle's use.
Result<Easy> make_easy(const std::string& url, const UrlOptions& options, char* errbuf);

// Return `url` without user name and password, for messages and logs.
std::string redact(const std::string& url);

// Return the scheme of `url` in lower case ("https", "sftp"), "" when it is
// not a URL sesscp handles.
std::string scheme_of(const std::string& url);

// True when `target` is a URL sesscp hands to libcurl rather than HOST:PORT.
bool looks_like_url(const std::string& target);

// True when the URL carries a password in its user-info part (visible in
// process listings: the caller warns).
bool has_inline_password(const std::string& url);

// The last path component of `url`, decoded ("" for none).
std::string file_name_of(const std::string& url);

// Map a failed transfer to a typed error. `http_code` is the response
// code (0 when none); `what` says what was being done ("GET https://...").
Error transfer_error(CURLcode code, long http_code, const char* errbuf, const std::string& what);

} // namespace sesscp::url
