#include "s3/get.h"

namespace sesscp::s3 {

Status get_object(const Config& c, const Location& what, url::GetOptions o, Events& events, FileReport& report) {
  if (what.key.empty() || what.key.back() == '/')
    return make_error(ErrorKind::usage, "get s3://" + what.bucket + "/" + what.key + ": name one object, not a prefix");
  o.url = request_url(c, what.bucket, what.key);
  // Throttling (503 SlowDown) and dropped connections are retried inside
  // the run, resuming from the journal, as uploads retry their parts.
  if (!o.retry.enabled()) o.retry = {.retries = 7, .retry_for_s = 0, .initial_delay_s = 0.25, .max_delay_s = 8};
  o.url_options.cacert = c.cacert;
  o.url_options.timeout_s = c.timeout_s;
  o.url_options.password_env.clear();
  std::string sigv4 = "aws:amz:" + c.region + ":s3";
  Slist headers(curl_slist_append(nullptr, k_unsigned_payload));
  if (!c.credentials.session_token.empty())
    curl_slist_append(headers.get(), ("x-amz-security-token: " + c.credentials.session_token).c_str());
  o.url_options.configure = [&](CURL* h) -> Status {
    // Signed requests go to the host they were signed for, nowhere else.
    if (curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_AWS_SIGV4, sigv4.c_str()) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_USERNAME, c.credentials.access_key.c_str()) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_PASSWORD, c.credentials.secret_key.c_str()) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get()) != CURLE_OK)
      return make_error(ErrorKind::internal, "libcurl refused the S3 signing options (needs libcurl 7.75 or later)");
    return {};
  };
  return url::get_url(o, events, report);
}

} // namespace sesscp::s3
