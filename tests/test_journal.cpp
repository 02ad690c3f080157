// Unit tests for the sidecar journal (checkpoint/journal.h, docs/JOURNAL.md).
#include "checkpoint/journal.h"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

using namespace sesscp;
using namespace sesscp::checkpoint;

namespace {

using Bytes = std::vector<std::uint8_t>;

// A fresh mkdtemp directory, removed with everything in it.
class ScratchDir {
public:
  ScratchDir() {
    std::string tmpl = "/tmp/sesscp-journal-test-XXXXXX";
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    m_path = tmpl;
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(m_path, ec);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  std::string file(const std::string& name) const { return m_path + "/" + name; }

private:
  std::string m_path;
};

Bytes read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  REQUIRE(out);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out);
}

std::uint64_t file_size(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return static_cast<std::uint64_t>(st.st_size);
}

Hash128 hash_of(const std::string& s) {
  return xxh3_128({reinterpret_cast<const std::uint8_t*>(s.data()), s.size()});
}

Hash128 test_hash(std::uint64_t i) { return hash_of("test-chunk-" + std::to_string(i)); }

Identity test_identity(std::uint64_t size, std::uint32_t chunk_size = 4096) {
  Identity id;
  id.name = "data.bin";
  id.size = size;
  id.mtime_ns = 1700000000123456789;
  id.chunk_size = chunk_size;
  for (std::size_t i = 0; i < 16; ++i) id.fingerprint[i] = static_cast<std::uint8_t>(0xA0 + i);
  return id;
}

CheckpointRecord make_record(std::uint64_t serial, std::uint64_t first, std::uint64_t count,
                             std::uint64_t salt = 0) {
  CheckpointRecord r;
  r.serial = serial;
  r.first_chunk = first;
  for (std::uint64_t i = 0; i < count; ++i) r.hashes.push_back(test_hash(first + i + salt));
  return r;
}

std::vector<Hash128> test_hashes(std::uint64_t count) {
  std::vector<Hash128> v;
  for (std::uint64_t i = 0; i < count; ++i) v.push_back(test_hash(i));
  return v;
}

// An encoder written from docs/JOURNAL.md, independent of journal.cpp, for
// hand-made records that the writer refuses to produce.
void put_be(Bytes& out, std::uint64_t v, int n) {
  for (int i = n - 1; i >= 0; --i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

Bytes raw_record(std::uint8_t type, const Bytes& payload, std::uint32_t length) {
  Bytes body;
  put_be(body, length, 4);
  body.push_back(type);
  body.insert(body.end(), payload.begin(), payload.end());
  Bytes out;
  put_be(out, xxh3_64(body), 8);
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

Bytes raw_record(std::uint8_t type, const Bytes& payload) {
  return raw_record(type, payload, static_cast<std::uint32_t>(payload.size()));
}

Bytes checkpoint_payload(std::uint64_t serial, std::uint64_t first, std::uint32_t count,
                         std::uint64_t hashes) {
  Bytes p;
  put_be(p, serial, 8);
  put_be(p, first, 8);
  put_be(p, count, 4);
  for (std::uint64_t i = 0; i < hashes; ++i) {
    const auto h = test_hash(first + i);
    p.insert(p.end(), h.begin(), h.end());
  }
  return p;
}

Bytes raw_checkpoint(std::uint64_t serial, std::uint64_t first, std::uint32_t count) {
  return raw_record(2, checkpoint_payload(serial, first, count, count));
}

Bytes preamble(std::uint16_t version = 1) {
  Bytes out = {0x53, 0x45, 0x53, 0x53, 0x43, 0x50, 0x4A, 0x0A};
  put_be(out, version, 2);
  return out;
}

Bytes header_payload(const Identity& id) {
  Bytes p;
  put_be(p, id.name.size(), 2);
  for (char c : id.name) p.push_back(static_cast<std::uint8_t>(c));
  put_be(p, id.size, 8);
  put_be(p, static_cast<std::uint64_t>(id.mtime_ns), 8);
  put_be(p, id.chunk_size, 4);
  p.insert(p.end(), id.fingerprint.begin(), id.fingerprint.end());
  return p;
}

Bytes journal_start(const Identity& id) {
  Bytes out = preamble();
  const Bytes header = raw_record(1, header_payload(id));
  out.insert(out.end(), header.begin(), header.end());
  return out;
}

void append_bytes(Bytes& out, const Bytes& more) { out.insert(out.end(), more.begin(), more.end()); }

Replay parse_ok(const Bytes& bytes) {
  auto r = Journal::parse(bytes);
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message));
  return std::move(r.value());
}

std::string parse_error(const Bytes& bytes) {
  auto r = Journal::parse(bytes);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error().kind == ErrorKind::corrupt);
  return r.error().message;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Header record size for test_identity(): 13 fixed + 2 + 8 ("data.bin") + 8 + 8 + 4 + 16.
constexpr std::uint64_t k_test_start_size = 10 + 13 + 46;

std::uint64_t checkpoint_size(std::uint64_t count) { return 13 + 20 + 16 * count; }

// A journal with header and records of 2, 3 and 3 chunks (serials 1, 2, 5),
// returning the file offset just after each record in `ends`.
Bytes three_record_journal(std::vector<std::uint64_t>& ends) {
  Bytes j = journal_start(test_identity(100 * 4096));
  ends = {j.size()};
  append_bytes(j, raw_checkpoint(1, 0, 2));
  ends.push_back(j.size());
  append_bytes(j, raw_checkpoint(2, 2, 3));
  ends.push_back(j.size());
  append_bytes(j, raw_checkpoint(5, 5, 3));
  ends.push_back(j.size());
  return j;
}

// Makes writes past `bytes` fail with EFBIG (instead of SIGXFSZ) while alive:
// the one way to get a real short write followed by an error on any filesystem.
class FileSizeLimit {
public:
  explicit FileSizeLimit(std::uint64_t bytes) {
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &m_old) == 0);
    REQUIRE((m_old.rlim_max == RLIM_INFINITY || m_old.rlim_max >= bytes));
    m_old_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit lim = m_old;
    lim.rlim_cur = bytes;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &lim) == 0);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &m_old);
    std::signal(SIGXFSZ, m_old_handler);
  }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;

