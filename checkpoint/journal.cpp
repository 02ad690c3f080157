// The sidecar journal's file I/O: create, open (replay and cut the tail), append, fsync.
#include "checkpoint/journal.h"

#include "base/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <utility>

namespace sesscp::checkpoint {

namespace {

Result<std::vector<std::uint8_t>> read_whole(int fd, const std::string& path) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return errno_error(ErrorKind::io, "stat journal " + path, errno);
  // Size from fstat is only a hint: read to EOF in case the file grew.
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(std::max<off_t>(st.st_size, 0)) + 1);
  std::size_t used = 0;
  for (;;) {
    if (used == bytes.size()) bytes.resize(bytes.size() * 2);
    auto n = pread_full(fd, std::span(bytes).subspan(used), used, "read journal " + path);
    if (!n) return n.error();
    used += *n;
    if (used < bytes.size()) break;
  }
  bytes.resize(used);
  return bytes;
}

// Best effort after a failed write: drop bytes past `end` so they cannot
// linger behind a later, shorter record. Replay would stop at them anyway.
void discard_from(int fd, std::uint64_t end) {
  if (::ftruncate(fd, static_cast<off_t>(end)) != 0) {
    // Nothing more to do: the caller is already returning the first error.
  }
}

ErrorKind create_error_kind(int err) {
  switch (err) {
  case EACCES:
  case EPERM:
  case EROFS:
  case ENOENT:
  case ENOTDIR:
  case EISDIR:
  case ELOOP: return ErrorKind::cannot_create;
  default: return ErrorKind::io;
  }
}

Status write_new_journal(int fd, const std::string& path, std::span<const std::uint8_t> start) {
  // The file may be an old journal with looser permissions that O_TRUNC kept.
  if (::fchmod(fd, 0600) != 0) return errno_error(ErrorKind::io, "chmod journal " + path, errno);
  SESSCP_TRY(pwrite_all(fd, start, 0, "write journal " + path));
  if (::fdatasync(fd) != 0) return errno_error(ErrorKind::io, "sync journal " + path, errno);
  return fsync_dir(dirname_of(path));
}

} // namespace

Journal::Journal(Fd fd, std::string path, std::uint64_t chunks, std::uint64_t serial,
                 std::uint64_t end)
    : m_fd(std::move(fd)), m_path(std::move(path)), m_chunks(chunks), m_last_serial(serial),
      m_end(end) {}

Result<Replay> Journal::parse(std::span<const std::uint8_t> bytes) { return parse_journal(bytes); }

Result<Replay> Journal::read(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return errno_error(ErrorKind::io, "open journal " + path, errno);
  auto bytes = read_whole(fd.get(), path);
  if (!bytes) return bytes.error();
  return parse(*bytes);
}

Result<Journal> Journal::open(const std::string& path, Replay& replay) {
  Fd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return errno_error(ErrorKind::io, "open journal " + path, errno);
  auto bytes = read_whole(fd.get(), path);
  if (!bytes) return bytes.error();
  auto parsed = parse(*bytes);
  if (!parsed) return parsed.error();
  // Cut the bad tail now: appends go at valid_length, and a shorter new
  // record must not leave stale bytes behind it that look like a tail.
  if (parsed->valid_length < parsed->file_length) {
    if (::ftruncate(fd.get(), static_cast<off_t>(parsed->valid_length)) != 0) {
      return errno_error(ErrorKind::io, "truncate journal " + path, errno);
    }
    if (::fdatasync(fd.get()) != 0) {
      return errno_error(ErrorKind::io, "sync journal " + path, errno);
    }
  }
  replay = std::move(*parsed);
  return Journal(std::move(fd), path, replay.chunk_hashes.size(), replay.last_serial,
                 replay.valid_length);
}

Result<Journal> Journal::create(const std::string& path, const Identity& identity) {
  SESSCP_TRY(check_encodable(identity));
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) {
    const int err = errno;
    return errno_error(create_error_kind(err), "create journal " + path, err);
  }
  const auto start = encode_journal_start(identity);
  if (auto st = write_new_journal(fd.get(), path, start); !st) {
    // Leave an empty file rather than a half-written header: empty means "no
    // journal" to the receiver, and unlinking would drop the receiver's
    // flock, which lives on this inode.
    discard_from(fd.get(), 0);
    return st.error();
  }
  return Journal(std::move(fd), path, 0, 0, start.size());
}

