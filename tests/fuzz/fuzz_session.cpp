// libFuzzer target: the receiver's session state machine.
//
// Each input is the byte stream a sender would write on the connection: it
// is played into one end of a socketpair and Receiver::handle_connection runs
// a whole plaintext (--insecure) session on the other end, establishment,
// offers, data, sync points, release, exactly as for an accepted TCP socket.
// The input then ends (EOF), so every session finishes within the short
// timeouts below even when the stream stops mid-frame.
//
// Besides the sanitizers' checks, the target asserts what a hostile sender
// must never achieve: a file created outside the receiver's directory (also
// through a link it sent), anything there other than a file, directory or
// link, a change to the --serve export (half- and full-duplex sessions reach
// it), or an internal error (which the engine only reports for its own bugs).

#include "core/events.h"
#include "base/fd.h"
#include "core/frame.h"
#include "core/dialog/dialog.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

using namespace sesscp;

namespace {

// Inputs past this are not interesting for the state machine and would only
// slow the fuzzer down (DATA payloads are what makes inputs big).
constexpr std::size_t k_max_input = 1u << 20;

// abort() rather than assert(): the check must hold in every build type.
void check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "fuzz_session: invariant violated: %s\n", what);
  std::abort();
}

// The receiver reports through Events; the fuzzer wants silence (and speed).
class SilentEvents final : public Events {
public:
  void info(const std::string&) override {}
  void debug(const std::string&) override {}
  void progress(const std::string&, std::uint64_t, std::uint64_t) override {}
  void file_report(bool, const FileReport&) override {}
};

// Everything that lives for the whole fuzzing process. Never destroyed: the
// Receiver keeps references to the options and events, and exit() order
// between statics is not worth reasoning about.
struct Fixture {
  std::string base;     // mkdtemp directory holding the three below and nothing else
  std::string dir;      // base/recv: the receiver's directory
  std::string sentinel; // base/sentinel: must stay empty
  std::string serve;    // base/serve: the receiver's --serve export, read-only
  SilentEvents events;
  ReceiveOptions options;
  std::optional<Receiver> receiver;
};

Fixture* g_fixture = nullptr;

void remove_tree(const std::string& path) {
  DIR* d = opendir(path.c_str());
  if (d) {
    while (dirent* e = readdir(d)) {
      std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      std::string child = path + "/" + name;
      struct stat st {};
      if (lstat(child.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) remove_tree(child);
      else unlink(child.c_str());
    }
    closedir(d);
  }
  rmdir(path.c_str());
}

void remove_fixture_dir() {
  if (g_fixture) remove_tree(g_fixture->base);
}

std::vector<std::string> entries(const std::string& path) {
  std::vector<std::string> out;
  DIR* d = opendir(path.c_str());
  check(d != nullptr, "cannot list a fixture directory");
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") out.push_back(name);
  }
  closedir(d);
  return out;
}

Fixture& fixture() {
  if (g_fixture) return *g_fixture;
  // A sender that leaves early must cost an EPIPE, not the process (the CLI
  // ignores SIGPIPE the same way).
  std::signal(SIGPIPE, SIG_IGN);
  auto* f = new Fixture;
  // /tmp unless TMPDIR says otherwise: every OFFER creates and fsyncs a
  // journal, so a tmpfs (TMPDIR=/dev/shm) runs about three times faster.
  const char* tmp = std::getenv("TMPDIR");
  std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/sesscp-fuzz-session.XXXXXX";
  check(mkdtemp(templ.data()) != nullptr, "mkdtemp failed");
  f->base = templ;
  f->dir = f->base + "/recv";
  f->sentinel = f->base + "/sentinel";
  f->serve = f->base + "/serve";
  check(mkdir(f->dir.c_str(), 0700) == 0 && mkdir(f->sentinel.c_str(), 0700) == 0 &&
            mkdir(f->serve.c_str(), 0700) == 0 && mkdir((f->serve + "/sub").c_str(), 0700) == 0,
        "cannot create the fixture directories");
  // An export for half- and full-duplex sessions (FETCH / GIVE_TOKEN "s.txt", "sub").
  for (const char* name : {"/s.txt", "/sub/t.txt"}) {
    FILE* out = std::fopen((f->serve + name).c_str(), "w");
    check(out != nullptr && std::fputs("exported\n", out) >= 0 && std::fclose(out) == 0, "cannot write the export");
  }
  f->options.serve_dir = f->serve;
  dialog::wire(f->options);
  f->options.listen = {"127.0.0.1", 0}; // bound, never connected to
  f->options.dir = f->dir;
  f->options.timeout_ms = 200;
  f->options.handshake_timeout_ms = 200;
  f->options.tls.insecure = true;
  auto receiver = Receiver::create(f->options, f->events);
  if (!receiver) {
    std::fprintf(stderr, "fuzz_session: cannot create the receiver: %s\n", receiver.error().message.c_str());
    std::abort();
  }
  f->receiver.emplace(std::move(*receiver));
  g_fixture = f;
  std::atexit(remove_fixture_dir);
  return *f;
}

std::uint32_t be32(const std::uint8_t* p) {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) | p[3];
}

