// Re-verification of partial files (checkpoint/verify.h): PartReader,
// verify_chunks, to_ranges and the background Reverifier.
#include "checkpoint/journal.h"
#include "checkpoint/verify.h"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace sesscp;
using namespace sesscp::checkpoint;

namespace {

struct TempFile {
  std::string dir, path;
  Fd fd;
  TempFile() {
    char tmpl[] = "/tmp/sesscp-verify-XXXXXX";
    dir = mkdtemp(tmpl);
    path = dir + "/part";
    fd = Fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  }
  ~TempFile() { std::filesystem::remove_all(dir); }
  void write(const std::vector<std::uint8_t>& bytes) const {
    REQUIRE(ftruncate(fd.get(), 0) == 0);
    REQUIRE(pwrite(fd.get(), bytes.data(), bytes.size(), 0) == static_cast<ssize_t>(bytes.size()));
  }
};

std::vector<std::uint8_t> pattern(std::size_t n, unsigned seed) {
  std::vector<std::uint8_t> v(n);
  std::uint32_t x = seed * 2654435761u + 1;
  for (auto& b : v) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<std::uint8_t>(x);
  }
  return v;
}

std::vector<Hash128> chunk_hashes(const std::vector<std::uint8_t>& bytes, std::uint32_t cs) {
  std::vector<Hash128> out;
  for (std::size_t off = 0; off < bytes.size(); off += cs)
    out.push_back(xxh3_128({bytes.data() + off, std::min<std::size_t>(cs, bytes.size() - off)}));
  return out;
}

