// Trees of files to a prefix, and the multipart uploads left behind:
// `sesscp send DIR/ s3://B/P/`, `status --s3` and `s3-abort` (docs/S3.md).
#pragma once

#include "s3/upload.h"

#include <functional>
#include <string>
#include <vector>

namespace sesscp::s3 {

// One source file and the key it goes to.
struct TreeEntry {
  std::string path, key;
};

// The files to upload for `sources` to `dest`: a FILE goes to dest.key (or
// dest.key + its name when dest.key is empty or ends in '/'); DIR/ puts its
// contents under dest.key, DIR without the slash puts DIR itself there.
// Symbolic links and special files are skipped, each named in `skipped`.
Result<std::vector<TreeEntry>> plan_tree(const std::vector<std::string>& sources, const Location& dest,
                                         std::vector<std::string>& skipped);

// An incomplete multipart upload on the server.
struct PendingUpload {
  std::string key, upload_id, initiated; // initiated as the server wrote it (ISO 8601)
  std::string journal;                   // our journal of it, "" when sesscp did not start it here
};

// The incomplete multipart uploads under `where` (bucket and key prefix),
// over every page, matched with the journals under `state_dir`.
Result<std::vector<PendingUpload>> list_uploads(Client& client, const Location& where, const std::string& state_dir);

// Abort `upload` and remove its journal.
Status abort_pending(Client& client, const std::string& bucket, const PendingUpload& upload);

} // namespace sesscp::s3
