// `sesscp send FILE sftp://user@host/path`: upload to any SSH server,
// resuming by appending after re-reading the last confirmed chunk (docs/URL.md).
#pragma once

#include "core/events.h"
#include "base/result.h"
#include "core/retry.h"
#include "url/curl.h"

#include <atomic>
#include <cstdint>
#include <string>

namespace sesscp::url {

struct PutOptions {
  std::string path;                   // local file
  std::string url;                    // sftp://user@host/path (the final name)
  UrlOptions url_options;
  std::uint32_t chunk_size = 1u << 20; // what a resume reads back: the last whole chunk and the rest
  std::uint64_t bwlimit = 0;           // bytes per second, 0 = unlimited
  RetryPolicy retry;
  const std::atomic<bool>* stop = nullptr;
};

// Upload `options.path`. `report` is filled whatever the outcome.
Status put_sftp(const PutOptions& options, Events& events, FileReport& report);

} // namespace sesscp::url
