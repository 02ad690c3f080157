// `sesscp get s3://BUCKET/KEY`: url/get.cpp's ranged, journaled download,
// with every request signed for S3; `get s3://BUCKET/PREFIX/`: every object
// under the prefix, one such download each (docs/S3.md).
#pragma once

#include "s3/client.h"
#include "url/get.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace sesscp::s3 {

// Download `what` with `options` (its url and url_options are set here).
Status get_object(const Config& config, const Location& what, url::GetOptions options, Events& events,
                  FileReport& report);

// One object of a listing.
struct ObjectEntry {
  std::string key;
  std::uint64_t size = 0;
  std::string etag; // unquoted
};

// Every object whose key starts with `where.key`, in key order, over every
// page of ListObjectsV2 (continuation-token) of at most `page_size` keys.
Result<std::vector<ObjectEntry>> list_objects(Client& client, const Location& where, int page_size = 1000);

// Where `key` lands beneath the download's directory: `key` without
// `prefix` (and without a folder marker's trailing '/'), checked as the TCP
// receiver checks a path (frame::check_path). A refused error (69) for one
// that is absolute, has a "." or ".." or empty component, a control
// character, or a suffix sesscp reserves. "" for the prefix's own marker.
Result<std::string> tree_path(const std::string& prefix, const std::string& key);

// The directory a prefix download makes without -o: the prefix's last
// component ("a/b/" -> "b"), or the bucket's name for the whole bucket.
std::string default_tree_dir(const Location& where);

// What a prefix download did: keys listed, keys done (fetched, already
// complete, or made a directory), keys that failed, the first failure.
struct TreeOutcome {
  std::size_t objects = 0, done = 0, failed = 0;
  std::optional<Error> first;
};

// True for the errors after which no other object of a tree can fare better
// (interrupted, auth, local I/O, internal): get_tree stops at them.
bool stops_tree(ErrorKind kind);

// Called after each object: its report (name: the path beneath `dir`) and result.
using TreeFileDone = std::function<void(const FileReport& report, const Status& status)>;

// Download every object under `where.key` (empty or ending in '/') into
// `dir`, created if missing, with `options` for each (journal, resume and
// "already complete" per file, as get_object). A failed object is reported
// and the others go on, as rsync does; interruption, auth and local I/O
// errors stop at once. An empty listing is a refused error (69).
// `page_size` is the listing's (list_objects).
Result<TreeOutcome> get_tree(Client& client, const Location& where, const std::string& dir,
                             const url::GetOptions& options, const TreeFileDone& done, int page_size = 1000);

} // namespace sesscp::s3
