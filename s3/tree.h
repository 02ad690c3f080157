// Trees of objects: small objects go several at a time (each one request,
// so on a distant gateway the round trips overlap, as aws-cli does), large
// ones one after another with --connections parts or ranges in flight.
// Used by `send DIR/ s3://B/P/` and `get s3://B/P/` (docs/S3.md).
#pragma once

#include "base/result.h"
#include "core/events.h"
#include "s3/client.h"
#include "s3/manage.h"
#include "s3/upload.h"

#include <cstddef>
#include <functional>
#include <optional>

namespace sesscp::s3 {

// Run job(i) for every i in [0, n) on up to `width` threads, started in
// index order. Once a job returns false no further job starts; the running
// ones end. Jobs must be safe to run at once.
void run_parallel(std::size_t n, int width, const std::function<bool(std::size_t)>& job);

// Called after each file of an upload tree, on the thread that ran it.
using UploadDone = std::function<void(const FileReport& report, const Status& status)>;

// Upload every entry of `plan` with `options` (source and dest set per
// entry): the files that fit in one PUT `options.connections` at a time,
// then the multipart ones one after another. Stops starting files at the
// first failure and returns it (after the running ones end).
Status upload_tree(Client& client, const std::vector<TreeEntry>& plan, const UploadOptions& options,
                   const UploadDone& done);

} // namespace sesscp::s3
