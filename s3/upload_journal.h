// The sending side's record of a multipart upload (docs/S3.md, "Journal"):
// which upload id, for which source version, with which confirmed parts.
// A text file of lines "<fields>\t<xxh3-64 hex of fields>\n": a header line,
// then one line per part the server confirmed (and a last "complete ETAG"
// line once the object is verified), appended and fdatasynced in
// that order (the server holds the part before the line says so). A torn or
// damaged last line is dropped on reading; a damaged header drops the file.
#pragma once

#include "base/fd.h"
#include "base/result.h"
#include "s3/config.h"

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace sesscp::s3 {

// The source version an upload was started for.
struct SourceId {
  std::uint64_t size = 0, ino = 0, dev = 0;
  std::int64_t mtime_ns = 0;
  bool operator==(const SourceId&) const = default;
};

struct PartRecord {
  std::uint32_t number = 0;
  std::string etag;  // as the server sent it, without quotes
  std::string md5;   // hex, what Content-MD5 carried
  std::string xxh;   // hex XXH3-128 root of the part's chunks
};

struct UploadState {
  std::string upload_id;
  std::uint64_t part_size = 0;
  SourceId source_id;
  std::string bucket, key, source;     // destination and the absolute source path
  std::int64_t started = 0;            // unix seconds
  std::map<std::uint32_t, PartRecord> parts;
  std::string completed_etag;          // set once the object was completed and verified
};

// $XDG_STATE_HOME/sesscp (default ~/.local/state/sesscp).
std::string default_state_dir();

// The journal of the upload of `source` (absolute) to `dest` at `endpoint`.
std::string journal_path(const std::string& state_dir, const std::string& endpoint, const Location& dest,
                         const std::string& source);

// Read the journal at `path`; nullopt when there is none (or no valid header).
Result<std::optional<UploadState>> read_journal(const std::string& path);

// Every journal under `state_dir`, with its path.
std::vector<std::pair<std::string, UploadState>> list_journals(const std::string& state_dir);

class UploadJournal {
public:
  // Replace any journal at `path` with a new one holding `state`'s header
  // (temp file, fsync, rename, fsync of the directory).
  static Result<UploadJournal> create(const std::string& path, const UploadState& state);
  // Open the existing journal at `path` for appending.
  static Result<UploadJournal> append_to(const std::string& path);
  // Append `part` and fdatasync.
  Status add(const PartRecord& part);
  // Record that the object is complete and verified with `etag`.
  Status complete(const std::string& etag);

private:
  explicit UploadJournal(Fd fd, std::string path) : m_fd(std::move(fd)), m_path(std::move(path)) {}
  Fd m_fd;
  std::string m_path;
};

} // namespace sesscp::s3
