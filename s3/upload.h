// `sesscp send FILE s3://BUCKET/KEY`: a multipart upload that resumes from
// its journal and the server's ListParts, verified by HEAD at the end
// (docs/S3.md).
#pragma once

#include "base/result.h"
#include "core/events.h"
#include "s3/client.h"
#include "s3/config.h"

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>

namespace sesscp::s3 {

inline constexpr std::uint64_t k_min_part = 5u << 20;       // S3's smallest part but the last
inline constexpr std::uint64_t k_default_part = 8u << 20;
inline constexpr std::uint32_t k_max_parts = 10000;

struct UploadOptions {
  std::string source;                  // a local regular file
  Location dest;                       // the object's full key
  std::string state_dir;               // journals go under STATE_DIR/s3/
  std::uint64_t part_size = 0;         // 0: 8 MiB, or larger so that the file fits in 10,000 parts
  std::uint32_t chunk_size = 1u << 20; // the hashing unit; parts are whole chunks
  int connections = 4;                 // parts in flight
  const std::atomic<bool>* stop = nullptr;
  // What a listing of the tree's destination said of this key, for an
  // object of one PUT: nullopt = not listed (ask with HEAD), "" = absent,
  // else its size and ETag as "SIZE ETAG".
  std::optional<std::string> listed;
};

// Return the part size for `size` bytes: `wanted` (checked) or the default.
Result<std::uint64_t> choose_part_size(std::uint64_t size, std::uint64_t wanted, std::uint32_t chunk_size);

// Return S3's ETag of a multipart object: MD5 of the parts' binary MD5s, "-N".
std::string multipart_etag(const std::vector<std::string>& part_md5_hex);

// Upload `options.source`. `report` is filled whatever the outcome.
Status upload_file(Client& client, const UploadOptions& options, FileReport& report);

} // namespace sesscp::s3