private:
  rlimit m_old{};
  void (*m_old_handler)(int) = nullptr;
};

} // namespace

TEST_SUITE("journal") {

TEST_CASE("chunk_count and chunk_length handle a short last chunk and 64-bit sizes") {
  CHECK(chunk_count(4096, 0) == 0);
  CHECK(chunk_count(4096, 1) == 1);
  CHECK(chunk_count(4096, 4096) == 1);
  CHECK(chunk_count(4096, 4097) == 2);
  CHECK(chunk_count(0, 100) == 0);
  CHECK(chunk_length(0, 4096, 0) == 0);
  CHECK(chunk_length(0, 4096, 4097) == 4096);
  CHECK(chunk_length(1, 4096, 4097) == 1);
  CHECK(chunk_length(2, 4096, 4097) == 0);

  constexpr auto k_max = std::numeric_limits<std::uint64_t>::max();
  constexpr std::uint32_t k_cs = 64u << 20;
  const std::uint64_t n = chunk_count(k_cs, k_max);
  CHECK(n == k_max / k_cs + 1);
  CHECK(chunk_length(n - 1, k_cs, k_max) == k_max % k_cs);
  CHECK(chunk_length(n - 2, k_cs, k_max) == k_cs);
  CHECK(chunk_length(n, k_cs, k_max) == 0);
  CHECK(chunk_length(k_max, 4096, k_max) == 0);
}

TEST_CASE("create, append several records and read back") {
  ScratchDir dir;
  const auto path = dir.file("x.sesscp.journal");
  // 10 chunks, the last one 1000 bytes.
  const Identity id = test_identity(9 * 4096 + 1000);

  auto j = Journal::create(path, id);
  REQUIRE(j.ok());
  CHECK(j->confirmed_chunks() == 0);
  CHECK(j->last_serial() == 0);
  CHECK(j->path() == path);
  CHECK(j->fd() >= 0);
  CHECK(file_size(path) == k_test_start_size);
  // The writer's bytes equal the independent encoder's.
  CHECK(read_bytes(path) == journal_start(id));

  SUBCASE("partial coverage") {
    REQUIRE(j->append(make_record(1, 0, 3)).ok());
    REQUIRE(j->append(make_record(2, 3, 1)).ok());
    REQUIRE(j->append(make_record(7, 4, 2)).ok());
    CHECK(j->confirmed_chunks() == 6);
    CHECK(j->last_serial() == 7);
    const std::uint64_t expected_len =
        k_test_start_size + checkpoint_size(3) + checkpoint_size(1) + checkpoint_size(2);
    CHECK(file_size(path) == expected_len);

    auto r = Journal::read(path);
    REQUIRE(r.ok());
    CHECK(r->identity == id);
    CHECK(r->chunk_hashes == test_hashes(6));
    CHECK(r->last_serial == 7);
    CHECK(r->valid_length == expected_len);
    CHECK(r->file_length == expected_len);
    CHECK(r->tail_problem.empty());
    CHECK(r->confirmed_bytes() == 6 * 4096);
  }
  SUBCASE("full coverage with a short last chunk") {
    REQUIRE(j->append(make_record(1, 0, 9)).ok());
    REQUIRE(j->append(make_record(2, 9, 1)).ok());
    auto r = Journal::read(path);
    REQUIRE(r.ok());
    CHECK(r->chunk_hashes == test_hashes(10));
    CHECK(r->last_serial == 2);
    CHECK(r->confirmed_bytes() == 9 * 4096 + 1000);
  }
  SUBCASE("header only") {
    auto r = Journal::read(path);
    REQUIRE(r.ok());
    CHECK(r->identity == id);
    CHECK(r->chunk_hashes.empty());
    CHECK(r->last_serial == 0);
    CHECK(r->confirmed_bytes() == 0);
    CHECK(r->valid_length == k_test_start_size);
    CHECK(r->tail_problem.empty());
  }
}

TEST_CASE("confirmed_bytes of an empty source and of a file near 2^64") {
  Replay r;
  r.identity = test_identity(0);
  CHECK(r.confirmed_bytes() == 0);
  r.chunk_hashes.resize(1);
  CHECK(r.confirmed_bytes() == 0); // never more than the file
  r.identity = test_identity(std::numeric_limits<std::uint64_t>::max(), 64u << 20);
  r.chunk_hashes.resize(3);
  CHECK(r.confirmed_bytes() == 3 * (std::uint64_t{64} << 20));
}

TEST_CASE("open after appends continues where the journal ended") {
  ScratchDir dir;
  const auto path = dir.file("x.sesscp.journal");
  const Identity id = test_identity(20 * 4096);
  {
    auto j = Journal::create(path, id);
    REQUIRE(j.ok());
    REQUIRE(j->append(make_record(1, 0, 4)).ok());
    REQUIRE(j->append(make_record(2, 4, 4)).ok());
  }
  const auto before = read_bytes(path);
  Replay replay;
  auto j = Journal::open(path, replay);
  REQUIRE(j.ok());
  CHECK(read_bytes(path) == before); // a clean journal is not rewritten
  CHECK(replay.identity == id);
  CHECK(replay.chunk_hashes == test_hashes(8));
  CHECK(replay.last_serial == 2);
  CHECK(replay.tail_problem.empty());
  CHECK(j->confirmed_chunks() == 8);
  CHECK(j->last_serial() == 2);

  REQUIRE(j->append(make_record(3, 8, 5)).ok());
  REQUIRE(j->append(make_record(4, 13, 7)).ok());
  auto r = Journal::read(path);
  REQUIRE(r.ok());
  CHECK(r->chunk_hashes == test_hashes(20));
  CHECK(r->last_serial == 4);
  CHECK(r->confirmed_bytes() == 20 * 4096);
  CHECK(r->valid_length == file_size(path));
  CHECK(r->tail_problem.empty());
}

TEST_CASE("a torn last record at every length replays the earlier records; open cuts it off") {
  std::vector<std::uint64_t> ends;
  const Bytes full = three_record_journal(ends);
  const std::uint64_t prev_end = ends[2];
  REQUIRE(full.size() == prev_end + checkpoint_size(3));

  // Exactly at a record boundary nothing is torn.
  {
    const Replay r = parse_ok(Bytes(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(prev_end)));
    CHECK(r.chunk_hashes == test_hashes(5));
    CHECK(r.tail_problem.empty());
  }

  ScratchDir dir;
  const auto path = dir.file("torn.sesscp.journal");
  for (std::uint64_t len = prev_end + 1; len < full.size(); ++len) {
    CAPTURE(len);
    const Bytes torn(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(len));
    const Replay r = parse_ok(torn);
    CHECK(r.chunk_hashes == test_hashes(5));
    CHECK(r.last_serial == 2);
    CHECK(r.valid_length == prev_end);
    CHECK(r.file_length == len);
    const std::uint64_t need = len - prev_end < 13 ? 13 : checkpoint_size(3);
    CHECK(r.tail_problem == "torn record at offset " + std::to_string(prev_end) + " (need " +
                                std::to_string(need) + " bytes, have " +
                                std::to_string(len - prev_end) + ")");

    write_bytes(path, torn);
    Replay replay;
    auto j = Journal::open(path, replay);
    REQUIRE(j.ok());
    CHECK(replay.chunk_hashes == test_hashes(5));
    CHECK(replay.tail_problem == r.tail_problem);
    CHECK(file_size(path) == prev_end);
    CHECK(j->confirmed_chunks() == 5);

    // A new record with a different length and hashes lands right after the good ones.
    REQUIRE(j->append(make_record(3, 5, 1, 1000)).ok());
    auto after = Journal::read(path);
    REQUIRE(after.ok());
    CHECK(after->tail_problem.empty());
    CHECK(after->last_serial == 3);
    REQUIRE(after->chunk_hashes.size() == 6);
    CHECK(after->chunk_hashes[5] == test_hash(1005));
    CHECK(after->valid_length == prev_end + checkpoint_size(1));
    CHECK(after->file_length == after->valid_length);
  }
}

TEST_CASE("flipping any bit of the last record drops only that record") {
  std::vector<std::uint64_t> ends;
  const Bytes full = three_record_journal(ends);
  for (std::uint64_t pos = ends[2]; pos < full.size(); ++pos) {
    for (int bit = 0; bit < 8; ++bit) {
      CAPTURE(pos);
      CAPTURE(bit);
      Bytes bad = full;
      bad[pos] ^= static_cast<std::uint8_t>(1u << bit);
      const Replay r = parse_ok(bad);
      CHECK(r.chunk_hashes == test_hashes(5));
      CHECK(r.last_serial == 2);
      CHECK(r.valid_length == ends[2]);
      CHECK(r.file_length == full.size());
      CHECK_FALSE(r.tail_problem.empty());
    }
  }
}

TEST_CASE("flipping any bit of a middle record drops it and everything after it") {
  std::vector<std::uint64_t> ends;
  const Bytes full = three_record_journal(ends);
  for (std::uint64_t pos = ends[1]; pos < ends[2]; ++pos) {
    for (int bit = 0; bit < 8; ++bit) {
      CAPTURE(pos);
      CAPTURE(bit);
      Bytes bad = full;
      bad[pos] ^= static_cast<std::uint8_t>(1u << bit);
      const Replay r = parse_ok(bad);
      CHECK(r.chunk_hashes == test_hashes(2));
      CHECK(r.last_serial == 1);
      CHECK(r.valid_length == ends[1]);
      CHECK_FALSE(r.tail_problem.empty());
    }
  }
  // The checksum is what catches a flipped hash byte, and says so.
  Bytes bad = full;
  bad[ends[2] - 1] ^= 0xFF;
  CHECK(parse_ok(bad).tail_problem == "bad checksum in record at offset " + std::to_string(ends[1]));
}

TEST_CASE("flipping any bit of the magic, version or header record is corrupt") {
  std::vector<std::uint64_t> ends;
  const Bytes full = three_record_journal(ends);
  for (std::uint64_t pos = 0; pos < ends[0]; ++pos) {
    for (int bit = 0; bit < 8; ++bit) {
      CAPTURE(pos);
      CAPTURE(bit);
      Bytes bad = full;
      bad[pos] ^= static_cast<std::uint8_t>(1u << bit);
      (void)parse_error(bad);
    }
  }
  Bytes bad = full;
  bad[ends[0] - 1] ^= 0xFF;
  CHECK(parse_error(bad) == "journal header: bad checksum in record at offset 10");
}

TEST_CASE("bad magic, truncated preamble and torn header are corrupt") {
  const Bytes good = journal_start(test_identity(4096));
  SUBCASE("bad magic") {
    Bytes bad = good;
    bad[0] = 'X';
    CHECK(parse_error(bad) == "not a sesscp journal (bad magic)");
    CHECK(parse_error(Bytes{'G', 'I', 'F'}) == "not a sesscp journal (bad magic)");
  }
  SUBCASE("empty file") {
    CHECK(contains(parse_error(Bytes{}), "journal truncated to 0 bytes"));
  }
  SUBCASE("every truncation inside the preamble or header") {
    for (std::size_t len = 0; len < good.size(); ++len) {
      CAPTURE(len);
      const std::string msg = parse_error(Bytes(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(len)));
      if (len < 10) {
        CHECK(contains(msg, "journal truncated to " + std::to_string(len) + " bytes"));
      } else {
        CHECK(contains(msg, "journal header: torn record at offset 10"));
      }
    }
  }
  SUBCASE("a checkpoint where the header should be") {
    Bytes bad = preamble();
    append_bytes(bad, raw_checkpoint(1, 0, 1));
    CHECK(parse_error(bad) == "journal header: first record has type 2, expected 1");
  }
}

TEST_CASE("future and zero format versions are corrupt") {
  Bytes j = journal_start(test_identity(4096));
  j[9] = 7;
  CHECK(parse_error(j) == "journal version 7 is newer than this sesscp (1)");
  j[8] = 1;
  j[9] = 2;
  CHECK(parse_error(j) == "journal version 258 is newer than this sesscp (1)");
  j[8] = 0;
  j[9] = 0;
  CHECK(contains(parse_error(j), "journal version 0"));
}

TEST_CASE("a length above k_max_record_payload is rejected before the payload is read") {
  // The payload is really there with a valid checksum, so only a check made
  // before reading it can explain the rejection.
  const Bytes big(k_max_record_payload + 1, 0);
  SUBCASE("checkpoint record") {
    std::vector<std::uint64_t> ends;
    Bytes j = three_record_journal(ends);
    append_bytes(j, raw_record(2, big));
    const Replay r = parse_ok(j);
    CHECK(r.chunk_hashes == test_hashes(8));
    CHECK(r.valid_length == ends[3]);
    CHECK(r.tail_problem == "record at offset " + std::to_string(ends[3]) + ": payload length " +
                                std::to_string(k_max_record_payload + 1) + " exceeds limit " +
                                std::to_string(k_max_record_payload));
  }
  SUBCASE("a 4 GiB length with only a few bytes behind it") {
    std::vector<std::uint64_t> ends;
    Bytes j = three_record_journal(ends);
    append_bytes(j, raw_record(2, Bytes(30, 1), 0xFFFFFFFFu));
    const Replay r = parse_ok(j);
    CHECK(r.valid_length == ends[3]);
    CHECK(contains(r.tail_problem, "payload length 4294967295 exceeds limit"));
  }
  SUBCASE("header record") {
    Bytes j = preamble();
    append_bytes(j, raw_record(1, big));
    CHECK(contains(parse_error(j), "journal header: record at offset 10: payload length"));
  }
  SUBCASE("exactly the limit is not a length error") {
    std::vector<std::uint64_t> ends;
    Bytes j = three_record_journal(ends);
    append_bytes(j, raw_record(2, Bytes(k_max_record_payload, 0)));
    // Passes the length check, then fails on the count it contains.
    CHECK(contains(parse_ok(j).tail_problem, "does not match count 0"));
  }
}

TEST_CASE("a checkpoint payload length must match its count") {
  std::vector<std::uint64_t> ends;
  Bytes j = three_record_journal(ends);
  const std::string where = "record at offset " + std::to_string(ends[3]);
  SUBCASE("one hash missing") {
    append_bytes(j, raw_record(2, checkpoint_payload(6, 8, 3, 2)));
    CHECK(parse_ok(j).tail_problem ==
          where + ": payload length 52 does not match count 3 (expected 68)");
  }
  SUBCASE("one hash too many") {
    append_bytes(j, raw_record(2, checkpoint_payload(6, 8, 1, 2)));
    CHECK(parse_ok(j).tail_problem ==
          where + ": payload length 52 does not match count 1 (expected 36)");
  }
  SUBCASE("payload shorter than the fixed fields") {
    append_bytes(j, raw_record(2, Bytes(19, 0)));
    CHECK(contains(parse_ok(j).tail_problem, where + ": checkpoint payload of 19 bytes"));
  }
  SUBCASE("a count whose size would overflow 32 bits") {
    append_bytes(j, raw_record(2, checkpoint_payload(6, 8, 0xFFFFFFFFu, 1)));
    CHECK(contains(parse_ok(j).tail_problem, "does not match count 4294967295"));
  }
  SUBCASE("empty checkpoint") {
    append_bytes(j, raw_checkpoint(6, 8, 0));
    CHECK(parse_ok(j).tail_problem == where + ": empty checkpoint");
  }
  const Replay r = parse_ok(j);
  CHECK(r.chunk_hashes == test_hashes(8));
  CHECK(r.valid_length == ends[3]);
}

TEST_CASE("replay stops at a non-contiguous first_chunk") {
  std::vector<std::uint64_t> ends;
  Bytes j = three_record_journal(ends);
  const std::string where = "record at offset " + std::to_string(ends[3]);
  SUBCASE("gap") {
    append_bytes(j, raw_checkpoint(6, 9, 1));
    CHECK(parse_ok(j).tail_problem == where + ": first_chunk 9 is not contiguous (expected 8)");
  }
  SUBCASE("overlap") {
    append_bytes(j, raw_checkpoint(6, 7, 2));
    CHECK(parse_ok(j).tail_problem == where + ": first_chunk 7 is not contiguous (expected 8)");
  }
  append_bytes(j, raw_checkpoint(7, 8, 1)); // a good-looking record after the bad one is not trusted
  const Replay r = parse_ok(j);
  CHECK(r.chunk_hashes == test_hashes(8));
  CHECK(r.last_serial == 5);
  CHECK(r.valid_length == ends[3]);
}

TEST_CASE("replay stops at a serial that does not increase") {
  SUBCASE("equal serial") {
    std::vector<std::uint64_t> ends;
    Bytes j = three_record_journal(ends);
    append_bytes(j, raw_checkpoint(5, 8, 1));
    const Replay r = parse_ok(j);
    CHECK(r.tail_problem ==
          "record at offset " + std::to_string(ends[3]) + ": serial 5 does not increase (previous 5)");
    CHECK(r.chunk_hashes == test_hashes(8));
    CHECK(r.valid_length == ends[3]);
  }
  SUBCASE("smaller serial") {
    std::vector<std::uint64_t> ends;
    Bytes j = three_record_journal(ends);
    append_bytes(j, raw_checkpoint(3, 8, 1));
    CHECK(contains(parse_ok(j).tail_problem, "serial 3 does not increase (previous 5)"));
  }
  SUBCASE("serial 0 as the first record") {
    Bytes j = journal_start(test_identity(4096 * 4));
    const std::uint64_t end = j.size();
    append_bytes(j, raw_checkpoint(0, 0, 1));
    const Replay r = parse_ok(j);
    CHECK(contains(r.tail_problem, "serial 0 does not increase (previous 0)"));
    CHECK(r.chunk_hashes.empty());
    CHECK(r.valid_length == end);
  }
}

TEST_CASE("replay stops at chunks past the end of the file") {
  // 10 chunks, the last one short.
  Bytes j = journal_start(test_identity(9 * 4096 + 1));
  append_bytes(j, raw_checkpoint(1, 0, 8));
  const std::uint64_t end = j.size();
  SUBCASE("one past") {
    append_bytes(j, raw_checkpoint(2, 8, 3));
    const Replay r = parse_ok(j);
    CHECK(r.tail_problem == "record at offset " + std::to_string(end) +
                                ": chunks 8..10 are past the end of the file (10 chunks)");
    CHECK(r.chunk_hashes == test_hashes(8));
    CHECK(r.valid_length == end);
  }
  SUBCASE("exactly to the end is fine") {
    append_bytes(j, raw_checkpoint(2, 8, 2));
    const Replay r = parse_ok(j);
    CHECK(r.tail_problem.empty());
    CHECK(r.chunk_hashes == test_hashes(10));
    CHECK(r.confirmed_bytes() == 9 * 4096 + 1);
  }
  SUBCASE("an empty source has no chunks at all") {
    Bytes e = journal_start(test_identity(0));
    const std::uint64_t e_end = e.size();
    append_bytes(e, raw_checkpoint(1, 0, 1));
    const Replay r = parse_ok(e);
    CHECK(contains(r.tail_problem, "past the end of the file (0 chunks)"));
    CHECK(r.valid_length == e_end);
    CHECK(r.confirmed_bytes() == 0);
  }
}

TEST_CASE("replay stops at an unknown record type or a second header") {
  std::vector<std::uint64_t> ends;
  Bytes j = three_record_journal(ends);
  const std::string where = "record at offset " + std::to_string(ends[3]);
  SUBCASE("type 3") {
    append_bytes(j, raw_record(3, checkpoint_payload(6, 8, 1, 1)));
    CHECK(parse_ok(j).tail_problem == where + ": unknown type 3");
  }
  SUBCASE("type 0") {
    append_bytes(j, raw_record(0, Bytes{}));
    CHECK(parse_ok(j).tail_problem == where + ": unknown type 0");
  }
  SUBCASE("second header") {
    append_bytes(j, raw_record(1, header_payload(test_identity(100 * 4096))));
    CHECK(parse_ok(j).tail_problem == where + ": unexpected second header record");
  }
  CHECK(parse_ok(j).valid_length == ends[3]);
}

TEST_CASE("a header with an invalid chunk size or name is corrupt") {
  auto with = [](const Identity& id) {
    Bytes j = preamble();
    append_bytes(j, raw_record(1, header_payload(id)));
    return j;
  };
  for (std::uint32_t cs : {0u, 1000u, 4097u, (64u << 20) + 4096u, 0xFFFFF000u}) {
    CAPTURE(cs);
    CHECK(parse_error(with(test_identity(4096, cs))) ==
          "journal header: invalid chunk size " + std::to_string(cs));
  }
  CHECK(parse_ok(with(test_identity(4096, 64u << 20))).identity.chunk_size == (64u << 20));
  CHECK(parse_ok(with(test_identity(4096, 4096))).identity.chunk_size == 4096);

  Identity long_name = test_identity(4096);
  long_name.name.assign(4097, 'n');
  CHECK(parse_error(with(long_name)) == "journal header: name length 4097 exceeds 4096");
  long_name.name.assign(4096, 'n');
  CHECK(parse_ok(with(long_name)).identity.name.size() == 4096);

  Bytes extra = preamble();
  Bytes payload = header_payload(test_identity(4096));
  payload.push_back(0);
  append_bytes(extra, raw_record(1, payload));
  CHECK(parse_error(extra) == "journal header: malformed payload (47 bytes)");
}

TEST_CASE("append refuses a record the journal could not replay and leaves the file replayable") {
  ScratchDir dir;
  const auto path = dir.file("x.sesscp.journal");
  auto j = Journal::create(path, test_identity(50 * 4096));
  REQUIRE(j.ok());
  REQUIRE(j->append(make_record(3, 0, 4)).ok());
  const Bytes before = read_bytes(path);

  SUBCASE("gap") {
    auto st = j->append(make_record(4, 5, 1));
    REQUIRE_FALSE(st.ok());
    CHECK(st.error().kind == ErrorKind::internal);
    CHECK(contains(st.error().message, "first_chunk 5 is not contiguous (expected 4)"));
  }
  SUBCASE("overlap") {
    auto st = j->append(make_record(4, 3, 1));
    REQUIRE_FALSE(st.ok());
    CHECK(st.error().kind == ErrorKind::internal);
  }
  SUBCASE("same serial") {
    auto st = j->append(make_record(3, 4, 1));
    REQUIRE_FALSE(st.ok());
    CHECK(st.error().kind == ErrorKind::internal);
    CHECK(contains(st.error().message, "serial 3 does not increase (previous 3)"));
  }
  SUBCASE("smaller serial") {
    CHECK(j->append(make_record(2, 4, 1)).error().kind == ErrorKind::internal);
  }
  SUBCASE("no hashes") {
    CHECK(j->append(make_record(4, 4, 0)).error().kind == ErrorKind::internal);
  }
  CHECK(read_bytes(path) == before);
  CHECK(j->confirmed_chunks() == 4);
  CHECK(j->last_serial() == 3);

  // The journal still works: the correct next record goes right after the last good one.
  REQUIRE(j->append(make_record(4, 4, 2)).ok());
  auto r = Journal::read(path);
  REQUIRE(r.ok());
  CHECK(r->chunk_hashes == test_hashes(6));
  CHECK(r->last_serial == 4);
  CHECK(r->tail_problem.empty());
  CHECK(r->file_length == before.size() + checkpoint_size(2));
}

TEST_CASE("a failed write leaves no half-written journal or record behind") {
  ScratchDir dir;
  const auto path = dir.file("x.sesscp.journal");
  SUBCASE("create empties the file it could not finish, keeping its inode") {
    // The receiver holds an flock on the (empty) journal file before create.
    write_bytes(path, Bytes{});
    struct stat before {};
    REQUIRE(::stat(path.c_str(), &before) == 0);
    Result<Journal> j = make_error(ErrorKind::internal, "not run");
    {
      FileSizeLimit limit(30); // the preamble fits, the header record does not
      j = Journal::create(path, test_identity(4096));
    }
    REQUIRE_FALSE(j.ok());
    CHECK(j.error().kind == ErrorKind::io);
    struct stat after {};
    REQUIRE(::stat(path.c_str(), &after) == 0);
    CHECK(after.st_ino == before.st_ino);
    CHECK(after.st_size == 0);
  }
  SUBCASE("append keeps its state and the file, and the next append works") {
    auto j = Journal::create(path, test_identity(50 * 4096));
    REQUIRE(j.ok());
    REQUIRE(j->append(make_record(1, 0, 3)).ok());
    const Bytes good = read_bytes(path);
    Status st;
    {
      FileSizeLimit limit(good.size() + 40); // 40 of the record's 113 bytes fit
      st = j->append(make_record(2, 3, 5));
    }
    REQUIRE_FALSE(st.ok());
    CHECK(st.error().kind == ErrorKind::io);
    CHECK(j->confirmed_chunks() == 3);
    CHECK(j->last_serial() == 1);
    CHECK(read_bytes(path) == good);

    // A shorter record at the same place leaves no stale bytes behind it.
    REQUIRE(j->append(make_record(2, 3, 1)).ok());
    auto r = Journal::read(path);
    REQUIRE(r.ok());
    CHECK(r->chunk_hashes == test_hashes(4));
    CHECK(r->last_serial == 2);
    CHECK(r->tail_problem.empty());
    CHECK(r->file_length == good.size() + checkpoint_size(1));
  }
}

TEST_CASE("identity_mismatch names the first differing field") {
  const Identity a = test_identity(100);
  CHECK(identity_mismatch(a, a) == "");

  Identity b = a;
  b.name = "other-name";
  b.chunk_size = 8192;
  CHECK(identity_mismatch(a, b) == ""); // neither name nor chunk_size is compared

  b = a;
  b.size = 200;
  CHECK(identity_mismatch(a, b) == "size differs (journal 100, offer 200)");

  b = a;
  b.mtime_ns = 1700000001000000005;
  CHECK(identity_mismatch(a, b) ==
        "mtime differs (journal 1700000000.123456789, offer 1700000001.000000005)");
  b.mtime_ns = -1;
  CHECK(identity_mismatch(a, b) == "mtime differs (journal 1700000000.123456789, offer -0.000000001)");
  b.mtime_ns = std::numeric_limits<std::int64_t>::min();
  CHECK(identity_mismatch(a, b) ==
        "mtime differs (journal 1700000000.123456789, offer -9223372036.854775808)");

  b = a;
  b.fingerprint[15] ^= 1;
  CHECK(identity_mismatch(a, b) == "content fingerprint differs");

  // Order: size before mtime before fingerprint.
  b.size = 1;
  b.mtime_ns = 2;
  CHECK(contains(identity_mismatch(a, b), "size differs"));
  b.size = a.size;
  CHECK(contains(identity_mismatch(a, b), "mtime differs"));
}

namespace {

// A partial file of 11 chunks of 4096 bytes, the last one 1000 bytes, with
// hashes of what was written.
struct PartFile {
  static constexpr std::uint32_t k_cs = 4096;
  static constexpr std::uint64_t k_size = 10 * 4096 + 1000;
  ScratchDir dir;
  std::string path = dir.file("x.sesscp.part");
  Fd fd;
  std::vector<Hash128> hashes;

  // zero_last: the short last chunk holds only zero bytes.
  explicit PartFile(bool zero_last = false) {
    Bytes data(k_size);
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(i * 7 + i / 4096);
    if (zero_last) std::fill(data.begin() + 10 * 4096, data.end(), std::uint8_t{0});
    write_bytes(path, data);
    for (std::uint64_t c = 0; c < chunk_count(k_cs, k_size); ++c) {
      const auto len = static_cast<std::size_t>(chunk_length(c, k_cs, k_size));
      hashes.push_back(xxh3_128(std::span(data).subspan(c * k_cs, len)));
    }
    fd.reset(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    REQUIRE(fd.valid());
  }
  void corrupt(std::uint64_t offset) {
    const std::uint8_t x = 0x5A;
    std::uint8_t b = 0;
    REQUIRE(::pread(fd.get(), &b, 1, static_cast<off_t>(offset)) == 1);
    b ^= x;
    REQUIRE(::pwrite(fd.get(), &b, 1, static_cast<off_t>(offset)) == 1);
  }
  void truncate(std::uint64_t len) { REQUIRE(::ftruncate(fd.get(), static_cast<off_t>(len)) == 0); }
  std::uint64_t verify(std::uint64_t max_bytes, std::size_t n = 11) {
    auto r = verify_tail(fd.get(), k_cs, k_size, std::span(hashes).first(n), max_bytes);
    REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message));
    return *r;
  }
};

} // namespace

