// Syncer: the stage that makes a journaled file's sync points durable, in order, off the network thread.
//
// It and the ChunkWriter keep threads of their own rather than a
// base/worker.h Worker: with both on Worker the receiver stalled in about 1
// of 50 runs of test_receiver_kill under load (chunks read but never
// recorded, every thread idle, the sender waiting for a CHECKPOINT); the
// cause was not found, so they stay as they were measured.
#pragma once

#include "base/hash.h"
#include "base/result.h"
#include "checkpoint/journal.h"
#include "core/recv/wake.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <thread>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace sesscp::recv {

// A batch of verified chunks to make durable and journal as one sync point.
struct Job {
  std::uint64_t serial = 0;
  std::uint64_t first_chunk = 0;
  std::vector<Hash128> hashes;
};

// Makes sync points durable off the network thread, in order: fdatasync the
// data, then append and sync the journal record, then report the serial as
// confirmed. Jobs that queue up while a sync runs are merged into one record,
// so a slow disk costs fewer syncs rather than more latency.
class Syncer {
public:
  Syncer(int part_fd, std::uint32_t chunk_size, checkpoint::Journal& journal, std::string part_path)
      : m_part_fd(part_fd), m_chunk_size(chunk_size), m_journal(journal), m_part_path(std::move(part_path)),
        m_thread([this] { loop(); }) {}
  ~Syncer() {
    {
      std::lock_guard lock(m_mutex);
      m_quit = true;
    }
    m_cv.notify_all();
    m_thread.join();
  }

  void submit(Job job) {
    {
      std::lock_guard lock(m_mutex);
      m_jobs.push_back(std::move(job));
    }
    m_cv.notify_all();
  }

  // Wait until every submitted job is durable (or failed).
  void drain() {
    std::unique_lock lock(m_mutex);
    m_cv.wait(lock, [&] { return (m_jobs.empty() && !m_busy) || m_error; });
  }

  bool idle() {
    std::lock_guard lock(m_mutex);
    return m_jobs.empty() && !m_busy;
  }

  // The newest confirmed (serial, end chunk) not yet taken, if any.
  std::optional<std::pair<std::uint64_t, std::uint64_t>> take_confirmed() {
    m_wake.clear();
    std::lock_guard lock(m_mutex);
    return std::exchange(m_confirmed, std::nullopt);
  }

  // True once after a sync point finished or failed. The network thread asks
  // on every frame, so this costs neither a lock nor a syscall.
  bool take_news() { return m_news.exchange(false, std::memory_order_acquire); }

  std::optional<Error> error() {
    std::lock_guard lock(m_mutex);
    return m_error;
  }

  // Another stage of the same file has news for the network thread (the
  // re-verification of the partial, a repaired chunk written): wake it.
  void poke() {
    m_news.store(true, std::memory_order_release);
    m_wake.poke();
  }

  // Another stage of the same file failed: report it as this one's failure
  // and wake the network thread to read it.
  void fail(Error error) {
    {
      std::lock_guard lock(m_mutex);
      if (!m_error) m_error = std::move(error);
    }
    m_news.store(true, std::memory_order_release);
    m_wake.poke();
    m_cv.notify_all();
  }

  int wake_fd() const { return m_wake.fd(); }

private:
  void loop() {
    std::unique_lock lock(m_mutex);
    for (;;) {
      m_cv.wait(lock, [&] { return m_quit || !m_jobs.empty(); });
      if (m_jobs.empty() || m_error) {
        if (m_quit) return;
        m_jobs.clear();
        continue;
      }
      Job merged = std::move(m_jobs.front());
      m_jobs.pop_front();
      while (!m_jobs.empty() &&
             merged.hashes.size() + m_jobs.front().hashes.size() <= checkpoint::k_max_record_hashes) {
        auto& next = m_jobs.front();
        merged.hashes.insert(merged.hashes.end(), next.hashes.begin(), next.hashes.end());
        merged.serial = next.serial;
        m_jobs.pop_front();
      }
      m_busy = true;
      lock.unlock();
      auto status = make_durable(merged);
      lock.lock();
      m_busy = false;
      if (!status) m_error = status.error();
      else m_confirmed = {merged.serial, merged.first_chunk + merged.hashes.size()};
      m_news.store(true, std::memory_order_release);
      m_wake.poke();
      m_cv.notify_all();
    }
  }

  Status make_durable(const Job& job) {
    // fdatasync before the journal append: a record must never point past
    // durable data, or a power cut could leave the journal vouching for
    // bytes the disk never got.
    if (fdatasync(m_part_fd) != 0) return errno_error(ErrorKind::io, "fdatasync " + m_part_path, errno);
    // Its chunks are clean now: drop them from the page cache, so a copy
    // larger than memory keeps about a window of it cached, not all of it
    // (a hint; chunks written with O_DIRECT have no pages to drop).
    (void)posix_fadvise(m_part_fd, static_cast<off_t>(job.first_chunk * m_chunk_size),
                        static_cast<off_t>(job.hashes.size() * m_chunk_size), POSIX_FADV_DONTNEED);
    return m_journal.append({job.serial, job.first_chunk, job.hashes});
  }

  int m_part_fd;
  std::uint32_t m_chunk_size;
  checkpoint::Journal& m_journal;
  std::string m_part_path;
  Wake m_wake;
  std::mutex m_mutex;
  std::condition_variable m_cv;
  std::deque<Job> m_jobs;
  bool m_busy = false;
  bool m_quit = false;
  std::optional<Error> m_error;
  std::optional<std::pair<std::uint64_t, std::uint64_t>> m_confirmed;
  std::atomic<bool> m_news{false};
  std::thread m_thread; // last: starts after every member above exists
};

} // namespace sesscp::recv
