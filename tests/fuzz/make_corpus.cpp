// Write the fuzzers' seed corpora: valid frames, valid session streams and
// valid journals, each made by the real encoders so that the fuzzers start
// from inputs that get deep into the code instead of guessing magic numbers
// and checksums.
//
//   make_corpus OUT_DIR [JOURNAL_FIXTURE]
//
// writes OUT_DIR/frame/, OUT_DIR/journal/ and OUT_DIR/session/ (created if
// missing; files of the same name are replaced) and copies JOURNAL_FIXTURE
// (tests/fixtures/journal-v1.bin) into the journal corpus. The output is
// deterministic, so regenerating leaves the committed corpus unchanged.

#include "checkpoint/journal.h"
#include "core/frame.h"
#include "base/hash.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

using namespace sesscp;

namespace {

using Bytes = std::vector<std::uint8_t>;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "make_corpus: %s\n", what.c_str());
  std::exit(1);
}

void make_dir(const std::string& path) {
  if (mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) fail("mkdir " + path + ": " + std::strerror(errno));
}

Bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read " + path);
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) fail("cannot write " + path);
}

void append(Bytes& out, const Bytes& more) { out.insert(out.end(), more.begin(), more.end()); }

// Deterministic file contents: the bytes themselves do not matter, only that
// their hashes are right.
Bytes pattern(std::size_t n, std::uint8_t seed) {
  Bytes b(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::uint8_t>(seed + i * 7 + (i >> 8));
  return b;
}

Hash128 fingerprint(std::uint8_t seed) {
  Hash128 h{};
  for (std::size_t i = 0; i < h.size(); ++i) h[i] = static_cast<std::uint8_t>(seed + i);
  return h;
}

// A whole DATA frame for `chunk` carrying `bytes`, with the right hash unless
// `corrupt` asks for a wrong one (to reach the RESEND path).
Bytes data_frame(std::uint64_t chunk, const Bytes& bytes, bool corrupt = false) {
  frame::DataPrefix prefix{chunk, xxh3_128(bytes)};
  if (corrupt) prefix.hash[0] ^= 0xFF;
  std::uint8_t head[frame::k_header_size + frame::k_data_prefix];
  frame::encode_data_prefix(prefix, static_cast<std::uint32_t>(bytes.size()), head);
  Bytes out(std::begin(head), std::end(head));
  append(out, bytes);
  return out;
}

frame::Hello hello() {
  frame::Hello m;
  m.identity = "sesscp/0.1.0 corpus";
  return m;
}

frame::Offer offer(const std::string& name, std::uint64_t size, std::uint32_t chunk_size) {
  frame::Offer m;
  m.name = name;
  m.size = size;
  m.mtime_ns = 1'700'000'000'123'456'789;
  m.chunk_size = chunk_size;
  m.mode_bits = 0644;
  m.fingerprint = fingerprint(1);
  return m;
}

// A complete file inside a session: OFFER, its chunks (chunk_size 4096),
// one SYNC per `per_sync` chunks and after the last, FILE_END.
Bytes file_stream(const std::string& name, std::uint64_t size, std::uint8_t seed, std::uint64_t per_sync = 1) {
  constexpr std::uint32_t chunk_size = 4096;
  Bytes out = frame::encode(offer(name, size, chunk_size));
  const std::uint64_t count = checkpoint::chunk_count(chunk_size, size);
  const Bytes content = pattern(static_cast<std::size_t>(size), seed);
  std::vector<Hash128> hashes;
  std::uint64_t serial = 0;
  for (std::uint64_t i = 0; i < count; ++i) {
    const auto begin = content.begin() + static_cast<std::ptrdiff_t>(i * chunk_size);
    const auto len = checkpoint::chunk_length(i, chunk_size, size);
    const Bytes chunk(begin, begin + static_cast<std::ptrdiff_t>(len));
    hashes.push_back(xxh3_128(chunk));
    append(out, data_frame(i, chunk));
    if ((i + 1) % per_sync == 0 || i + 1 == count) append(out, frame::encode(frame::Sync{++serial, i + 1}));
  }
  append(out, frame::encode(frame::FileEnd{0, count, hash_list_root(hashes)}));
  return out;
}

void frame_corpus(const std::string& dir) {
  const Bytes small = pattern(100, 3);
  write_file(dir + "/hello.bin", frame::encode(hello()));
  write_file(dir + "/offer.bin", frame::encode(offer("seed.bin", 8192, 4096)));
  write_file(dir + "/sync.bin", frame::encode(frame::Sync{1, 2}));
  write_file(dir + "/data.bin", data_frame(0, small));
  write_file(dir + "/file_end.bin", frame::encode(frame::FileEnd{0, 1, hash_list_root(std::vector{xxh3_128(small)})}));
  write_file(dir + "/release.bin", frame::encode_empty(frame::Type::release));
  write_file(dir + "/give_token.bin", frame::encode(frame::GiveToken{{{"reports", true}, {"a/b.txt", false}}}));
  write_file(dir + "/please_token.bin", frame::encode_empty(frame::Type::please_token));
  write_file(dir + "/fetch.bin", frame::encode(frame::Fetch{{{"reports", true}, {"a/b.txt", false}}}));
  // Every frame the sender sends, in session order.
  Bytes sender = frame::encode(hello());
  append(sender, file_stream("small.bin", 100, 3));
  append(sender, frame::encode_empty(frame::Type::release));
  write_file(dir + "/sender_stream.bin", sender);
  // Every frame the receiver sends, so each decoder has a valid seed.
  frame::Accept accept;
  accept.identity = "sesscp/0.1.0";
  Bytes receiver = frame::encode(accept);
  append(receiver, frame::encode(frame::Refuse{frame::Reason::version, 1, "sender speaks protocol version 2"}));
  append(receiver, frame::encode(frame::Resume{frame::ResumeStatus::transfer, frame::ResumeWhy::journal, 4096, 1,
                                               2, "journal confirms 1 chunks"}));
  append(receiver, frame::encode(frame::Checkpoint{1, 2}));
  append(receiver, frame::encode(frame::Resend{1}));
  append(receiver, frame::encode(frame::FileDone{8192, fingerprint(9)}));
  append(receiver, frame::encode(frame::Abort{frame::Reason::integrity, "chunk 1 arrived corrupt 4 times"}));
  append(receiver, frame::encode_empty(frame::Type::release_ack));
  write_file(dir + "/receiver_stream.bin", receiver);
  // check_name sees the whole input as a name.
  const std::string name = "seed.bin";
  write_file(dir + "/name.bin", Bytes(name.begin(), name.end()));
}

void session_corpus(const std::string& dir) {
  const Bytes h = frame::encode(hello());
  const Bytes release = frame::encode_empty(frame::Type::release);

  // The full session the brief of this corpus names: an 8 KiB file in two
  // 4 KiB chunks, one sync point over both. Larger than the other seeds
  // (8.4 KiB) because a chunk cannot be smaller than 4 KiB.
  {
    const Bytes content = pattern(8192, 5);
    const Bytes c0(content.begin(), content.begin() + 4096), c1(content.begin() + 4096, content.end());
    const std::vector<Hash128> hashes{xxh3_128(c0), xxh3_128(c1)};
    Bytes s = h;
    append(s, frame::encode(offer("seed.bin", 8192, 4096)));
    append(s, data_frame(0, c0));
    append(s, data_frame(1, c1));
    append(s, frame::encode(frame::Sync{1, 2}));
    append(s, frame::encode(frame::FileEnd{0, 2, hash_list_root(hashes)}));
    append(s, release);
    write_file(dir + "/full_session.bin", s);
  }
  {
    Bytes s = h;
    append(s, release);
    write_file(dir + "/hello_release.bin", s);
  }
  {
    Bytes s = h;
    append(s, file_stream("small.bin", 100, 3));
    append(s, release);
    write_file(dir + "/small_file.bin", s);
  }
  {
    // Two files in one session, the second a zero-chunk empty file.
    Bytes s = h;
    append(s, file_stream("a.bin", 300, 4));
    append(s, frame::encode(offer("empty.bin", 0, 4096)));
    append(s, frame::encode(frame::FileEnd{0, 0, hash_list_root(std::vector<Hash128>{})}));
    append(s, release);
    write_file(dir + "/two_files.bin", s);
  }
  {
    // A chunk whose hash fails (RESEND), then the good copy.
    const Bytes chunk = pattern(200, 6);
    Bytes s = h;
    append(s, frame::encode(offer("resend.bin", 200, 4096)));
    append(s, data_frame(0, chunk, true));
    append(s, data_frame(0, chunk));
    append(s, frame::encode(frame::Sync{1, 1}));
    append(s, frame::encode(frame::FileEnd{0, 1, hash_list_root(std::vector{xxh3_128(chunk)})}));
    append(s, release);
    write_file(dir + "/resend.bin", s);
  }
  {
    // A sender that gives up before the sync point: the receiver saves the
    // verified chunk anyway.
    const Bytes chunk = pattern(1000, 7);
    Bytes s = h;
    append(s, frame::encode(offer("aborted.bin", 1000, 4096)));
    append(s, data_frame(0, chunk));
    append(s, frame::encode(frame::Abort{frame::Reason::interrupted, "stopped by a signal"}));
    write_file(dir + "/abort.bin", s);
  }
  {
    // Another protocol version: refused after the version field.
    frame::Hello v2 = hello();
    v2.version = 2;
    write_file(dir + "/hello_v2.bin", frame::encode(v2));
  }
  {
    // A tree: a directory, a file inside it, a link beside it.
    frame::Mkdir d;
    d.path = "sub";
    d.mode_bits = 0750;
    frame::Symlink l;
    l.path = "sub/link";
    l.target = "f.bin";
    Bytes s = h;
    append(s, frame::encode(d));
    append(s, file_stream("sub/f.bin", 300, 8));
    append(s, frame::encode(l));
    append(s, release);
    write_file(dir + "/tree.bin", s);
  }
  {
    // A hostile tree: a link out of --dir, then a file offered through it.
    frame::Symlink l;
    l.path = "out";
    l.target = "../sentinel";
    Bytes s = h;
    append(s, frame::encode(l));
    append(s, file_stream("out/escape.bin", 100, 9));
    append(s, release);
    write_file(dir + "/link_escape.bin", s);
  }
  {
    // Full-duplex: FETCH a file and a directory of the export, push a file, release.
    frame::Hello full = hello();
    full.mode = frame::DialogMode::full_duplex;
    Bytes s = frame::encode(full);
    append(s, frame::encode(frame::Fetch{{{"s.txt", false}, {"sub", true}}}));
    append(s, file_stream("pushed.bin", 300, 10));
    append(s, release);
    write_file(dir + "/full_duplex.bin", s);
  }
  {
    // Half-duplex: push a file, give the token with a fetch request.
    frame::Hello half = hello();
    half.mode = frame::DialogMode::half_duplex;
    Bytes s = frame::encode(half);
    append(s, file_stream("pushed.bin", 300, 11));
    append(s, frame::encode(frame::GiveToken{{{"s.txt", false}}}));
    write_file(dir + "/half_duplex.bin", s);
  }
  {
    // A name the receiver must refuse.
    Bytes s = h;
    append(s, frame::encode(offer("../escape.bin", 100, 4096)));
    write_file(dir + "/bad_name.bin", s);
  }
}

// Journal corpus: real journals written by Journal::create and append.
void journal_corpus(const std::string& dir, const std::string& fixture) {
  if (!fixture.empty()) write_file(dir + "/journal-v1.bin", read_file(fixture));
  const char* tmp_root = std::getenv("TMPDIR");
  std::string templ = std::string(tmp_root && *tmp_root ? tmp_root : "/tmp") + "/sesscp-corpus.XXXXXX";
  if (!mkdtemp(templ.data())) fail("mkdtemp: " + std::string(std::strerror(errno)));
  const std::string path = templ + "/seed.bin.sesscp.journal";

  auto make = [&](const checkpoint::Identity& id, const std::vector<std::uint64_t>& counts) {
    auto j = checkpoint::Journal::create(path, id);
    if (!j) fail("create journal: " + j.error().message);
    std::uint64_t first = 0, serial = 0;
    for (auto count : counts) {
      checkpoint::CheckpointRecord rec{++serial, first, {}};
      for (std::uint64_t i = 0; i < count; ++i) rec.hashes.push_back(xxh3_128(pattern(16, static_cast<std::uint8_t>(first + i))));
      if (auto st = j->append(rec); !st) fail("append: " + st.error().message);
      first += count;
    }
    return read_file(path);
  };

  const checkpoint::Identity two{"seed.bin", 8192, 1'700'000'000'123'456'789, 4096, fingerprint(1)};
  write_file(dir + "/header_only.journal", make(two, {}));
  write_file(dir + "/complete.journal", make(two, {2}));
  const checkpoint::Identity many{"big.bin", 100 * 4096 + 17, -5, 4096, fingerprint(2)};
  const Bytes three = make(many, {3, 1, 5});
  write_file(dir + "/three_records.journal", three);
  // What crashes leave behind: a torn last record, and a last record whose
  // bytes never reached the disk (bad checksum).
  write_file(dir + "/torn_tail.journal", Bytes(three.begin(), three.end() - 7));
  Bytes bad = three;
  bad[bad.size() - 3] ^= 0x5A;
  write_file(dir + "/bad_checksum.journal", bad);
  const checkpoint::Identity mib{"one-mib-chunks.bin", 3u << 20, 0, 1u << 20, fingerprint(3)};
  write_file(dir + "/mib_chunks.journal", make(mib, {1, 2}));

  unlink(path.c_str());
  rmdir(templ.c_str());
}

} // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) {
    std::fprintf(stderr, "usage: make_corpus OUT_DIR [JOURNAL_FIXTURE]\n");
    return 2;
  }
  const std::string out = argv[1];
  make_dir(out);
  for (const char* sub : {"frame", "journal", "session"}) make_dir(out + "/" + sub);
  frame_corpus(out + "/frame");
  session_corpus(out + "/session");
  journal_corpus(out + "/journal", argc == 3 ? argv[2] : "");
  return 0;
}
