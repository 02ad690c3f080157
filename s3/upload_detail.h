// Inside the S3 upload: the state of one file's upload, shared by
// s3/upload.cpp (resume, complete, verify) and s3/upload_parts.cpp (the
// libcurl multi loop over parts). Not an API.
#pragma once

#include "base/fd.h"
#include "s3/upload.h"
#include "s3/upload_journal.h"

#include <chrono>
#include <optional>
#include <vector>

namespace sesscp::s3::detail {

using Clock = std::chrono::steady_clock;

// MD5 (hex and base64) and the XXH3-128 root of the chunks of one part.
struct PartDigest {
  std::string md5_hex, md5_base64, xxh_hex;
};
PartDigest digest_part(const std::uint8_t* data, std::size_t size, std::uint32_t chunk_size);

// A part the server says it holds (ListParts).
struct ServerPart {
  std::string etag;
  std::uint64_t size = 0;
};

class Upload {
public:
  Upload(Client& client, const UploadOptions& o, FileReport& report) : m_client(client), m_opt(o), m_report(report) {}
  Status run();

private:
  Status open_source();
  Status single_put();
  Status resume_or_start();
  Status start_new(const std::string& why);
  Status abort_upload(const std::string& upload_id);
  // A request on the destination object: method, bucket, key and `what` (for messages) set.
  Request object_request(const char* method, std::string what) const;
  Result<std::map<std::uint32_t, ServerPart>> list_parts(bool& no_such_upload);
  Status reconcile(const std::map<std::uint32_t, ServerPart>& held);
  Result<bool> already_complete();
  Status send_parts();
  Status complete();
  Status verify(const std::string& expected_etag);
  std::uint64_t part_bytes(std::uint32_t number) const;
  std::uint32_t part_count() const;
  Result<std::vector<std::uint8_t>> read_part(std::uint32_t number);
  std::string what() const;

  Client& m_client;
  const UploadOptions& m_opt;
  FileReport& m_report;
  Fd m_fd;
  std::string m_abs;          // absolute source path
  SourceId m_id;
  std::string m_journal_path;
  UploadState m_state;
  std::optional<UploadJournal> m_journal;
  std::uint64_t m_done_bytes = 0;
  friend class PartSender;
};

} // namespace sesscp::s3::detail
