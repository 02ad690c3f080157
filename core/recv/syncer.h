// Syncer: the stage that makes a journaled file's sync points durable, in order, off the network thread.
#pragma once

#include "base/hash.h"
#include "base/result.h"
#include "base/worker.h"
#include "checkpoint/journal.h"
#include "core/recv/wake.h"

#include <atomic>
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
  Syncer(int part_fd, checkpoint::Journal& journal, std::string part_path);

  void submit(Job job) { m_worker.submit(std::move(job)); }

  // Wait until every submitted job is durable (or failed).
  void drain() { m_worker.drain(); }

  bool idle() { return m_worker.idle(); }

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
  void fail(Error error);

  int wake_fd() const { return m_wake.fd(); }

private:
  // On the worker's thread: the jobs queued up, merged into as few records
  // as checkpoint::k_max_record_hashes allows, each made durable in turn.
  void run(std::vector<Job>& jobs);
  Status make_durable(const Job& job);

  int m_part_fd;
  checkpoint::Journal& m_journal;
  std::string m_part_path;
  Wake m_wake;
  std::mutex m_mutex; // guards m_error and m_confirmed
  std::optional<Error> m_error;
  std::optional<std::pair<std::uint64_t, std::uint64_t>> m_confirmed;
  std::atomic<bool> m_news{false};
  // Last: its thread uses every member above. After an error it is
  // cancelled: the jobs still queued are dropped, and drain() returns.
  Worker<Job> m_worker;
};

} // namespace sesscp::recv
