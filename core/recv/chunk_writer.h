// ChunkWriter: the stage that writes a journaled file's verified chunks on a thread of its own.
#pragma once

#include "base/aligned.h"
#include "base/hash.h"
#include "base/result.h"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace sesscp::recv {

// Writes the verified chunks of one file on a thread of its own, so the
// network thread reads and hashes the next chunk while the disk takes this
// one (an O_DIRECT write waits for the device). A few chunk buffers cycle
// between the two threads; the network thread waits for a free one, which
// is the back-pressure. Chunks are recorded (and so journaled) only once
// written.
class ChunkWriter {
public:
  struct Hooks {
    std::function<Status(std::span<const std::uint8_t>, std::uint64_t)> write;
    std::function<void(std::uint64_t, const Hash128&)> written;
    std::function<void(Error)> failed;
  };

  ChunkWriter(std::size_t buffers, std::size_t buffer_size, Hooks hooks) : m_hooks(std::move(hooks)) {
    m_buffers.resize(buffers);
    for (auto& b : m_buffers) {
      b.resize(buffer_size);
      m_free.push_back(&b);
    }
    m_thread = std::thread([this] { loop(); });
  }
  ~ChunkWriter() {
    {
      std::lock_guard lock(m_mutex);
      m_quit = true;
    }
    m_cv.notify_all();
    m_thread.join();
  }

  // A free buffer of at least the chunk size (waits while all are queued).
  AlignedBuffer* acquire() {
    std::unique_lock lock(m_mutex);
    m_cv.wait(lock, [&] { return !m_free.empty(); });
    auto* b = m_free.back();
    m_free.pop_back();
    return b;
  }
  void give_back(AlignedBuffer* b) {
    {
      std::lock_guard lock(m_mutex);
      m_free.push_back(b);
    }
    m_cv.notify_all();
  }
  void submit(AlignedBuffer* b, std::size_t len, std::uint64_t index, std::uint64_t offset, const Hash128& hash) {
    {
      std::lock_guard lock(m_mutex);
      m_queue.push_back({b, len, index, offset, hash});
    }
    m_cv.notify_all();
  }
  // True while at least half the buffers wait for the disk: the partial's
  // re-verification then lets the writer have it (checkpoint::Reverifier).
  bool backlogged() {
    std::lock_guard lock(m_mutex);
    return 2 * (m_queue.size() + (m_busy ? 1 : 0)) >= m_buffers.size();
  }
  // Wait until every submitted chunk is written and recorded (or dropped
  // after a failure).
  void drain() {
    std::unique_lock lock(m_mutex);
    m_cv.wait(lock, [&] { return m_queue.empty() && !m_busy; });
  }

private:
  struct Item {
    AlignedBuffer* buf;
    std::size_t len;
    std::uint64_t index;
    std::uint64_t offset;
    Hash128 hash;
  };

  void loop() {
    std::unique_lock lock(m_mutex);
    for (;;) {
      m_cv.wait(lock, [&] { return m_quit || !m_queue.empty(); });
      if (m_quit) return;
      Item item = m_queue.front();
      m_queue.pop_front();
      m_busy = true;
      bool failed = m_failed;
      lock.unlock();
      if (!failed) {
        auto status = m_hooks.write(item.buf->span(item.len), item.offset);
        if (status) m_hooks.written(item.index, item.hash);
        else {
          failed = true;
          m_hooks.failed(status.error());
        }
      }
      lock.lock();
      m_failed = m_failed || failed;
      m_busy = false;
      m_free.push_back(item.buf);
      m_cv.notify_all();
    }
  }

  Hooks m_hooks;
  std::vector<AlignedBuffer> m_buffers;
  std::mutex m_mutex;
  std::condition_variable m_cv;
  std::vector<AlignedBuffer*> m_free;
  std::deque<Item> m_queue;
  bool m_busy = false;
  bool m_failed = false; // after a failed write the rest are dropped
  bool m_quit = false;
  std::thread m_thread; // last: starts after every member above exists
};

} // namespace sesscp::recv
