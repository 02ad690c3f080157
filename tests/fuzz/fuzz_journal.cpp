// libFuzzer target: journal replay (checkpoint::Journal::parse).
//
// A journal is read back after crashes, torn writes and lying disks, so its
// parser sees arbitrary bytes. Besides not crashing, what replay proves must
// be self-consistent (docs/JOURNAL.md, "Replay"): it never confirms more than
// the file holds, and the clean prefix it reports replays to the same result
// with nothing left over, which is what Journal::open relies on when it cuts
// the tail off before appending.

#include "checkpoint/journal.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

using namespace sesscp;
using namespace sesscp::checkpoint;

namespace {

// abort() rather than assert(): the check must hold in every build type.
void check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "fuzz_journal: invariant violated: %s\n", what);
  std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> in(data, size);
  auto replay = Journal::parse(in);
  if (!replay) {
    // Only an unusable preamble or header is fatal, and that is "corrupt".
    check(replay.error().kind == ErrorKind::corrupt, "parse failed with a kind other than corrupt");
    return 0;
  }
  const Replay& r = *replay;
  check(r.file_length == size, "file_length is not the input size");
  check(r.valid_length <= r.file_length, "valid_length past the end of the input");
  // Replay stops early exactly when it has a reason to.
  check(r.tail_problem.empty() == (r.valid_length == r.file_length),
        "tail_problem disagrees with valid_length");
  check(r.chunk_hashes.size() <= chunk_count(r.identity.chunk_size, r.identity.size),
        "more confirmed chunks than the file has");
  check(r.confirmed_bytes() <= r.identity.size, "confirmed_bytes past the source size");
  // Serials start at 1 and every checkpoint holds at least one chunk.
  check((r.last_serial == 0) == r.chunk_hashes.empty(), "last_serial and chunk count disagree");

  auto prefix = Journal::parse(in.first(static_cast<std::size_t>(r.valid_length)));
  check(prefix.ok(), "the valid prefix does not parse");
  check(prefix->identity == r.identity, "the valid prefix has another identity");
  check(prefix->chunk_hashes == r.chunk_hashes, "the valid prefix has other chunk hashes");
  check(prefix->last_serial == r.last_serial, "the valid prefix has another last serial");
  check(prefix->tail_problem.empty(), "the valid prefix has a tail problem");
  check(prefix->valid_length == r.valid_length, "the valid prefix is not entirely valid");
  return 0;
}
