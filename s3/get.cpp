#include "s3/get.h"

#include "base/file_io.h"
#include "core/frame.h"
#include "s3/tree.h"
#include "s3/upload.h"
#include "s3/xml.h"

#include <atomic>
#include <charconv>
#include <filesystem>
#include <mutex>
#include <sys/stat.h>

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

Result<std::vector<ObjectEntry>> list_objects(Client& client, const Location& where, int page_size) {
  std::vector<ObjectEntry> out;
  std::string token;
  for (int page = 1;; ++page) {
    Request r;
    r.bucket = where.bucket;
    // In SigV4's canonical order (libcurl signs the query as written).
    r.query = (token.empty() ? "" : "continuation-token=" + uri_encode(token, false) + "&") +
              "list-type=2&max-keys=" + std::to_string(page_size) + "&prefix=" + uri_encode(where.key, false);
    r.what = "list s3://" + where.bucket + "/" + where.key + " (page " + std::to_string(page) + ")";
    auto resp = client.send(r);
    if (!resp) return resp.error();
    if (!resp->ok()) return response_error(*resp, r.what);
    for (auto c : xml_elements(resp->body, "Contents")) {
      ObjectEntry e{xml_text(c, "Key"), 0, unquote(xml_text(c, "ETag"))};
      std::string size = xml_text(c, "Size");
      auto [end, ec] = std::from_chars(size.data(), size.data() + size.size(), e.size);
      if (ec != std::errc() || end != size.data() + size.size() || e.key.empty())
        return make_error(ErrorKind::protocol, r.what + ": an entry without a key or a size");
      out.push_back(std::move(e));
    }
    if (xml_text(resp->body, "IsTruncated") != "true") return out;
    std::string next = xml_text(resp->body, "NextContinuationToken");
    if (next.empty() || next == token)
      return make_error(ErrorKind::protocol, r.what + ": a truncated listing without a new continuation token");
    token = std::move(next);
  }
}

Result<std::string> tree_path(const std::string& prefix, const std::string& key) {
  auto refuse = [&](const std::string& why) {
    return make_error(ErrorKind::refused, "refused key '" + key + "' of the listing: " + why +
                                              "; nothing written for it (get it by name with -o FILE to choose where it goes)");
  };
  if (key.compare(0, prefix.size(), prefix) != 0) return refuse("it does not start with the prefix '" + prefix + "'");
  std::string rel = key.substr(prefix.size());
  if (!rel.empty() && rel.back() == '/') rel.pop_back();
  if (rel.empty() && key.size() == prefix.size()) return rel;
  if (auto why = frame::check_path(rel); !why.empty()) return refuse(why);
  return rel;
}

std::string default_tree_dir(const Location& where) {
  std::string p = where.key;
  while (!p.empty() && p.back() == '/') p.pop_back();
  std::string name = basename_of(p);
  return name.empty() || name == "." || name == ".." ? where.bucket : name;
}

bool stops_tree(ErrorKind kind) {
  return kind == ErrorKind::interrupted || kind == ErrorKind::auth || kind == ErrorKind::io ||
         kind == ErrorKind::internal;
}

namespace {

namespace fs = std::filesystem;

Status make_dir(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec || !fs::is_directory(path, ec))
    return make_error(ErrorKind::cannot_create, "cannot create directory " + path +
                                                    (ec ? ": " + ec.message() : ": a file is in the way"));
  return {};
}

// Create DIR/REL's directories one component at a time; a component that is
// a symbolic link (planted locally: S3 has none) is refused, not followed,
// as the TCP receiver's make_dirs refuses it.
Status make_dirs_beneath(const std::string& dir, const std::string& rel) {
  std::string path = dir;
  std::size_t start = 0;
  while (start < rel.size()) {
    auto slash = rel.find('/', start);
    path += "/" + rel.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    start = slash == std::string::npos ? rel.size() : slash + 1;
    if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST)
      return errno_error(ErrorKind::cannot_create, "cannot create directory " + path, errno);
    struct stat st{};
    if (::lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
      return make_error(ErrorKind::cannot_create, "cannot create directory " + path +
                                                      ": something other than a directory (a symlink?) is there");
  }
  return {};
}

// One entry of the listing: a folder marker becomes a directory, an object a file.
Status get_entry(Client& client, const Location& where, const std::string& dir, const ObjectEntry& e,
                 url::GetOptions o, FileReport& report) {
  report.name = e.key.substr(std::min(where.key.size(), e.key.size()));
  report.size = e.size;
  auto rel = tree_path(where.key, e.key);
  if (!rel) return rel.error();
  report.name = *rel;
  std::string path = rel->empty() ? dir : dir + "/" + *rel;
  if (e.key.back() == '/') {
    client.events().debug("s3: directory " + path + " for the folder marker " + e.key);
    SESSCP_TRY(make_dirs_beneath(dir, *rel));
    report.state = FileReport::State::complete;
    return {};
  }
  auto slash = rel->rfind('/');
  SESSCP_TRY(make_dirs_beneath(dir, slash == std::string::npos ? std::string() : rel->substr(0, slash)));
  struct stat st{};
  if (::lstat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    return make_error(ErrorKind::cannot_create, "cannot write " + path + ": something other than a file is there");
  o.output = path;
  o.name = *rel;
  return get_object(client.config(), {where.bucket, e.key}, o, client.events(), report);
}

} // namespace

Result<TreeOutcome> get_tree(Client& client, const Location& where, const std::string& dir,
                             const url::GetOptions& options, const TreeFileDone& done, int page_size) {
  auto list = list_objects(client, where, page_size);
  if (!list) return list.error();
  if (list->empty())
    return make_error(ErrorKind::refused, "no objects under s3://" + where.bucket + "/" + where.key);
  SESSCP_TRY(make_dir(dir));
  TreeOutcome out;
  out.objects = list->size();
  std::mutex mutex;
  // False once nothing more should start.
  auto one = [&](const ObjectEntry& e) {
    if (options.stop && options.stop->load()) {
      std::lock_guard lock(mutex);
      if (!out.first) out.first = make_error(ErrorKind::interrupted, "interrupted");
      return false;
    }
    FileReport report;
    auto st = get_entry(client, where, dir, e, options, report);
    if (e.key.back() != '/' || !st) done(report, st);
    std::lock_guard lock(mutex);
    if (st) {
      ++out.done;
      return true;
    }
    ++out.failed;
    if (!out.first) out.first = st.error();
    return !stops_tree(st.error().kind);
  };
  // Small objects (one GET each) several at a time, then large ones one
  // after another with their ranges over --connections (s3/tree.h).
  std::vector<const ObjectEntry*> small, large;
  for (const auto& e : *list) (e.size < k_default_part ? small : large).push_back(&e);
  std::atomic<bool> go_on{true};
  run_parallel(small.size(), options.connections, [&](std::size_t i) {
    if (one(*small[i])) return true;
    go_on = false;
    return false;
  });
  for (const auto* e : large)
    if (!go_on || !one(*e)) break;
  return out;
}

} // namespace sesscp::s3