TEST_CASE("verify_tail re-hashes the tail of the partial file") {
  PartFile part;
  REQUIRE(part.hashes.size() == 11);
  // With max_bytes = 3 chunks the window starts 3*4096 bytes before byte
  // 41960, at byte 29672, inside chunk 7: chunks 7..10 are read.
  const std::uint64_t window = 3 * 4096;

  SUBCASE("an intact tail keeps every chunk proven") {
    CHECK(part.verify(window) == 11);
    CHECK(part.verify(std::numeric_limits<std::uint64_t>::max()) == 11);
    CHECK(part.verify(0) == 11);
  }
  SUBCASE("a corrupt byte inside the window drops that chunk and everything after") {
    part.corrupt(9 * 4096 + 100);
    CHECK(part.verify(window) == 9);
  }
  SUBCASE("a corrupt first chunk of the window is caught") {
    part.corrupt(7 * 4096);
    CHECK(part.verify(window) == 7);
  }
  SUBCASE("a corrupt last byte of the short last chunk is caught") {
    part.corrupt(PartFile::k_size - 1);
    CHECK(part.verify(window) == 10);
  }
  SUBCASE("max_bytes smaller than one chunk still checks the last chunk") {
    part.corrupt(10 * 4096 + 3);
    CHECK(part.verify(0) == 10);
    CHECK(part.verify(1) == 10);
    CHECK(part.verify(999) == 10);
  }
  SUBCASE("a partial file shorter than claimed stops at the short chunk") {
    part.truncate(10 * 4096 + 999);
    CHECK(part.verify(window) == 10);
    part.truncate(9 * 4096 + 1);
    CHECK(part.verify(window) == 9);
    part.truncate(0);
    CHECK(part.verify(window) == 7);
  }
  SUBCASE("only part of the file confirmed") {
    CHECK(part.verify(2 * 4096, 5) == 5);
    part.corrupt(4 * 4096 + 4095);
    CHECK(part.verify(2 * 4096, 5) == 4);
    CHECK(part.verify(0, 4) == 4);
    // Confirmed region ending on a chunk boundary: max_bytes 0 still reads chunk 4.
    CHECK(part.verify(0, 5) == 4);
  }
  SUBCASE("no confirmed chunks") {
    CHECK(part.verify(window, 0) == 0);
  }
  SUBCASE("a read error is ErrorKind::io") {
    auto r = verify_tail(-1, PartFile::k_cs, PartFile::k_size, part.hashes, window);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().kind == ErrorKind::io);
  }
  SUBCASE("more hashes than the file has chunks is a caller bug") {
    auto hashes = part.hashes;
    hashes.push_back(hashes.back());
    auto r = verify_tail(part.fd.get(), PartFile::k_cs, PartFile::k_size, hashes, window);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().kind == ErrorKind::internal);
  }
}

