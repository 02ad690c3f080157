// `sesscp get URL`: download over HTTP(S), FTP(S) or SFTP with ranged
// requests into NAME.sesscp.part, journaled like a TCP session (docs/URL.md).
#pragma once

#include "checkpoint/verify.h"
#include "core/events.h"
#include "base/result.h"
#include "core/retry.h"
#include "url/curl.h"

#include <atomic>
#include <cstdint>
#include <string>

namespace sesscp::url {

struct GetOptions {
  std::string url;
  std::string output;                 // file or directory; "" = the URL's file name here
  std::string name;                   // the file's name in events and its report; "" = the output's base name
  UrlOptions url_options;
  std::uint32_t chunk_size = 1u << 20;
  int connections = 1;                // concurrent ranged requests
  std::uint64_t bwlimit = 0;          // bytes per second over all connections, 0 = unlimited
  std::string sha256;                 // expected whole-file digests (hex), "" = none
  std::string xxh128;
  RetryPolicy retry;
  // On a resume, how much of the partial file is read back (--verify-resume):
  // full re-reads every confirmed chunk in the background while the rest
  // arrives; tail re-reads only the last verify_tail_bytes before resuming
  // and trusts the journal for the chunks before them.
  checkpoint::ResumeCheck resume_check = checkpoint::ResumeCheck::full;
  std::uint64_t verify_tail_bytes = 64u << 20;
  // Make the contiguous prefix durable and journal it after this many new
  // bytes, or after a second, whichever comes first.
  std::uint64_t sync_bytes = 16u << 20;
  const std::atomic<bool>* stop = nullptr;
};

// Download `options.url`. `report` is filled whatever the outcome.
Status get_url(const GetOptions& options, Events& events, FileReport& report);

// Return the lower-case hex digest `hex` validated for `bits`, or a usage error.
Result<std::string> normalise_hex(const std::string& hex, std::size_t bits, const char* option);

} // namespace sesscp::url
