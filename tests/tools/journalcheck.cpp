// journalcheck: prove that a journal never points past durable data. For
// tests only (docs/RELIABILITY.md).
//
//   journalcheck NAME.sesscp.journal NAME.sesscp.part
//
// Replays the journal with the receiver's own parser (Journal::read) and
// re-hashes, with XXH3-128, every chunk it confirms, from the first to the
// last (unlike the receiver's verify_tail, which reads only the tail).
//
// Exit status: 0 every confirmed chunk is in the part file with its hash, or
// the journal confirms nothing (missing, empty, or with an unusable header:
// the receiver then starts from zero); 1 the journal confirms a chunk the
// part file does not hold (short or different bytes); 2 usage or a read error.
// One line on stdout says which, and why.

#include "checkpoint/journal.h"
#include "base/hash.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

using namespace sesscp;

int say(int rc, const std::string& msg) {
  std::printf("journalcheck: %s\n", msg.c_str());
  return rc;
}

std::string hex(const Hash128& h) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (auto b : h) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

// Read up to out.size() bytes at `offset`; fewer only at end of file.
long read_at(int fd, std::vector<std::uint8_t>& out, std::uint64_t offset) {
  std::size_t got = 0;
  while (got < out.size()) {
    ssize_t n = pread(fd, out.data() + got, out.size() - got, static_cast<off_t>(offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  return static_cast<long>(got);
}

int check(const std::string& journal_path, const std::string& part_path) {
  struct stat jst{};
  if (lstat(journal_path.c_str(), &jst) != 0) {
    if (errno == ENOENT) return say(0, "ok: no journal, nothing confirmed");
    return say(2, "cannot stat " + journal_path + ": " + std::strerror(errno));
  }
  if (jst.st_size == 0) return say(0, "ok: empty journal (no journal to the receiver), nothing confirmed");
  auto replay = checkpoint::Journal::read(journal_path);
  if (!replay) {
    if (replay.error().kind == ErrorKind::corrupt)
      return say(0, "ok: journal unusable (" + replay.error().message + "), nothing confirmed: the receiver restarts from zero");
    return say(2, "cannot read " + journal_path + ": " + replay.error().message);
  }
  const auto& id = replay->identity;
  const std::uint64_t n = replay->chunk_hashes.size();
  std::string tail = replay->tail_problem.empty() ? "" : "; tail ignored: " + replay->tail_problem;
  if (n == 0) return say(0, "ok: journal for " + id.name + " confirms no chunks" + tail);
  int fd = open(part_path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0)
    return say(errno == ENOENT ? 1 : 2, "FAIL: journal confirms " + std::to_string(n) + " chunks but " + part_path +
                                            " cannot be opened: " + std::strerror(errno));
  std::vector<std::uint8_t> buf;
  for (std::uint64_t i = 0; i < n; ++i) {
    const std::uint64_t len = checkpoint::chunk_length(i, id.chunk_size, id.size);
    const std::uint64_t offset = i * id.chunk_size;
    buf.resize(len);
    long got = read_at(fd, buf, offset);
    if (got < 0) {
      int err = errno;
      close(fd);
      return say(2, "cannot read " + part_path + ": " + std::strerror(err));
    }
    if (static_cast<std::uint64_t>(got) < len) {
      close(fd);
      return say(1, "FAIL: journal confirms chunk " + std::to_string(i) + " of " + std::to_string(n) + " (bytes " +
                        std::to_string(offset) + ".." + std::to_string(offset + len) + ") but " + part_path +
                        " holds only " + std::to_string(offset + static_cast<std::uint64_t>(got)) + " bytes");
    }
    auto h = xxh3_128(buf);
    if (h != replay->chunk_hashes[i]) {
      close(fd);
      return say(1, "FAIL: journal confirms chunk " + std::to_string(i) + " of " + std::to_string(n) + " (bytes " +
                        std::to_string(offset) + ".." + std::to_string(offset + len) + ") with XXH3-128 " +
                        hex(replay->chunk_hashes[i]) + " but " + part_path + " holds " + hex(h));
    }
  }
  close(fd);
  return say(0, "ok: all " + std::to_string(n) + " confirmed chunks of " + id.name + " (" +
                    std::to_string(replay->confirmed_bytes()) + " of " + std::to_string(id.size) +
                    " bytes, serial " + std::to_string(replay->last_serial) + ") match " + part_path + tail);
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: journalcheck NAME.sesscp.journal NAME.sesscp.part\n");
    return 2;
  }
  return check(argv[1], argv[2]);
}