TEST_CASE("verify_tail treats a missing chunk of zeros as missing, not as zeros") {
  // A short read must not be hashed as if the rest of the buffer were data:
  // a chunk of zeros past the end of a truncated file would then match.
  PartFile part(true);
  part.truncate(10 * 4096);
  CHECK(part.verify(0) == 10);
  part.truncate(10 * 4096 + 999);
  CHECK(part.verify(0) == 10);
}

TEST_CASE("verify_tail does not read chunks before its window (resume stays O(journal))") {
  PartFile part;
  const std::uint64_t window = 3 * 4096; // chunks 7..10, see above
  part.corrupt(2 * 4096 + 17);
  part.corrupt(6 * 4096 + 4095); // the chunk just before the window
  CHECK(part.verify(window) == 11);
  // The same corruption is found once the window reaches it.
  CHECK(part.verify(5 * 4096) == 6);
  CHECK(part.verify(10 * 4096) == 2);
}

TEST_CASE("the v1 fixture still reads, field by field") {
  auto r = Journal::read(SESSCP_FIXTURES_DIR "/journal-v1.bin");
  REQUIRE_MESSAGE(r.ok(), (r.ok() ? "" : r.error().message));
  CHECK(r->identity.name == "fixture.bin");
  CHECK(r->identity.size == 5000000);
  CHECK(r->identity.mtime_ns == 1700000000123456789);
  CHECK(r->identity.chunk_size == 1048576);
  for (std::size_t i = 0; i < 16; ++i) CHECK(r->identity.fingerprint[i] == i);
  REQUIRE(r->chunk_hashes.size() == 5);
  for (std::size_t i = 0; i < 5; ++i) {
    CAPTURE(i);
    CHECK(r->chunk_hashes[i] == hash_of("chunk-0" + std::to_string(i)));
  }
  CHECK(r->last_serial == 2);
  // 10 preamble + (13 + 38 + 11) header + (13 + 20 + 48) + (13 + 20 + 32) checkpoints.
  CHECK(r->file_length == 218);
  CHECK(r->valid_length == 218);
  CHECK(r->tail_problem.empty());
  CHECK(r->confirmed_bytes() == 5000000);
}

