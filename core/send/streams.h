// The extra connections of a session (--streams N) and their writer threads.
#pragma once

#include "base/fd.h"
#include "base/hash.h"
#include "base/result.h"
#include "core/conn.h"
#include "core/frame.h"
#include "core/send/common.h"
#include "core/source.h"

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

namespace sesscp::send {

// Opens one more connection of the session, connected and authenticated.
using Connect = std::function<Result<std::unique_ptr<Conn>>()>;

// The extra connections of a session (--streams N, docs/PROTOCOL.md
// "Several connections") and one writer thread per connection. While a file
// larger than one chunk is active, each writer takes the next chunk index
// from a shared counter (never at or past the window's limit), reads and
// hashes that chunk itself and writes it as one DATA frame on its own
// connection; the session's thread takes the same counter for the first
// connection, and learns through an eventfd which chunks are fully written,
// so that a SYNC never covers a chunk still on its way into a socket. A
// writer that fails (or reads anything from the receiver, which only ever
// sends ABORT there) records the error, which ends the session.
//
// Not a base/worker.h Worker: the writers do not run a queue each, they
// share one counter, so whichever connection is free takes the next chunk.
class StreamPool {
public:
  StreamPool(std::vector<std::unique_ptr<Conn>> conns, std::uint64_t bwlimit, const std::atomic<bool>* stop);
  StreamPool(const StreamPool&) = delete;
  StreamPool& operator=(const StreamPool&) = delete;
  ~StreamPool();

  int wake_fd() const { return m_wake.get(); }
  std::size_t size() const { return m_conns.size(); }

  // A journaled file becomes active: chunks from `next` on may be sent, below `limit`.
  void start_file(const SourceFile* source, std::uint32_t chunk_size, std::uint64_t next, std::uint64_t limit);
  // The window moved (a CHECKPOINT).
  void set_limit(std::uint64_t limit);
  // Every chunk of the file is written: the writers must not touch it any more.
  void end_file();
  // The session's thread: the next chunk for the first connection, if the window has room.
  std::optional<std::uint64_t> claim();
  bool claimable();
  // A chunk fully written to its socket (by the session's thread).
  void written(std::uint64_t index, const Hash128& hash, std::uint64_t len);
  // The session's thread: the chunks written since the last call (moved
  // into `into`) and their bytes; a writer's error ends the session.
  Status take(std::map<std::uint64_t, Hash128>& into, std::uint64_t& bytes);
  // Every stream together keeps under --bwlimit.
  void pace(std::uint64_t len) { throttle(m_bwlimit, m_total += len, m_start, m_stop_flag); }

private:
  // Writer `i`'s thread.
  void run(std::size_t i);
  // Read, hash and send chunk `index` of `source` over `conn`.
  Status write_chunk(Conn& conn, const SourceFile& source, std::uint32_t chunk_size, std::uint64_t index,
                     std::vector<std::uint8_t>& buf, Hash128& hash);
  static Status peer_spoke(Conn& conn);
  void poke();

  std::vector<std::unique_ptr<Conn>> m_conns;
  const std::uint64_t m_bwlimit;
  const std::atomic<bool>* m_stop_flag;
  const Clock::time_point m_start = Clock::now();
  std::atomic<std::uint64_t> m_total{0};
  Fd m_wake;
  std::mutex m_mutex;
  std::condition_variable m_cv;
  bool m_stop = false;
  const SourceFile* m_source = nullptr;
  std::uint32_t m_chunk_size = 0;
  std::uint64_t m_next = 0, m_limit = 0;
  std::map<std::uint64_t, Hash128> m_written;
  std::uint64_t m_bytes = 0;
  std::optional<Error> m_error;
  std::vector<std::thread> m_threads; // last: they start once everything above exists
};

// --streams: open the `streams - 1` extra connections through `connect`,
// each with its JOIN for the session's `cookie`, and start their writers
// once every one is confirmed (ACCEPT with the cookie), before any DATA goes.
Result<std::unique_ptr<StreamPool>> open_streams(unsigned streams, const frame::Cookie& cookie, const Connect& connect,
                                                 std::uint64_t bwlimit, const std::atomic<bool>* stop);

} // namespace sesscp::send