Status Journal::append(const CheckpointRecord& record) {
  if (record.first_chunk != m_chunks) {
    return make_error(ErrorKind::internal, "journal append: first_chunk " +
                                               std::to_string(record.first_chunk) +
                                               " is not contiguous (expected " +
                                               std::to_string(m_chunks) + ")");
  }
  if (record.serial <= m_last_serial) {
    return make_error(ErrorKind::internal, "journal append: serial " +
                                               std::to_string(record.serial) +
                                               " does not increase (previous " +
                                               std::to_string(m_last_serial) + ")");
  }
  if (record.hashes.empty() || record.hashes.size() > k_max_record_hashes) {
    return make_error(ErrorKind::internal, "journal append: bad chunk count " +
                                               std::to_string(record.hashes.size()));
  }
  const auto bytes = encode_checkpoint(record);
  // State changes only after the sync: on failure the next append rewrites
  // the same place.
  Status st = pwrite_all(m_fd.get(), bytes, m_end, "write journal " + m_path);
  if (st && ::fdatasync(m_fd.get()) != 0) st = errno_error(ErrorKind::io, "sync journal " + m_path, errno);
  if (!st) {
    discard_from(m_fd.get(), m_end);
    return st;
  }
  m_chunks += record.hashes.size();
  m_last_serial = record.serial;
  m_end += bytes.size();
  return {};
}

Status Journal::append_chunks(std::span<const Hash128> hashes, std::uint64_t& serial) {
  for (std::size_t first = 0; first < hashes.size();) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(hashes.size() - first, k_max_record_hashes));
    const auto part = hashes.subspan(first, n);
    SESSCP_TRY(append({++serial, m_chunks, {part.begin(), part.end()}}));
    first += n;
  }
  return {};
}

Result<Journal> Journal::rewrite(const std::string& path, const Identity& identity,
                                 std::span<const Hash128> hashes) {
  auto journal = create(path, identity);
  if (!journal) return journal.error();
  std::uint64_t serial = 0;
  SESSCP_TRY(journal->append_chunks(hashes, serial));
  return journal;
}

Result<std::uint64_t> verify_tail(int part_fd, std::uint32_t chunk_size, std::uint64_t file_size,
                                  std::span<const Hash128> hashes, std::uint64_t max_bytes,
                                  const VerifyProgress& on_progress) {
  const std::uint64_t n = hashes.size();
  if (n == 0) return std::uint64_t{0};
  if (chunk_size == 0 || n > chunk_count(chunk_size, file_size)) {
    return make_error(ErrorKind::internal, "verify_tail: " + std::to_string(n) +
                                               " hashes for a file of " +
                                               std::to_string(file_size) + " bytes");
  }
  const std::uint64_t last = n - 1;
  const std::uint64_t confirmed_end = last * chunk_size + chunk_length(last, chunk_size, file_size);
  const std::uint64_t window_start = confirmed_end - std::min(max_bytes, confirmed_end);
  const std::uint64_t first = std::min(window_start / chunk_size, last);
  // Only the last chunk can be short, so `first` is the longest in the window.
  std::vector<std::uint8_t> buf(chunk_length(first, chunk_size, file_size));
  const std::uint64_t total = confirmed_end - first * chunk_size;
  for (std::uint64_t i = first; i < n; ++i) {
    const std::uint64_t len = chunk_length(i, chunk_size, file_size);
    const auto chunk = std::span(buf).first(len);
    auto got = pread_full(part_fd, chunk, i * chunk_size, "read partial file");
    if (!got) return got.error();
    if (*got < len || xxh3_128(chunk) != hashes[i]) return i;
    if (on_progress) on_progress(i * chunk_size + len - first * chunk_size, total);
  }
  return n;
}

} // namespace sesscp::checkpoint