TEST_CASE("the current writer reproduces the v1 fixture byte for byte") {
  // While k_format_version is 1 the writer must not drift from the fixture.
  // A future version keeps the read test above and replaces this one.
  ScratchDir dir;
  const auto path = dir.file("fixture.bin.sesscp.journal");
  Identity id;
  id.name = "fixture.bin";
  id.size = 5000000;
  id.mtime_ns = 1700000000123456789;
  id.chunk_size = 1048576;
  for (std::size_t i = 0; i < 16; ++i) id.fingerprint[i] = static_cast<std::uint8_t>(i);
  auto j = Journal::create(path, id);
  REQUIRE(j.ok());
  CheckpointRecord first{1, 0, {}};
  for (int i = 0; i < 3; ++i) first.hashes.push_back(hash_of("chunk-0" + std::to_string(i)));
  CheckpointRecord second{2, 3, {}};
  for (int i = 3; i < 5; ++i) second.hashes.push_back(hash_of("chunk-0" + std::to_string(i)));
  REQUIRE(j->append(first).ok());
  REQUIRE(j->append(second).ok());
  CHECK(read_bytes(path) == read_bytes(SESSCP_FIXTURES_DIR "/journal-v1.bin"));
}

TEST_CASE("crash loses unsynced writes: every durable state replays to exactly its records") {
  // Each append returns only after fdatasync, so the durable states a crash
  // can leave are exactly the file after create and after each append.
  ScratchDir dir;
  const auto path = dir.file("x.sesscp.journal");
  const Identity id = test_identity(64 * 4096 + 5);
  auto j = Journal::create(path, id);
  REQUIRE(j.ok());
  std::vector<Bytes> durable = {read_bytes(path)};
  const std::vector<std::uint64_t> counts = {1, 7, 2, 16, 30, 9};
  std::uint64_t chunks = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    REQUIRE(j->append(make_record(10 * (i + 1), chunks, counts[i])).ok());
    chunks += counts[i];
    durable.push_back(read_bytes(path));
  }
  REQUIRE(chunks == 65);

  std::uint64_t expected_chunks = 0;
  for (std::size_t i = 0; i < durable.size(); ++i) {
    CAPTURE(i);
    if (i > 0) expected_chunks += counts[i - 1];
    const Replay r = parse_ok(durable[i]);
    CHECK(r.identity == id);
    CHECK(r.chunk_hashes == test_hashes(expected_chunks));
    CHECK(r.last_serial == 10 * i);
    CHECK(r.valid_length == durable[i].size());
    CHECK(r.tail_problem.empty());
    // Each durable state is a prefix of the next: appends never rewrite.
    if (i > 0) {
      CHECK(std::equal(durable[i - 1].begin(), durable[i - 1].end(), durable[i].begin()));
    }
  }
  CHECK(parse_ok(durable.back()).confirmed_bytes() == 64 * 4096 + 5);
}