// Offsets just past each FILE_END frame in the input, walking it as frames.
// A real sender never sends past FILE_END before FILE_DONE comes back: the
// file is still open until then and anything else is a protocol error. So
// the stream pauses there; otherwise whether a pipelined RELEASE or OFFER is
// accepted would depend on how fast the receiver's fsyncs were, and the
// fuzzer would chase timing instead of code.
std::vector<std::size_t> file_end_pauses(const std::uint8_t* data, std::size_t size) {
  std::vector<std::size_t> out;
  std::size_t pos = 0;
  while (size - pos >= frame::k_header_size) {
    const std::size_t end = pos + frame::k_header_size + be32(data + pos + 4);
    if (end > size) break;
    if (data[pos] == static_cast<std::uint8_t>(frame::Type::file_end) && end < size) out.push_back(end);
    pos = end;
  }
  return out;
}

// The sender's side: write the input, then EOF, while draining whatever the
// receiver answers so neither side blocks on a full socket buffer. After a
// FILE_END it waits for the receiver's FILE_DONE or ABORT (the receiver's
// own timeouts bound that wait). Ends when the receiver closes its end.
void play_sender(int fd, const std::uint8_t* data, std::size_t size) {
  const auto pauses = file_end_pauses(data, size);
  std::size_t answers = 0; // FILE_DONE and ABORT frames seen so far
  std::vector<std::uint8_t> replies;
  std::size_t sent = 0;
  bool writing = true;
  std::uint8_t sink[64 * 1024];
  for (;;) {
    const std::size_t allowed = answers < pauses.size() ? pauses[answers] : size;
    if (writing && sent == size) {
      shutdown(fd, SHUT_WR);
      writing = false;
    }
    const bool want_out = writing && sent < allowed;
    pollfd p{fd, static_cast<short>(POLLIN | (want_out ? POLLOUT : 0)), 0};
    int rc = poll(&p, 1, 1000);
    if (rc < 0 && errno == EINTR) continue;
    check(rc >= 0, "poll on the sender's socket failed");
    if (rc == 0) continue; // the receiver's own timeouts end the session
    if (want_out && (p.revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t n = send(fd, data + sent, allowed - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) sent += static_cast<std::size_t>(n);
      // EPIPE or ECONNRESET: the receiver ended the session before reading it all.
      if (n < 0 && errno != EAGAIN && errno != EINTR) sent = size;
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = recv(fd, sink, sizeof sink, MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) break;
      if (n > 0) replies.insert(replies.end(), sink, sink + n);
      // The receiver's frames are well formed: count the ones that end a file.
      std::size_t pos = 0;
      while (replies.size() - pos >= frame::k_header_size) {
        const std::size_t end = pos + frame::k_header_size + be32(replies.data() + pos + 4);
        if (end > replies.size()) break;
        const auto type = static_cast<frame::Type>(replies[pos]);
        if (type == frame::Type::file_done || type == frame::Type::abort) ++answers;
        pos = end;
      }
      replies.erase(replies.begin(), replies.begin() + static_cast<std::ptrdiff_t>(pos));
    }
  }
  close(fd);
}

// The receiver may create only regular files, directories and symbolic
// links (a tree's MKDIR and SYMLINK), and only beneath its directory: no
// FIFO, socket or device, nothing beside --dir, nothing in the sentinel
// (a symlink the input planted must never be followed for a write). Then
// empty that directory so every input starts from the same state and disk
// use stays bounded.
void check_tree(const std::string& dir) {
  for (const auto& name : entries(dir)) {
    std::string path = dir + "/" + name;
    struct stat st {};
    check(lstat(path.c_str(), &st) == 0, "cannot stat a file the receiver left");
    if (S_ISDIR(st.st_mode)) {
      check_tree(path);
      check(rmdir(path.c_str()) == 0, "cannot remove a directory the receiver left");
      continue;
    }
    if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)) {
      std::fprintf(stderr, "fuzz_session: %s has mode %o\n", path.c_str(), st.st_mode);
      check(false, "the receiver created something other than a file, directory or link");
    }
    check(unlink(path.c_str()) == 0, "cannot remove a file the receiver left");
  }
}

void check_and_clean(Fixture& f) {
  auto top = entries(f.base);
  if (top.size() != 3) {
    for (const auto& name : top) std::fprintf(stderr, "fuzz_session: %s/%s\n", f.base.c_str(), name.c_str());
    check(false, "the receiver created something beside its directory");
  }
  check(entries(f.sentinel).empty(), "the receiver wrote into a directory outside its own");
  auto exported = entries(f.serve);
  check(exported.size() == 2 && entries(f.serve + "/sub").size() == 1, "the receiver changed its --serve export");
  check_tree(f.dir);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > k_max_input) return 0;
  Fixture& f = fixture();
  int sv[2];
  check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair failed");
  std::thread sender(play_sender, sv[0], data, size);
  auto status = f.receiver->handle_connection(Fd(sv[1]));
  sender.join();
  if (!status && status.error().kind == ErrorKind::internal) {
    std::fprintf(stderr, "fuzz_session: internal error: %s\n", status.error().message.c_str());
    check(false, "a sender's bytes caused an internal error");
  }
  check_and_clean(f);
  return 0;
}
