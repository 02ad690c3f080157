// Where an S3 request goes and how it is signed, the AWS way: credentials
// from the environment or ~/.aws, the endpoint, the region and the URL
// style (docs/S3.md). The secret lives here and in libcurl, nowhere else:
// never in a message, a log line or --json.
#pragma once

#include "base/result.h"

#include <string>

namespace sesscp::s3 {

struct Credentials {
  std::string access_key, secret_key, session_token;
};

// What the command line may override; the rest comes from the environment.
struct ConfigFlags {
  std::string endpoint;   // --endpoint URL (else AWS_ENDPOINT_URL, else AWS)
  std::string region;     // --region (else AWS_REGION, AWS_DEFAULT_REGION, the profile, us-east-1)
  std::string profile;    // --profile (else AWS_PROFILE, else "default")
  std::string cacert;     // --cacert: a private CA bundle
  bool path_style = false; // --path-style (automatic with a custom endpoint)
  double timeout_s = 30;
};

struct Config {
  std::string endpoint;   // scheme://host[:port], no trailing slash
  std::string region;
  bool path_style = false;
  std::string cacert;
  double timeout_s = 30;
  Credentials credentials;
};

// Build the configuration: flags, then AWS_* variables, then the profile in
// ~/.aws/credentials and ~/.aws/config (AWS_SHARED_CREDENTIALS_FILE and
// AWS_CONFIG_FILE move them). Missing credentials are an auth error.
Result<Config> load_config(const ConfigFlags& flags);

// An s3://BUCKET/KEY target. `key` may be empty or end in '/' (a prefix).
struct Location {
  std::string bucket, key;
};

// True for "s3://...".
bool is_s3_url(const std::string& text);

// Parse s3://BUCKET[/KEY]; a usage error for anything else.
Result<Location> parse_s3_url(const std::string& text);

// Percent-encode for a URL path (keep_slash) or a query value, as SigV4 wants.
std::string uri_encode(const std::string& text, bool keep_slash);

// The request URL of `key` in `bucket` ("" = the bucket itself), with the
// query string `query` (already encoded, without '?').
std::string request_url(const Config& config, const std::string& bucket, const std::string& key,
                        const std::string& query = "");

} // namespace sesscp::s3