// Run a Reverifier to the end, taking its news often; every index it
// reports damaged, in the order reported, and the final news.
struct Run {
  std::vector<std::uint64_t> damaged;
  Reverifier::News last;
  int takes = 0;
};
Run run_to_end(int fd, std::uint32_t cs, std::uint64_t size, std::vector<Hash128> expected) {
  std::atomic<int> notified{0};
  Reverifier r(fd, cs, size, std::move(expected), [&] { ++notified; });
  Run out;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (;;) {
    auto news = r.take();
    ++out.takes;
    out.damaged.insert(out.damaged.end(), news.damaged.begin(), news.damaged.end());
    out.last = news;
    if (news.done || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  CHECK(notified.load() > 0);
  return out;
}

} // namespace

TEST_SUITE("verify") {
TEST_CASE("to_ranges joins consecutive chunks") {
  std::vector<std::uint64_t> v = {0, 1, 2, 5, 7, 8};
  auto r = to_ranges(v);
  REQUIRE(r.size() == 3);
  CHECK((r[0].first == 0 && r[0].count == 3));
  CHECK((r[1].first == 5 && r[1].count == 1));
  CHECK((r[2].first == 7 && r[2].count == 2));
  CHECK(to_ranges(std::vector<std::uint64_t>{}).empty());
}

TEST_CASE("PartReader: whole chunks, the short last chunk, and missing chunks past the end") {
  TempFile f;
  const std::uint32_t cs = 4096;
  auto bytes = pattern(5 * cs + 100, 1); // 6 chunks, the last of 100 bytes
  f.write(bytes);
  auto want = chunk_hashes(bytes, cs);
  PartReader reader(f.fd.get(), cs, bytes.size());
  auto got = reader.hash_chunks(0, 6);
  REQUIRE(got.ok());
  REQUIRE(got->size() == 6);
  for (std::size_t i = 0; i < 6; ++i) CHECK((*got)[i] == want[i]);
  // The file ends inside chunk 3: chunks 3, 4 and 5 are missing.
  REQUIRE(ftruncate(f.fd.get(), 3 * cs + 10) == 0);
  auto cut = reader.hash_chunks(2, 4);
  REQUIRE(cut.ok());
  CHECK((*cut)[0] == want[2]);
  CHECK_FALSE((*cut)[1].has_value());
  CHECK_FALSE((*cut)[2].has_value());
  CHECK_FALSE((*cut)[3].has_value());
}

TEST_CASE("verify_chunks finds exactly the damaged chunks, with a chunk count not a multiple of the batch") {
  TempFile f;
  const std::uint32_t cs = 64 * 1024;
  const std::size_t n = 200; // 8 MiB batches hold 128 chunks of 64 KiB: 200 is one and a half
  auto bytes = pattern(n * cs - 777, 2);
  f.write(bytes);
  auto hashes = chunk_hashes(bytes, cs);
  auto clean = verify_chunks(f.fd.get(), cs, bytes.size(), hashes);
  REQUIRE(clean.ok());
  CHECK(clean->empty());
  std::set<std::uint64_t> hit = {0, 127, 128, 199};
  for (auto i : hit) {
    std::uint8_t b = 0;
    REQUIRE(pread(f.fd.get(), &b, 1, static_cast<off_t>(i * cs + 5)) == 1);
    b = static_cast<std::uint8_t>(b ^ 0x40);
    REQUIRE(pwrite(f.fd.get(), &b, 1, static_cast<off_t>(i * cs + 5)) == 1);
  }
  std::uint64_t last_done = 0;
  auto damaged = verify_chunks(f.fd.get(), cs, bytes.size(), hashes,
                               [&](std::uint64_t done, std::uint64_t total) {
                                 CHECK(done > last_done);
                                 CHECK(total == n);
                                 last_done = done;
                               });
  REQUIRE(damaged.ok());
  CHECK(std::set<std::uint64_t>(damaged->begin(), damaged->end()) == hit);
  CHECK(last_done == n);
  // Fewer expected hashes than chunks: only those are checked.
  auto prefix = verify_chunks(f.fd.get(), cs, bytes.size(), std::span(hashes).first(100));
  REQUIRE(prefix.ok());
  CHECK(*prefix == std::vector<std::uint64_t>{0});
  // More hashes than the file has chunks is a caller bug.
  auto extra = hashes;
  extra.push_back({});
  CHECK_FALSE(verify_chunks(f.fd.get(), cs, bytes.size(), extra).ok());
}

TEST_CASE("Reverifier checks every chunk exactly once and reports each damaged one once, in order") {
  TempFile f;
  const std::uint32_t cs = 16 * 1024;
  const std::size_t n = 1500; // three and a bit batches of 512
  auto bytes = pattern(n * cs, 3);
  auto hashes = chunk_hashes(bytes, cs);
  // Damage every 97th chunk, and cut the file so the last 10 are missing.
  for (std::size_t i = 0; i < n; i += 97) bytes[i * cs + 1] ^= 1;
  bytes.resize((n - 10) * cs);
  f.write(bytes);
  std::vector<std::uint64_t> want;
  for (std::size_t i = 0; i < n; ++i)
    if (i % 97 == 0 || i >= n - 10) want.push_back(i);
  auto run = run_to_end(f.fd.get(), cs, n * cs, hashes);
  CHECK(run.last.done);
  CHECK_FALSE(run.last.error.has_value());
  CHECK(run.last.checked == n);
  CHECK(run.last.total == n);
  CHECK(run.damaged == want); // each once, ascending, across many takes
  CHECK(run.takes > 1);
}

TEST_CASE("Reverifier: nothing to check is done at once; a clean file has no damage") {
  TempFile f;
  Reverifier empty(f.fd.get(), 4096, 0, {}, [] {});
  auto news = empty.take();
  CHECK(news.done);
  CHECK(news.checked == 0);
  auto bytes = pattern(40 * 4096, 4);
  f.write(bytes);
  auto run = run_to_end(f.fd.get(), 4096, bytes.size(), chunk_hashes(bytes, 4096));
  CHECK(run.damaged.empty());
  CHECK(run.last.checked == 40);
}

TEST_CASE("Reverifier destroyed mid-run stops and joins; writer_busy is asked and bounded") {
  TempFile f;
  const std::uint32_t cs = 1u << 20;
  auto bytes = pattern(64 * cs, 5);
  f.write(bytes);
  std::atomic<int> asked{0};
  {
    // Destroyed while it waits on a writer that is always busy: joins.
    Reverifier r(f.fd.get(), cs, bytes.size(), chunk_hashes(bytes, cs), [] {}, [&] {
      ++asked;
      return true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
  } // joins here, whatever it was doing
  CHECK(asked.load() > 0);
  {
    // A writer that is always busy: the check still moves on to the end
    // (at most 20 ms of waiting per 8 MiB read), it is not starved.
    Reverifier r(f.fd.get(), cs, bytes.size(), chunk_hashes(bytes, cs), [] {}, [] { return true; });
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    Reverifier::News news;
    while (!(news = r.take()).done && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    CHECK(news.done);
    CHECK(news.checked == 64);
  }
  auto run = run_to_end(f.fd.get(), cs, bytes.size(), chunk_hashes(bytes, cs));
  CHECK(run.last.checked == 64);
}
}
