#include "s3/manage.h"

#include "base/file_io.h"
#include "s3/upload_journal.h"
#include "s3/xml.h"

#include <filesystem>
#include <map>
#include <unistd.h>

namespace sesscp::s3 {

namespace {

namespace fs = std::filesystem;

Status add_dir(const fs::path& dir, const std::string& prefix, std::vector<TreeEntry>& out,
               std::vector<std::string>& skipped) {
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::none, ec), end;
  if (ec) return make_error(ErrorKind::usage, "cannot read directory " + dir.string() + ": " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) return make_error(ErrorKind::io, "reading " + dir.string() + ": " + ec.message());
    auto st = it->symlink_status(ec);
    if (fs::is_directory(st)) continue;
    std::string rel = fs::relative(it->path(), dir).generic_string();
    if (!fs::is_regular_file(st)) {
      skipped.push_back(it->path().string());
      continue;
    }
    out.push_back({it->path().string(), prefix + rel});
  }
  return {};
}

} // namespace

Result<std::vector<TreeEntry>> plan_tree(const std::vector<std::string>& sources, const Location& dest,
                                         std::vector<std::string>& skipped) {
  std::vector<TreeEntry> out;
  bool prefix = dest.key.empty() || dest.key.back() == '/';
  for (const auto& src : sources) {
    std::error_code ec;
    auto st = fs::status(src, ec);
    if (ec) return make_error(ErrorKind::usage, "cannot read " + src + ": " + ec.message());
    if (fs::is_directory(st)) {
      if (!prefix && sources.size() > 0)
        return make_error(ErrorKind::usage, "a directory goes to a prefix: end the key with '/' (s3://" + dest.bucket + "/" + dest.key + "/)");
      std::string under = dest.key;
      if (src.back() != '/') under += basename_of(fs::path(src).lexically_normal().string()) + "/";
      SESSCP_TRY(add_dir(src, under, out, skipped));
    } else if (fs::is_regular_file(st)) {
      if (!prefix && sources.size() > 1)
        return make_error(ErrorKind::usage, "several sources go to a prefix: end the key with '/'");
      out.push_back({src, prefix ? dest.key + basename_of(src) : dest.key});
    } else {
      skipped.push_back(src);
    }
  }
  return out;
}

Result<std::vector<PendingUpload>> list_uploads(Client& client, const Location& where, const std::string& state_dir) {
  std::map<std::string, std::string> ours; // upload id -> journal
  for (const auto& [path, s] : list_journals(state_dir))
    if (s.bucket == where.bucket && s.completed_etag.empty()) ours[s.upload_id] = path;
  std::vector<PendingUpload> out;
  std::string key_marker, id_marker;
  while (true) {
    Request r;
    r.bucket = where.bucket;
    r.query = (key_marker.empty() ? "" : "key-marker=" + uri_encode(key_marker, false) + "&") +
              "prefix=" + uri_encode(where.key, false) +
              (id_marker.empty() ? "" : "&upload-id-marker=" + uri_encode(id_marker, false)) + "&uploads=";
    r.what = "list uploads in s3://" + where.bucket + "/" + where.key;
    auto resp = client.send(r);
    if (!resp) return resp.error();
    if (!resp->ok()) return response_error(*resp, r.what);
    for (auto u : xml_elements(resp->body, "Upload")) {
      PendingUpload p{xml_text(u, "Key"), xml_text(u, "UploadId"), xml_text(u, "Initiated"), ""};
      if (auto it = ours.find(p.upload_id); it != ours.end()) p.journal = it->second;
      out.push_back(std::move(p));
    }
    if (xml_text(resp->body, "IsTruncated") != "true") return out;
    std::string next_key = xml_text(resp->body, "NextKeyMarker"), next_id = xml_text(resp->body, "NextUploadIdMarker");
    if (next_key == key_marker && next_id == id_marker) return out;
    key_marker = next_key;
    id_marker = next_id;
  }
}

Status abort_pending(Client& client, const std::string& bucket, const PendingUpload& u) {
  Request r;
  r.method = "DELETE";
  r.bucket = bucket;
  r.key = u.key;
  r.query = "uploadId=" + uri_encode(u.upload_id, false);
  r.what = "abort upload " + u.upload_id + " of s3://" + bucket + "/" + u.key;
  auto resp = client.send(r);
  if (!resp) return resp.error();
  if (!resp->ok() && resp->code() != "NoSuchUpload") return response_error(*resp, r.what);
  if (!u.journal.empty()) ::unlink(u.journal.c_str());
  return {};
}

} // namespace sesscp::s3
