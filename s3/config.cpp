#include "s3/config.h"

#include <cctype>
#include <cstdlib>
#include <fstream>

namespace sesscp::s3 {

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string trim(const std::string& s) {
  auto b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return {};
  auto e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

// Return `key` of section `section` in the INI file `path`, "" if absent.
std::string ini_value(const std::string& path, const std::string& section, const std::string& key) {
  std::ifstream in(path);
  std::string line, current;
  while (std::getline(in, line)) {
    line = trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line.front() == '[' && line.back() == ']') {
      current = trim(line.substr(1, line.size() - 2));
      continue;
    }
    auto eq = line.find('=');
    if (current == section && eq != std::string::npos && trim(line.substr(0, eq)) == key)
      return trim(line.substr(eq + 1));
  }
  return {};
}

struct Profile {
  std::string name, credentials_file, config_file;
  // ~/.aws/config names sections "profile NAME", except "default".
  std::string config_section() const { return name == "default" ? name : "profile " + name; }
  std::string get(const std::string& key) const {
    auto v = ini_value(credentials_file, name, key);
    return v.empty() ? ini_value(config_file, config_section(), key) : v;
  }
};

Profile profile_of(const ConfigFlags& f) {
  Profile p;
  p.name = !f.profile.empty() ? f.profile : !env("AWS_PROFILE").empty() ? env("AWS_PROFILE") : "default";
  std::string home = env("HOME");
  p.credentials_file = env("AWS_SHARED_CREDENTIALS_FILE");
  if (p.credentials_file.empty()) p.credentials_file = home + "/.aws/credentials";
  p.config_file = env("AWS_CONFIG_FILE");
  if (p.config_file.empty()) p.config_file = home + "/.aws/config";
  return p;
}

Status load_credentials(const ConfigFlags& f, Credentials& c) {
  c.access_key = env("AWS_ACCESS_KEY_ID");
  c.secret_key = env("AWS_SECRET_ACCESS_KEY");
  c.session_token = env("AWS_SESSION_TOKEN");
  if (!c.access_key.empty() && !c.secret_key.empty()) return {};
  auto p = profile_of(f);
  c.access_key = p.get("aws_access_key_id");
  c.secret_key = p.get("aws_secret_access_key");
  c.session_token = p.get("aws_session_token");
  if (!c.access_key.empty() && !c.secret_key.empty()) return {};
  return make_error(ErrorKind::auth, "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                                     "AWS_PROFILE with ~/.aws/credentials (profile '" + p.name + "' has none)");
}

} // namespace

Result<Config> load_config(const ConfigFlags& f) {
  Config c;
  SESSCP_TRY(load_credentials(f, c.credentials));
  auto p = profile_of(f);
  c.region = f.region;
  for (const char* name : {"AWS_REGION", "AWS_DEFAULT_REGION"})
    if (c.region.empty()) c.region = env(name);
  if (c.region.empty()) c.region = p.get("region");
  if (c.region.empty()) c.region = "us-east-1";
  c.endpoint = !f.endpoint.empty() ? f.endpoint : env("AWS_ENDPOINT_URL");
  if (c.endpoint.empty()) c.endpoint = p.get("endpoint_url");
  // RGW, MinIO and their like are addressed by path; AWS by virtual host.
  c.path_style = f.path_style || !c.endpoint.empty();
  if (c.endpoint.empty()) c.endpoint = "https://s3." + c.region + ".amazonaws.com";
  while (!c.endpoint.empty() && c.endpoint.back() == '/') c.endpoint.pop_back();
  if (c.endpoint.rfind("http://", 0) != 0 && c.endpoint.rfind("https://", 0) != 0)
    return make_error(ErrorKind::usage, "bad S3 endpoint '" + c.endpoint + "' (want http://HOST[:PORT] or https://...)");
  for (char ch : c.region)
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-')
      return make_error(ErrorKind::usage, "bad S3 region '" + c.region + "'");
  c.cacert = f.cacert;
  c.timeout_s = f.timeout_s;
  return c;
}

bool is_s3_url(const std::string& text) { return text.rfind("s3://", 0) == 0; }

Result<Location> parse_s3_url(const std::string& text) {
  if (!is_s3_url(text)) return make_error(ErrorKind::usage, "'" + text + "' is not an s3://BUCKET/KEY URL");
  std::string rest = text.substr(5);
  auto slash = rest.find('/');
  Location l;
  l.bucket = rest.substr(0, slash);
  if (slash != std::string::npos) l.key = rest.substr(slash + 1);
  bool ok = l.bucket.size() >= 3 && l.bucket.size() <= 63;
  for (char ch : l.bucket)
    ok = ok && (std::islower(static_cast<unsigned char>(ch)) || std::isdigit(static_cast<unsigned char>(ch)) ||
                ch == '-' || ch == '.');
  if (!ok) return make_error(ErrorKind::usage, "bad bucket name in '" + text + "' (3-63 of a-z 0-9 . -)");
  return l;
}

std::string uri_encode(const std::string& text, bool keep_slash) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char ch : text) {
    if (std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~' || (keep_slash && ch == '/')) {
      out += static_cast<char>(ch);
    } else {
      out += '%';
      out += hex[ch >> 4];
      out += hex[ch & 15];
    }
  }
  return out;
}

std::string request_url(const Config& c, const std::string& bucket, const std::string& key, const std::string& query) {
  std::string url;
  if (c.path_style) {
    url = c.endpoint + "/" + bucket + "/" + uri_encode(key, true);
  } else {
    auto scheme_end = c.endpoint.find("://") + 3;
    url = c.endpoint.substr(0, scheme_end) + bucket + "." + c.endpoint.substr(scheme_end) + "/" + uri_encode(key, true);
  }
  if (!query.empty()) url += "?" + query;
  return url;
}

} // namespace sesscp::s3
