// Extra connections of a session (--streams): StreamHub, one session's; StreamRegistry, where a JOIN finds it.
#pragma once

#include "base/result.h"
#include "core/frame.h"
#include "core/recv/wake.h"

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace sesscp::recv {

class IncomingFile;

// What a session shares with the extra connections (streams) that joined it
// (send --streams N, docs/PROTOCOL.md "Several connections"): which file
// takes their DATA now, the joined streams' sockets (shut down when the
// session ends, which ends their threads), and what they report back to the
// session's thread (an error, chunks to ask for again), with a descriptor
// that wakes it.
class StreamHub {
public:
  StreamHub(unsigned streams, int timeout_ms) : m_streams(streams), m_timeout_ms(timeout_ms) {}
  StreamHub(const StreamHub&) = delete;
  StreamHub& operator=(const StreamHub&) = delete;

  unsigned streams() const { return m_streams; }
  int wake_fd() const { return m_wake.fd(); }
  // Readable once the session has ended (never drained).
  int closing_fd() const { return m_closing.fd(); }

  // A connection asks to be stream `index` (1..N-1); "" when it may.
  std::string join(std::uint16_t index, int fd);
  void leave(int fd);
  std::size_t joined();
  // Streams announced that have not joined yet (0 once the session ends).
  std::size_t outstanding();

  // A stream's thread: the file its DATA goes to (nullptr: none), held
  // until release(); the session never frees a file held.
  IncomingFile* acquire();
  void release();
  // The session: `file` takes the streams' DATA from now on.
  void set_target(IncomingFile* file);

  // A stream's thread: it failed; the whole session ends.
  void fail(const Error& error);
  // A stream's thread: ask the sender for this chunk again.
  void resend(std::uint64_t chunk);
  // The session's thread: what the streams reported since the last call.
  std::optional<Error> take(std::vector<std::uint64_t>& resends);

  bool closed();
  // The session ends: no stream may take more data; their sockets are shut
  // down (which ends their reads at once) and this returns when none holds
  // a file any more.
  void close();

private:
  // Wait until no stream holds a file; a stream that does not finish its
  // chunk within the timeout has its socket shut down, which ends its read.
  void wait_idle(std::unique_lock<std::mutex>& lock);

  const unsigned m_streams;
  const int m_timeout_ms;
  Wake m_wake, m_closing;
  std::mutex m_mutex;
  std::condition_variable m_cv;
  std::set<std::uint16_t> m_joined;
  std::vector<int> m_fds;
  IncomingFile* m_target = nullptr;
  int m_in_use = 0;
  bool m_closed = false;
  std::optional<Error> m_error;
  std::vector<std::uint64_t> m_resends;
};

} // namespace sesscp::recv

namespace sesscp {

// Live sessions that accepted extra streams, by cookie: where a JOIN finds
// its session. Shared by every connection of one Receiver.
class StreamRegistry {
public:
  Result<frame::Cookie> add(std::shared_ptr<recv::StreamHub> hub);
  std::shared_ptr<recv::StreamHub> find(const frame::Cookie& cookie);
  void remove(const frame::Cookie& cookie);
  // Extra connections that live sessions still wait for.
  std::size_t outstanding();

private:
  std::mutex m_mutex;
  std::map<frame::Cookie, std::shared_ptr<recv::StreamHub>> m_hubs;
};

} // namespace sesscp
