// One stage of a pipeline: a thread that runs queued items in order.
//
// The receiver's small-file writer and committer and the sender's reader
// and source hasher are each a Worker (the receiver's ChunkWriter and
// Syncer keep threads of their own: on a Worker they stalled in about 1 of
// 50 runs under load, cause not yet found; core/recv/syncer.h):
// the owner submits items, the worker's thread runs them oldest first
// without the lock held, and the owner can wait for one item (its ticket),
// for all of them (drain) or ask how many are still to run (pending). A
// stage whose results the owner collects publishes them once they count
// as run (the publish callback).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <limits>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace sesscp {

template <class Item>
class Worker {
public:
  // Runs on the worker's thread with the items taken at once (at most the
  // batch size given to the constructor, oldest first).
  using Run = std::function<void(std::vector<Item>&)>;
  // What destruction does with items still queued: run them first
  // (finish), or let them go unrun (drop; the one running still ends).
  enum class OnQuit { finish, drop };
  static constexpr std::size_t k_unbounded = std::numeric_limits<std::size_t>::max();

  // `publish` (optional) runs on the worker's thread with the same items
  // after `run`, under the lock, right after they count as run: whoever
  // sees pending() drop, or returns from wait() or drain(), also sees what
  // it published (results handed over, the owner woken). Keep it short, do
  // not call the Worker from it, and take no lock in it that the owner may
  // hold while calling the Worker. The items are destroyed after it, still
  // under the lock: move out what is costly to destroy.
  Worker(Run run, OnQuit on_quit, std::size_t max_batch = 1, Run publish = {})
      : m_run(std::move(run)), m_publish(std::move(publish)), m_on_quit(on_quit), m_max_batch(max_batch) {}
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  ~Worker() {
    {
      std::lock_guard lock(m_mutex);
      m_quit = true;
    }
    m_cv.notify_all();
    if (m_thread.joinable()) m_thread.join();
  }

  // Queue `item`; the thread starts with the first one. Returns the item's
  // ticket for wait(): 1 for the first item, then one more each time.
  std::uint64_t submit(Item item) {
    std::uint64_t ticket;
    {
      std::lock_guard lock(m_mutex);
      if (!m_thread.joinable()) m_thread = std::thread([this] { loop(); });
      m_queue.push_back(std::move(item));
      ticket = ++m_submitted;
    }
    m_cv.notify_all();
    return ticket;
  }

  // Until the item with `ticket`, and every one before it, has run.
  // Returns how many items have run by then: every ticket up to that is done.
  std::uint64_t wait(std::uint64_t ticket) {
    std::unique_lock lock(m_mutex);
    m_cv.wait(lock, [&] { return m_done >= ticket; });
    return m_done;
  }

  // Until every item submitted so far has run.
  void drain() {
    std::unique_lock lock(m_mutex);
    m_cv.wait(lock, [&] { return m_done == m_submitted; });
  }

  // Items submitted and not yet run to the end (queued or running).
  std::size_t pending() {
    std::lock_guard lock(m_mutex);
    return static_cast<std::size_t>(m_submitted - m_done);
  }

  bool idle() { return pending() == 0; }

private:
  void loop() {
    std::vector<Item> batch;
    std::unique_lock lock(m_mutex);
    for (;;) {
      m_cv.wait(lock, [&] { return m_quit || !m_queue.empty(); });
      if (m_quit && (m_queue.empty() || m_on_quit == OnQuit::drop)) {
        m_done += m_queue.size(); // dropped: drain() and wait() must not hang
        m_queue.clear();
        m_cv.notify_all();
        return;
      }
      while (!m_queue.empty() && batch.size() < m_max_batch) {
        batch.push_back(std::move(m_queue.front()));
        m_queue.pop_front();
      }
      lock.unlock();
      m_run(batch);
      const auto ran = batch.size();
      if (!m_publish) batch.clear();
      lock.lock();
      m_done += ran;
      if (m_publish) {
        m_publish(batch);
        batch.clear();
      }
      m_cv.notify_all();
    }
  }

  Run m_run;
  Run m_publish;
  const OnQuit m_on_quit;
  const std::size_t m_max_batch;
  std::mutex m_mutex;
  std::condition_variable m_cv;
  std::deque<Item> m_queue;
  std::uint64_t m_submitted = 0;
  std::uint64_t m_done = 0; // items run (or dropped at quit)
  bool m_quit = false;
  std::thread m_thread; // started by the first submit, after every member above exists
};

} // namespace sesscp
