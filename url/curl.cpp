#include "url/curl.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <mutex>

namespace sesscp::url {

namespace {

struct UrlDeleter {
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
};
using UrlHandle = std::unique_ptr<CURLU, UrlDeleter>;

struct CurlString {
  char* p = nullptr;
  ~CurlString() { curl_free(p); }
};

UrlHandle parse(const std::string& url) {
  UrlHandle h(curl_url());
  if (!h || curl_url_set(h.get(), CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) return nullptr;
  return h;
}

std::string part(CURLU* h, CURLUPart what, unsigned flags = 0) {
  CurlString s;
  if (curl_url_get(h, what, &s.p, flags) != CURLUE_OK || !s.p) return {};
  return s.p;
}

bool exists(const std::string& path) {
  struct stat st{};
  return ::stat(path.c_str(), &st) == 0;
}

std::string home() {
  const char* h = std::getenv("HOME");
  return h ? h : "";
}

// The user's default SSH key, as ssh would pick it.
std::string default_ssh_key() {
  for (const char* name : {"id_ed25519", "id_ecdsa", "id_rsa"}) {
    std::string p = home() + "/.ssh/" + name;
    if (exists(p)) return p;
  }
  return {};
}

#define SESSCP_SETOPT(h, opt, value)                                                         \
  do {                                                                                       \
    if (CURLcode rc_ = curl_easy_setopt(h, opt, value); rc_ != CURLE_OK)                     \
      return make_error(ErrorKind::internal, std::string("curl_easy_setopt " #opt ": ") +   \
                                                 curl_easy_strerror(rc_));                   \
  } while (0)

Status apply_ssh(CURL* h, const UrlOptions& o, const char* secret) {
  long auth = CURLSSH_AUTH_PUBLICKEY;
  if (secret) auth |= CURLSSH_AUTH_PASSWORD;
  SESSCP_SETOPT(h, CURLOPT_SSH_AUTH_TYPES, auth);
  std::string key = o.ssh_key.empty() ? default_ssh_key() : o.ssh_key;
  if (!key.empty()) {
    if (!exists(key)) return make_error(ErrorKind::usage, "--ssh-key " + key + " does not exist");
    SESSCP_SETOPT(h, CURLOPT_SSH_PRIVATE_KEYFILE, key.c_str());
    // Empty: libssh2 derives the public key from the private one.
    SESSCP_SETOPT(h, CURLOPT_SSH_PUBLIC_KEYFILE, "");
  }
  if (secret) SESSCP_SETOPT(h, CURLOPT_KEYPASSWD, secret);
  if (o.insecure) return {};
  // Without a key callback libcurl accepts only a host whose key matches an
  // entry of this file: unknown and changed host keys are both refused.
  std::string known = o.known_hosts.empty() ? home() + "/.ssh/known_hosts" : o.known_hosts;
  if (!exists(known))
    return make_error(ErrorKind::auth, "no SSH known_hosts file at " + known +
                                           " to check the server's host key (use --known-hosts FILE, or --insecure)");
  SESSCP_SETOPT(h, CURLOPT_SSH_KNOWNHOSTS, known.c_str());
  return {};
}

} // namespace

Status global_init() {
  static std::once_flag once;
  static CURLcode rc = CURLE_OK;
  std::call_once(once, [] { rc = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (rc != CURLE_OK) return make_error(ErrorKind::internal, std::string("curl_global_init: ") + curl_easy_strerror(rc));
  return {};
}

Result<Easy> make_easy(const std::string& url, const UrlOptions& o, char* errbuf) {
  SESSCP_TRY(global_init());
  Easy easy(curl_easy_init());
  if (!easy) return make_error(ErrorKind::internal, "curl_easy_init failed");
  CURL* h = easy.get();
  errbuf[0] = '\0';
  SESSCP_SETOPT(h, CURLOPT_ERRORBUFFER, errbuf);
  SESSCP_SETOPT(h, CURLOPT_URL, url.c_str());
  SESSCP_SETOPT(h, CURLOPT_NOSIGNAL, 1L);
  SESSCP_SETOPT(h, CURLOPT_PROTOCOLS_STR, "http,https,ftp,ftps,sftp");
  SESSCP_SETOPT(h, CURLOPT_FOLLOWLOCATION, 1L);
  SESSCP_SETOPT(h, CURLOPT_MAXREDIRS, 10L);
  SESSCP_SETOPT(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  SESSCP_SETOPT(h, CURLOPT_USERAGENT, "sesscp/" SESSCP_VERSION);
  SESSCP_SETOPT(h, CURLOPT_TCP_KEEPALIVE, 1L);
  // A peer that stays silent (less than 1 byte/s) for --timeout seconds ends
  // the attempt, as it does for TCP sessions.
  const long timeout = std::max(1L, static_cast<long>(o.timeout_s));
  SESSCP_SETOPT(h, CURLOPT_CONNECTTIMEOUT, timeout);
  SESSCP_SETOPT(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
  SESSCP_SETOPT(h, CURLOPT_LOW_SPEED_TIME, timeout);
  // Credentials never come from argv: ~/.netrc, or the password variable.
  SESSCP_SETOPT(h, CURLOPT_NETRC, static_cast<long>(CURL_NETRC_OPTIONAL));
  const char* secret = o.password_env.empty() ? nullptr : std::getenv(o.password_env.c_str());
  if (secret && !*secret) secret = nullptr;
  if (secret) SESSCP_SETOPT(h, CURLOPT_PASSWORD, secret);
  // Certificates are checked unless the user asked otherwise.
  SESSCP_SETOPT(h, CURLOPT_SSL_VERIFYPEER, o.insecure ? 0L : 1L);
  SESSCP_SETOPT(h, CURLOPT_SSL_VERIFYHOST, o.insecure ? 0L : 2L);
  if (!o.cacert.empty()) {
    if (!exists(o.cacert)) return make_error(ErrorKind::usage, "--cacert " + o.cacert + " does not exist");
    SESSCP_SETOPT(h, CURLOPT_CAINFO, o.cacert.c_str());
  }
  auto scheme = scheme_of(url);
  if (scheme == "sftp") SESSCP_TRY(apply_ssh(h, o, secret));
  if (o.configure) SESSCP_TRY(o.configure(h));
  return easy;
}

std::string redact(const std::string& url) {
  auto h = parse(url);
  if (!h) {
    // Not parseable: cut anything that could be user-info.
    auto scheme_end = url.find("://");
    auto at = url.find('@');
    if (scheme_end != std::string::npos && at != std::string::npos && at > scheme_end)
      return url.substr(0, scheme_end + 3) + "***@" + url.substr(at + 1);
    return url;
  }
  curl_url_set(h.get(), CURLUPART_PASSWORD, nullptr, 0);
  return part(h.get(), CURLUPART_URL);
}

std::string scheme_of(const std::string& url) {
  auto end = url.find("://");
  if (end == std::string::npos || end == 0) return {};
  std::string s = url.substr(0, end);
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (s == "http" || s == "https" || s == "ftp" || s == "ftps" || s == "sftp") return s;
  return {};
}

bool looks_like_url(const std::string& target) { return !scheme_of(target).empty(); }

bool has_inline_password(const std::string& url) {
  auto h = parse(url);
  return h && !part(h.get(), CURLUPART_PASSWORD).empty();
}

std::string file_name_of(const std::string& url) {
  auto h = parse(url);
  if (!h) return {};
  std::string path = part(h.get(), CURLUPART_PATH, CURLU_URLDECODE);
  auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

Error transfer_error(CURLcode code, long http_code, const char* errbuf, const std::string& what) {
  std::string detail = errbuf && *errbuf ? errbuf : curl_easy_strerror(code);
  std::string msg = what + ": " + detail;
  if (code == CURLE_OK || code == CURLE_HTTP_RETURNED_ERROR) {
    msg = what + ": server answered HTTP " + std::to_string(http_code);
    if (http_code == 401 || http_code == 403 || http_code == 407) return make_error(ErrorKind::auth, msg);
    if (http_code == 404 || http_code == 410) return make_error(ErrorKind::refused, msg + " (no such file)");
    if (http_code == 408 || http_code == 429 || http_code >= 500) return make_error(ErrorKind::busy, msg);
    return make_error(ErrorKind::refused, msg);
  }
  switch (code) {
  case CURLE_UNSUPPORTED_PROTOCOL:
  case CURLE_URL_MALFORMAT: return make_error(ErrorKind::usage, msg);
  case CURLE_COULDNT_RESOLVE_HOST:
  case CURLE_COULDNT_RESOLVE_PROXY:
  case CURLE_COULDNT_CONNECT: return make_error(ErrorKind::unreachable, msg);
  case CURLE_OPERATION_TIMEDOUT: return make_error(ErrorKind::timeout, msg);
  case CURLE_PARTIAL_FILE:
  case CURLE_RECV_ERROR:
  case CURLE_SEND_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
  case CURLE_SSH: return make_error(ErrorKind::disconnected, msg);
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_LOGIN_DENIED:
  case CURLE_REMOTE_ACCESS_DENIED: return make_error(ErrorKind::auth, "authentication failed: " + msg);
  case CURLE_REMOTE_FILE_NOT_FOUND: return make_error(ErrorKind::refused, msg + " (no such file)");
  case CURLE_REMOTE_DISK_FULL: return make_error(ErrorKind::refused, msg + " (remote disk full)");
  case CURLE_ABORTED_BY_CALLBACK: return make_error(ErrorKind::interrupted, msg);
  default: return make_error(ErrorKind::protocol, msg);
  }
}

} // namespace sesscp::url
