// Small files (one chunk each): their writer, their group commit (Committer) and its durability.
#pragma once

#include "base/aligned.h"
#include "base/result.h"
#include "base/worker.h"
#include "core/recv/wake.h"

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace sesscp::recv {

class IncomingFile;

// Writes small files (each one chunk, docs/PROTOCOL.md) on a thread of its
// own, in the order they arrived, so the session thread goes on reading
// and creating the next files: copying the data into the page cache was
// half of that thread's time on a tree of small files. The session thread
// takes a buffer (waiting while k_budget bytes of buffers are queued), reads
// and verifies the chunk into it, and submits it for its file to write
// (IncomingFile::write_small); the group commit waits for a file's write
// before making it durable. The thread starts with the first submission.
class SmallWriter {
public:
  using Buffer = std::unique_ptr<AlignedBuffer>;
  static constexpr std::size_t k_budget = 16u << 20;

  // The session thread only (acquire, give_back, submit). A buffer of `len`
  // bytes (recycled: fresh pages are slow to fault in).
  Buffer acquire(std::size_t len);
  // A buffer not submitted after all (its chunk failed its hash).
  void give_back(Buffer buf) { recycle(std::move(buf)); }
  // Queue the write of `file`'s only chunk, `buf`'s first `len` bytes;
  // returns its ticket for wait().
  std::uint64_t submit(IncomingFile& file, Buffer buf, std::size_t len);
  // Any thread: until the write with `ticket` (and all before it) has run.
  void wait(std::uint64_t ticket) { m_worker.wait(ticket); }

private:
  struct Write {
    IncomingFile* file;
    std::span<const std::uint8_t> data;
  };
  static void run(std::vector<Write>& writes);
  // The buffers of the writes that have run are free again.
  void reclaim();
  // A buffer is free again; at most a budget's worth is kept.
  void recycle(Buffer buf);

  // Buffers of the writes submitted, by ticket, until they have run.
  std::deque<std::pair<std::uint64_t, Buffer>> m_queued;
  std::vector<Buffer> m_free;
  std::size_t m_free_bytes = 0; // capacity of m_free
  std::size_t m_held = 0;       // capacity of the buffers acquired and not yet free
  std::uint64_t m_submitted = 0;
  // Last: at destruction it runs the writes still queued, on buffers above.
  Worker<Write> m_worker{[](std::vector<Write>& writes) { run(writes); }, Worker<Write>::OnQuit::finish};
};

// Group commit of small files: every file's data and metadata durable, then
// their names published and durable (FILE_DONE follows, from the session).
// Every file of the batch was written (Committer waits for it).
Status make_batch_durable(int root_fd, const std::string& root_path, std::vector<std::unique_ptr<IncomingFile>>& batch);

// Commits batches of small files (make_batch_durable) on its own thread, in
// order, so the session thread goes on creating the next files meanwhile:
// the two halves of the per-file filesystem work then overlap.
class Committer {
public:
  using Batch = std::vector<std::unique_ptr<IncomingFile>>;
  Committer(int root_fd, std::string root_path);
  ~Committer();
  void submit(Batch batch);
  // Wait until every submitted batch is committed (or failed).
  void drain() { m_worker.drain(); }
  bool busy() { return !m_worker.idle(); }
  // True when every batch submitted was committed and confirmed (taken).
  bool all_taken();
  std::optional<std::pair<Batch, Status>> take_done();
  int wake_fd() const { return m_wake.fd(); }

private:
  struct Commit {
    Batch files;
    Status status;
    Batch rest; // from the first file the small-file writer could not write
    Status written;
  };
  // On its thread: commit one batch.
  void commit(Commit& c);
  // Under the worker's lock, once the batch counts as committed: hand it
  // over and wake the session thread.
  void publish(std::vector<Commit>& commits);

  int m_root_fd;
  std::string m_root_path;
  Wake m_wake;
  std::mutex m_mutex; // guards m_done
  std::deque<std::pair<Batch, Status>> m_done;
  bool m_failed = false; // its thread only
  // Last: its thread uses every member above; at destruction it commits the
  // batches still queued.
  Worker<Commit> m_worker;
};

} // namespace sesscp::recv