TEST_CASE("create makes the journal mode 0600") {
  ScratchDir dir;
  const mode_t old = ::umask(022);
  SUBCASE("new file") {
    const auto path = dir.file("new.sesscp.journal");
    REQUIRE(Journal::create(path, test_identity(4096)).ok());
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0600);
  }
  SUBCASE("replacing a more permissive file") {
    const auto path = dir.file("old.sesscp.journal");
    write_bytes(path, Bytes(500, 0xEE));
    REQUIRE(::chmod(path.c_str(), 0644) == 0);
    REQUIRE(Journal::create(path, test_identity(4096)).ok());
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0600);
    CHECK(read_bytes(path) == journal_start(test_identity(4096)));
  }
  ::umask(old);
}

TEST_CASE("create, open and read report errors by kind") {
  ScratchDir dir;
  SUBCASE("create in a missing directory is cannot_create") {
    auto j = Journal::create(dir.file("missing/x.sesscp.journal"), test_identity(4096));
    REQUIRE_FALSE(j.ok());
    CHECK(j.error().kind == ErrorKind::cannot_create);
  }
  SUBCASE("create through a symlink is refused") {
    const auto target = dir.file("target");
    write_bytes(target, Bytes{1, 2, 3});
    const auto link = dir.file("x.sesscp.journal");
    REQUIRE(::symlink(target.c_str(), link.c_str()) == 0);
    auto j = Journal::create(link, test_identity(4096));
    REQUIRE_FALSE(j.ok());
    CHECK(j.error().kind == ErrorKind::cannot_create);
    CHECK(read_bytes(target) == Bytes{1, 2, 3});
  }
  SUBCASE("create refuses identities that replay would reject") {
    CHECK(Journal::create(dir.file("a"), test_identity(4096, 1000)).error().kind ==
          ErrorKind::internal);
    Identity id = test_identity(4096);
    id.name.assign(4097, 'n');
    CHECK(Journal::create(dir.file("b"), id).error().kind == ErrorKind::internal);
    CHECK_FALSE(std::filesystem::exists(dir.file("a")));
    CHECK_FALSE(std::filesystem::exists(dir.file("b")));
  }
  SUBCASE("open and read of a missing journal are io with ENOENT's message") {
    Replay replay;
    auto j = Journal::open(dir.file("none"), replay);
    REQUIRE_FALSE(j.ok());
    CHECK(j.error().kind == ErrorKind::io);
    CHECK(contains(j.error().message, "No such file"));
    auto r = Journal::read(dir.file("none"));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().kind == ErrorKind::io);
    CHECK(contains(r.error().message, "No such file"));
  }
  SUBCASE("open of a journal with a bad header is corrupt and leaves it alone") {
    const auto path = dir.file("bad");
    const Bytes junk(100, 0x42);
    write_bytes(path, junk);
    Replay replay;
    auto j = Journal::open(path, replay);
    REQUIRE_FALSE(j.ok());
    CHECK(j.error().kind == ErrorKind::corrupt);
    CHECK(read_bytes(path) == junk);
  }
  SUBCASE("read does not cut a torn tail") {
    const auto path = dir.file("torn");
    std::vector<std::uint64_t> ends;
    const Bytes full = three_record_journal(ends);
    const Bytes torn(full.begin(), full.end() - 5);
    write_bytes(path, torn);
    auto r = Journal::read(path);
    REQUIRE(r.ok());
    CHECK(r->valid_length == ends[2]);
    CHECK(r->file_length == torn.size());
    CHECK(read_bytes(path) == torn);
  }
}

} // TEST_SUITE("journal")
