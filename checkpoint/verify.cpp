#include "checkpoint/verify.h"

#include "checkpoint/journal.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <future>
#include <string>

namespace sesscp::checkpoint {

namespace {

// Bytes read per system call: one 1 MiB read at a time left this machine's
// disk idle between reads; 8 MiB reads keep it streaming (docs/JOURNAL.md).
constexpr std::uint64_t k_read_bytes = 8u << 20;

// Append to `damaged` the indexes of chunks [first, first + got.size())
// whose hash read back is missing or differs from `expected`.
void collect_damaged(const std::vector<std::optional<Hash128>>& got, std::span<const Hash128> expected,
                     std::uint64_t first, std::vector<std::uint64_t>& damaged) {
  for (std::uint64_t i = 0; i < got.size(); ++i)
    if (!got[i] || *got[i] != expected[first + i]) damaged.push_back(first + i);
}

} // namespace

PartReader::PartReader(int fd, std::uint32_t chunk_size, std::uint64_t file_size)
    : m_fd(fd), m_direct(reopen_direct(fd, O_RDONLY)), m_chunk_size(chunk_size), m_file_size(file_size),
      m_batch(std::max<std::uint64_t>(1, k_read_bytes / std::max<std::uint32_t>(chunk_size, 1))) {}

Result<std::size_t> PartReader::read_at(std::uint64_t offset, std::size_t len) {
  // Rounded up for O_DIRECT; a read at the end of the file returns less.
  const std::size_t want = (len + k_direct_align - 1) / k_direct_align * k_direct_align;
  if (m_buf.size() < want) m_buf.resize(want);
  std::size_t got = 0;
  int fd = m_direct ? m_direct.get() : m_fd;
  while (got < len) {
    ssize_t n = ::pread(fd, m_buf.data() + got, want - got, static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EINVAL && fd == m_direct.get()) {
      m_direct.reset(); // the file system refused a direct read: through the cache from now on
      fd = m_fd;
      continue;
    }
    if (n < 0) return errno_error(ErrorKind::io, "read back the partial file", errno);
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
    // A direct read of a part of a 4 KiB block at the end returns the bytes
    // up to the end: the next offset would be unaligned, and there is nothing.
    if (fd == m_direct.get() && got % k_direct_align != 0) break;
  }
  if (fd == m_fd) posix_fadvise(m_fd, static_cast<off_t>(offset), static_cast<off_t>(got), POSIX_FADV_DONTNEED);
  return std::min(got, len);
}

Result<std::size_t> PartReader::read(std::uint64_t first, std::uint64_t n) {
  if (n == 0) return std::size_t{0};
  const std::uint64_t start = first * m_chunk_size;
  std::uint64_t end = std::min(m_file_size, (first + n) * m_chunk_size);
  if (start >= end) return make_error(ErrorKind::internal, "hash_chunks beyond the end of the file");
  return read_at(start, static_cast<std::size_t>(end - start));
}

std::vector<std::optional<Hash128>> PartReader::hashes(std::uint64_t first, std::uint64_t n, std::size_t got) {
  std::vector<std::optional<Hash128>> out;
  out.reserve(n);
  for (std::uint64_t i = 0; i < n; ++i) {
    const std::uint64_t off = i * m_chunk_size;
    const std::uint64_t len = chunk_length(first + i, m_chunk_size, m_file_size);
    if (off + len > got) out.emplace_back(std::nullopt);
    else out.emplace_back(xxh3_128({m_buf.data() + off, static_cast<std::size_t>(len)}));
  }
  return out;
}

Result<std::vector<std::optional<Hash128>>> PartReader::hash_chunks(std::uint64_t first, std::uint64_t n) {
  auto got = read(first, n);
  if (!got) return got.error();
  return hashes(first, n, *got);
}

std::vector<ChunkRange> to_ranges(std::span<const std::uint64_t> sorted) {
  std::vector<ChunkRange> ranges;
  for (auto i : sorted) {
    if (!ranges.empty() && ranges.back().first + ranges.back().count == i) ++ranges.back().count;
    else ranges.push_back({i, 1});
  }
  return ranges;
}

Result<std::vector<std::uint64_t>> verify_chunks(int part_fd, std::uint32_t chunk_size, std::uint64_t file_size,
                                                 std::span<const Hash128> expected,
                                                 const VerifyProgress& on_progress) {
  if (chunk_size == 0 || expected.size() > chunk_count(chunk_size, file_size))
    return make_error(ErrorKind::internal, "verify_chunks: " + std::to_string(expected.size()) +
                                               " hashes for a file of " + std::to_string(file_size) + " bytes");
  PartReader reader(part_fd, chunk_size, file_size);
  std::vector<std::uint64_t> damaged;
  const std::uint64_t total = expected.size();
  for (std::uint64_t first = 0; first < total;) {
    const std::uint64_t n = std::min(reader.batch(), total - first);
    auto hashes = reader.hash_chunks(first, n);
    if (!hashes) return hashes.error();
    collect_damaged(*hashes, expected, first, damaged);
    first += n;
    if (on_progress) on_progress(first, total);
  }
  return damaged;
}

Reverifier::Reverifier(int part_fd, std::uint32_t chunk_size, std::uint64_t file_size, std::vector<Hash128> expected,
                       std::function<void()> notify, std::function<bool()> writer_busy)
    : m_readers{PartReader(part_fd, chunk_size, file_size), PartReader(part_fd, chunk_size, file_size)},
      m_expected(std::move(expected)), m_notify(std::move(notify)),
      m_writer_busy(std::move(writer_busy)) {
  m_news.total = m_expected.size();
  m_news.done = m_expected.empty();
  m_thread = std::thread([this] { loop(); });
}

Reverifier::~Reverifier() {
  {
    std::lock_guard lock(m_mutex);
    m_quit = true;
  }
  m_cv.notify_all();
  m_thread.join();
}

Reverifier::News Reverifier::take() {
  std::lock_guard lock(m_mutex);
  News out;
  out.damaged.swap(m_news.damaged);
  out.checked = m_news.checked;
  out.total = m_news.total;
  out.done = m_news.done;
  out.error = m_news.error;
  return out;
}

void Reverifier::pace() {
  using namespace std::chrono_literals;
  // While the writer has a backlog, give it the disk for a moment (at most
  // 20 ms per read, so the check always moves on).
  std::unique_lock lock(m_mutex);
  for (int waits = 0; m_writer_busy && waits < 20 && !m_quit; ++waits) {
    lock.unlock();
    bool busy = m_writer_busy();
    lock.lock();
    if (!busy) break;
    m_cv.wait_for(lock, 1ms, [&] { return m_quit; });
  }
}

// Batch k is read by reader k % 2 on a short-lived thread while this thread
// hashes batch k - 1 from the other reader: reading and hashing overlap
// (measured on 9 GiB: hashing in line cost ~7 % of the re-read's time).
void Reverifier::loop() {
  const std::uint64_t total = m_expected.size();
  const std::uint64_t batch = m_readers[0].batch();
  auto read_batch = [&](std::uint64_t k) {
    const std::uint64_t first = k * batch;
    return std::async(std::launch::async, [this, k, first, n = std::min(batch, total - first)] {
      return m_readers[k % 2].read(first, n);
    });
  };
  const std::uint64_t batches = (total + batch - 1) / batch;
  if (batches == 0) return;
  pace();
  auto next = read_batch(0);
  for (std::uint64_t k = 0; k < batches; ++k) {
    auto got = next.get();
    if (k + 1 < batches && got) {
      pace();
      next = read_batch(k + 1);
    }
    const std::uint64_t first = k * batch, n = std::min(batch, total - first);
    std::vector<std::optional<Hash128>> hashes;
    if (got) hashes = m_readers[k % 2].hashes(first, n, *got);
    bool stop;
    {
      std::lock_guard lock(m_mutex);
      if (!got) {
        m_news.error = got.error();
        m_news.done = true;
      } else {
        collect_damaged(hashes, m_expected, first, m_news.damaged);
        m_news.checked = first + n;
        m_news.done = first + n == total;
      }
      stop = m_quit || !got;
    }
    if (m_notify) m_notify();
    if (stop) {
      if (k + 1 < batches && got) (void)next.get(); // the read in flight uses a reader of ours
      return;
    }
  }
}

} // namespace sesscp::checkpoint
