#include "ssh/channel.h"

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

extern char** environ;

namespace sesscp::ssh {

namespace {

constexpr std::size_t k_max_stderr = 16 << 10;

// Larger socket buffers than the default, for a fast SSH cipher's bursts.
void widen(int fd) {
  int size = 4 << 20;
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
}

} // namespace

Result<std::unique_ptr<Channel>> Channel::start(const std::vector<std::string>& argv, Events& events) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return errno_error(ErrorKind::io, "socketpair", errno);
  Fd ours(sv[0]), theirs(sv[1]);
  widen(ours.get());
  widen(theirs.get());
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) return errno_error(ErrorKind::io, "pipe", errno);
  Fd err_read(pipefd[0]), err_write(pipefd[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, theirs.get(), 0);
  posix_spawn_file_actions_adddup2(&actions, theirs.get(), 1);
  posix_spawn_file_actions_adddup2(&actions, err_write.get(), 2);
  // The child's signals as a shell would leave them (we ignore SIGPIPE).
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t defaults;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawnp(&pid, args[0], &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc == ENOENT)
    return make_error(ErrorKind::refused, "'" + argv[0] + "' not found: install openssh-client, or name the program with -e/--rsh");
  if (rc != 0) return errno_error(ErrorKind::refused, "cannot start '" + argv[0] + "'", rc);
  return std::unique_ptr<Channel>(new Channel(pid, std::move(ours), std::move(err_read), events));
}

Channel::Channel(pid_t pid, Fd socket, Fd err, Events& events)
    : m_pid(pid), m_socket(std::move(socket)), m_err(std::move(err)) {
  m_reader = std::thread([this, &events] { read_stderr(events); });
}

void Channel::read_stderr(Events& events) {
  std::string line;
  char buf[4096];
  while (!m_quit.load()) {
    pollfd p{m_err.get(), POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    ssize_t n = ::read(m_err.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    std::lock_guard lock(m_mutex);
    for (ssize_t i = 0; i < n; ++i) {
      if (buf[i] == '\r') continue;
      if (buf[i] != '\n') {
        if (line.size() < 4096) line += buf[i];
        continue;
      }
      if (!line.empty()) events.debug("ssh: " + line);
      m_text += line + "\n";
      line.clear();
    }
    if (m_text.size() > k_max_stderr) m_text.erase(0, m_text.size() - k_max_stderr);
  }
  std::lock_guard lock(m_mutex);
  if (!line.empty()) m_text += line + "\n";
}

std::optional<int> Channel::wait_exit(int timeout_ms) {
  if (m_status) return m_status;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    int status = 0;
    pid_t r = waitpid(m_pid, &status, WNOHANG);
    if (r == m_pid || (r < 0 && errno == ECHILD)) {
      m_status = r == m_pid ? status : 0;
      return m_status;
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    usleep(10'000);
  }
}

std::string Channel::stderr_text() {
  // What ssh wrote just before it exited may still be in the pipe.
  for (int i = 0; i < 20 && !m_quit.load(); ++i) {
    pollfd p{m_err.get(), POLLIN, 0};
    if (poll(&p, 1, 0) <= 0) break;
    usleep(5'000);
  }
  std::lock_guard lock(m_mutex);
  return m_text;
}

Channel::~Channel() {
  m_socket.reset(); // EOF on ssh's stdin: it closes the channel and exits
  if (!wait_exit(2000)) {
    kill(m_pid, SIGTERM);
    if (!wait_exit(1000)) {
      kill(m_pid, SIGKILL);
      wait_exit(5000);
    }
  }
  m_quit.store(true);
  m_reader.join();
}

} // namespace sesscp::ssh
