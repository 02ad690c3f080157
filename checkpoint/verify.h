// Re-verification of a partial file against its journal: the bytes read back.
// Model and cost: docs/JOURNAL.md, "Re-verification on resume".
#pragma once

#include "base/aligned.h"
#include "base/fd.h"
#include "base/hash.h"
#include "base/result.h"

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <thread>
#include <vector>

namespace sesscp::checkpoint {

// How much of a partial file a resume reads back (--verify-resume).
//   full: every confirmed chunk, in the background (the default);
//   tail: only the last 64 MiB of confirmed chunks, before resuming; earlier
//         chunks are trusted from the journal (for storage the user trusts).
enum class ResumeCheck { full, tail };

// Reads whole chunks of a partial file back for hashing without filling the
// page cache: with O_DIRECT (a second descriptor of the same inode), or,
// where the file system refuses it (tmpfs), through the cache with the pages
// dropped after each read (posix_fadvise DONTNEED). A direct read still sees
// bytes written through the cache: the kernel writes them back first.
class PartReader {
public:
  PartReader(int fd, std::uint32_t chunk_size, std::uint64_t file_size);

  // Hash chunks [first, first + n) as the file holds them now: one hash per
  // chunk, std::nullopt for a chunk the file ends before the end of (missing).
  Result<std::vector<std::optional<Hash128>>> hash_chunks(std::uint64_t first, std::uint64_t n);
  // The same in two steps, so one thread can read the next batch while
  // another hashes this one: read() returns the bytes it got, hashes()
  // hashes what read() left in this reader's buffer.
  Result<std::size_t> read(std::uint64_t first, std::uint64_t n);
  std::vector<std::optional<Hash128>> hashes(std::uint64_t first, std::uint64_t n, std::size_t got);

  // How many whole chunks one call should ask for (8 MiB of them, at least one).
  std::uint64_t batch() const { return m_batch; }

private:
  Result<std::size_t> read_at(std::uint64_t offset, std::size_t len);

  int m_fd;
  Fd m_direct;
  std::uint32_t m_chunk_size;
  std::uint64_t m_file_size;
  std::uint64_t m_batch;
  AlignedBuffer m_buf;
};

// A range of chunks, for reports: [first, first + count).
struct ChunkRange {
  std::uint64_t first = 0;
  std::uint64_t count = 0;
};
// Sorted chunk indexes as ranges of consecutive ones.
std::vector<ChunkRange> to_ranges(std::span<const std::uint64_t> sorted);

// Check chunks [0, expected.size()) of the partial file against `expected`
// (the journal's hashes), in order, on the calling thread. Returns the
// indexes of the damaged chunks (differing or missing), sorted.
using VerifyProgress = std::function<void(std::uint64_t done, std::uint64_t total)>;
Result<std::vector<std::uint64_t>> verify_chunks(int part_fd, std::uint32_t chunk_size, std::uint64_t file_size,
                                                 std::span<const Hash128> expected,
                                                 const VerifyProgress& on_progress = {});

// The same check on a thread of its own, overlapped with the transfer of the
// rest of the file: the receiver asks for each damaged chunk again while the
// check goes on. `notify` is called (on the checking thread) whenever take()
// has news; `writer_busy`, if set, is asked before each read, and while it
// says yes the check waits a little (bounded), so a disk shared with the
// writer of the new chunks goes first to the writer.
class Reverifier {
public:
  struct News {
    std::vector<std::uint64_t> damaged; // found since the last take(), ascending
    std::uint64_t checked = 0;          // chunks checked so far (good or damaged)
    std::uint64_t total = 0;            // chunks to check
    bool done = false;                  // every chunk checked (or the check failed)
    std::optional<Error> error;         // a read error: nothing more will be checked
  };

  Reverifier(int part_fd, std::uint32_t chunk_size, std::uint64_t file_size, std::vector<Hash128> expected,
             std::function<void()> notify, std::function<bool()> writer_busy = {});
  ~Reverifier();
  Reverifier(const Reverifier&) = delete;
  Reverifier& operator=(const Reverifier&) = delete;

  News take();

private:
  void loop();
  void pace();

  // Two readers: the next batch is read while this one is hashed.
  PartReader m_readers[2];
  const std::vector<Hash128> m_expected;
  std::function<void()> m_notify;
  std::function<bool()> m_writer_busy;
  std::mutex m_mutex;
  std::condition_variable m_cv;
  News m_news;
  bool m_quit = false;
  std::thread m_thread; // last: starts once every member above exists
};

} // namespace sesscp::checkpoint
