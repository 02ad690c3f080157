// One ssh client process: its stdin and stdout are one end of a socketpair
// (the session's connection is the other end), its stderr is read by a
// thread into a bounded buffer (what ssh and the remote sesscp said).
#pragma once

#include "base/fd.h"
#include "base/result.h"
#include "core/events.h"

#include <sys/types.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace sesscp::ssh {

class Channel {
public:
  // Start argv[0] (searched in PATH) with the other arguments. Its stderr
  // lines also go to `events.debug` as "ssh: LINE". ENOENT: ErrorKind::refused.
  static Result<std::unique_ptr<Channel>> start(const std::vector<std::string>& argv, Events& events);
  ~Channel(); // closes the socket, then waits for the process (SIGTERM, SIGKILL after a grace time)
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // The session's end of the socketpair (once).
  Fd take_socket() { return std::move(m_socket); }
  // Wait up to `timeout_ms` for the process to exit; its wait status, or
  // nothing while it still runs.
  std::optional<int> wait_exit(int timeout_ms);
  // Everything it wrote to stderr (the last 16 KiB).
  std::string stderr_text();

private:
  Channel(pid_t pid, Fd socket, Fd err, Events& events);
  void read_stderr(Events& events);

  pid_t m_pid;
  Fd m_socket;
  Fd m_err;
  std::optional<int> m_status;
  std::mutex m_mutex;
  std::string m_text;
  std::atomic<bool> m_quit{false};
  std::thread m_reader;
};

} // namespace sesscp::ssh
