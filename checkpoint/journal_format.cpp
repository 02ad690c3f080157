// The journal's byte layout: encoding and replay of its records, no I/O
// (docs/JOURNAL.md). What tests/fuzz/fuzz_journal.cpp fuzzes.
#include "checkpoint/journal_format.h"

#include "base/bytes.h"

#include <algorithm>
#include <array>
#include <utility>

namespace sesscp::checkpoint {

namespace {

constexpr std::array<std::uint8_t, 8> k_magic = {0x53, 0x45, 0x53, 0x53, 0x43, 0x50, 0x4A, 0x0A};
constexpr std::size_t k_preamble_size = k_magic.size() + 2; // magic + u16 version
constexpr std::size_t k_record_fixed = 8 + 4 + 1;          // checksum + length + type
constexpr std::uint8_t k_type_header = 1;
constexpr std::uint8_t k_type_checkpoint = 2;
constexpr std::size_t k_max_name = 4096;
constexpr std::uint32_t k_chunk_align = 4096;
constexpr std::uint32_t k_max_chunk_size = 64u << 20;
constexpr std::uint64_t k_checkpoint_fixed = 8 + 8 + 4; // serial + first_chunk + count

std::string offset_text(std::uint64_t offset) {
  return "record at offset " + std::to_string(offset);
}

bool valid_chunk_size(std::uint32_t chunk_size) {
  return chunk_size != 0 && chunk_size % k_chunk_align == 0 && chunk_size <= k_max_chunk_size;
}

// One record as found in the file, its checksum already verified.
struct Frame {
  std::uint8_t type = 0;
  std::span<const std::uint8_t> payload;
  std::uint64_t end = 0; // offset just after the record
};

// Read the record at `offset`. The error message (kind corrupt) says why the
// record cannot be trusted; callers add context.
Result<Frame> read_frame(std::span<const std::uint8_t> bytes, std::uint64_t offset) {
  const std::uint64_t have = bytes.size() - offset;
  if (have < k_record_fixed) {
    return make_error(ErrorKind::corrupt, "torn " + offset_text(offset) + " (need " +
                                              std::to_string(k_record_fixed) + " bytes, have " +
                                              std::to_string(have) + ")");
  }
  ByteReader fixed(bytes.subspan(offset, k_record_fixed));
  const std::uint64_t checksum = fixed.u64();
  const std::uint32_t length = fixed.u32();
  const std::uint8_t type = fixed.u8();
  // Checked before anything looks at the payload: a wild length must never
  // turn into a huge read or allocation.
  if (length > k_max_record_payload) {
    return make_error(ErrorKind::corrupt, offset_text(offset) + ": payload length " +
                                              std::to_string(length) + " exceeds limit " +
                                              std::to_string(k_max_record_payload));
  }
  const std::uint64_t need = k_record_fixed + std::uint64_t{length};
  if (have < need) {
    return make_error(ErrorKind::corrupt, "torn " + offset_text(offset) + " (need " +
                                              std::to_string(need) + " bytes, have " +
                                              std::to_string(have) + ")");
  }
  if (xxh3_64(bytes.subspan(offset + 8, need - 8)) != checksum) {
    return make_error(ErrorKind::corrupt, "bad checksum in " + offset_text(offset));
  }
  return Frame{type, bytes.subspan(offset + k_record_fixed, length), offset + need};
}

std::vector<std::uint8_t> encode_record(std::uint8_t type, std::span<const std::uint8_t> payload) {
  ByteWriter body;
  body.u32(static_cast<std::uint32_t>(payload.size()));
  body.u8(type);
  body.bytes(payload);
  ByteWriter out;
  out.u64(xxh3_64(body.buffer()));
  out.bytes(body.buffer());
  return std::move(out.buffer());
}

Error header_error(const std::string& what) {
  return make_error(ErrorKind::corrupt, "journal header: " + what);
}

Status parse_preamble(std::span<const std::uint8_t> bytes) {
  const std::size_t magic_have = std::min(bytes.size(), k_magic.size());
  if (!std::equal(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(magic_have),
                  k_magic.begin())) {
    return make_error(ErrorKind::corrupt, "not a sesscp journal (bad magic)");
  }
  if (bytes.size() < k_preamble_size) {
    return make_error(ErrorKind::corrupt, "journal truncated to " + std::to_string(bytes.size()) +
                                              " bytes (magic and version need " +
                                              std::to_string(k_preamble_size) + ")");
  }
  ByteReader r(bytes.subspan(k_magic.size(), 2));
  const std::uint16_t version = r.u16();
  if (version > k_format_version) {
    return make_error(ErrorKind::corrupt, "journal version " + std::to_string(version) +
                                              " is newer than this sesscp (" +
                                              std::to_string(k_format_version) + ")");
  }
  if (version == 0) return make_error(ErrorKind::corrupt, "journal version 0 is not a valid version");
  return {};
}

// Parse the header record at the end of the preamble; return its end offset.
Result<std::uint64_t> parse_header(std::span<const std::uint8_t> bytes, Identity& identity) {
  auto frame = read_frame(bytes, k_preamble_size);
  if (!frame) return header_error(frame.error().message);
  if (frame->type != k_type_header) {
    return header_error("first record has type " + std::to_string(frame->type) + ", expected " +
                        std::to_string(k_type_header));
  }
  ByteReader r(frame->payload);
  identity.name = r.str16();
  identity.size = r.u64();
  identity.mtime_ns = r.i64();
  identity.chunk_size = r.u32();
  r.bytes(identity.fingerprint);
  if (!r.done()) {
    return header_error("malformed payload (" + std::to_string(frame->payload.size()) + " bytes)");
  }
  if (identity.name.size() > k_max_name) {
    return header_error("name length " + std::to_string(identity.name.size()) + " exceeds " +
                        std::to_string(k_max_name));
  }
  if (!valid_chunk_size(identity.chunk_size)) {
    return header_error("invalid chunk size " + std::to_string(identity.chunk_size));
  }
  return frame->end;
}

// Check one checkpoint record against what replay has proved so far and
// append its hashes. Return a reason for stopping, "" if it was applied.
std::string apply_checkpoint(const Frame& frame, std::uint64_t offset, Replay& replay) {
  const std::string where = offset_text(offset);
  if (frame.type == k_type_header) return where + ": unexpected second header record";
  if (frame.type != k_type_checkpoint) {
    return where + ": unknown type " + std::to_string(frame.type);
  }
  if (frame.payload.size() < k_checkpoint_fixed) {
    return where + ": checkpoint payload of " + std::to_string(frame.payload.size()) +
           " bytes is shorter than " + std::to_string(k_checkpoint_fixed);
  }
  ByteReader r(frame.payload);
  const std::uint64_t serial = r.u64();
  const std::uint64_t first = r.u64();
  const std::uint32_t count = r.u32();
  const std::uint64_t expected = k_checkpoint_fixed + 16 * std::uint64_t{count};
  if (frame.payload.size() != expected) {
    return where + ": payload length " + std::to_string(frame.payload.size()) +
           " does not match count " + std::to_string(count) + " (expected " +
           std::to_string(expected) + ")";
  }
  if (count == 0) return where + ": empty checkpoint";
  const std::uint64_t have = replay.chunk_hashes.size();
  if (first != have) {
    return where + ": first_chunk " + std::to_string(first) + " is not contiguous (expected " +
           std::to_string(have) + ")";
  }
  if (serial <= replay.last_serial) {
    return where + ": serial " + std::to_string(serial) + " does not increase (previous " +
           std::to_string(replay.last_serial) + ")";
  }
  const std::uint64_t total = chunk_count(replay.identity.chunk_size, replay.identity.size);
  // first <= total here and count < 2^32, so the sum cannot overflow.
  if (first + count > total) {
    return where + ": chunks " + std::to_string(first) + ".." + std::to_string(first + count - 1) +
           " are past the end of the file (" + std::to_string(total) + " chunks)";
  }
  for (std::uint32_t i = 0; i < count; ++i) {
    Hash128 h{};
    r.bytes(h);
    replay.chunk_hashes.push_back(h);
  }
  replay.last_serial = serial;
  return {};
}

std::string format_mtime(std::int64_t ns) {
  // Unsigned magnitude: negating INT64_MIN would overflow.
  const bool negative = ns < 0;
  const std::uint64_t mag = negative ? 0 - static_cast<std::uint64_t>(ns)
                                     : static_cast<std::uint64_t>(ns);
  std::string frac = std::to_string(mag % 1000000000);
  frac.insert(0, 9 - frac.size(), '0');
  std::string out = negative ? "-" : "";
  out += std::to_string(mag / 1000000000);
  out += '.';
  out += frac;
  return out;
}

} // namespace

std::uint64_t chunk_count(std::uint32_t chunk_size, std::uint64_t file_size) {
  if (chunk_size == 0) return 0;
  return file_size / chunk_size + (file_size % chunk_size != 0 ? 1 : 0);
}

std::uint64_t chunk_length(std::uint64_t index, std::uint32_t chunk_size, std::uint64_t file_size) {
  if (index >= chunk_count(chunk_size, file_size)) return 0;
  // index < chunk_count, so index * chunk_size < file_size: no overflow.
  const std::uint64_t start = index * chunk_size;
  return std::min<std::uint64_t>(chunk_size, file_size - start);
}

std::uint64_t Replay::confirmed_bytes() const {
  const std::uint64_t n = chunk_hashes.size();
  // Compare counts first: n * chunk_size may overflow for a file near 2^64.
  if (n >= chunk_count(identity.chunk_size, identity.size)) return identity.size;
  return n * identity.chunk_size;
}

std::string identity_mismatch(const Identity& journal, const Identity& offer) {
  if (journal.size != offer.size) {
    return "size differs (journal " + std::to_string(journal.size) + ", offer " +
           std::to_string(offer.size) + ")";
  }
  if (journal.mtime_ns != offer.mtime_ns) {
    return "mtime differs (journal " + format_mtime(journal.mtime_ns) + ", offer " +
           format_mtime(offer.mtime_ns) + ")";
  }
  if (journal.fingerprint != offer.fingerprint) return "content fingerprint differs";
  return {};
}

Status check_encodable(const Identity& identity) {
  // Refuse what parse() would reject: a journal we cannot read back is worse than none.
  if (identity.name.size() > k_max_name) {
    return make_error(ErrorKind::internal, "journal name longer than " + std::to_string(k_max_name) +
                                               " bytes");
  }
  if (!valid_chunk_size(identity.chunk_size)) {
    return make_error(ErrorKind::internal,
                      "invalid journal chunk size " + std::to_string(identity.chunk_size));
  }
  return {};
}

std::vector<std::uint8_t> encode_journal_start(const Identity& identity) {
  ByteWriter payload;
  payload.str16(identity.name);
  payload.u64(identity.size);
  payload.i64(identity.mtime_ns);
  payload.u32(identity.chunk_size);
  payload.bytes(identity.fingerprint);
  ByteWriter out;
  out.bytes(k_magic);
  out.u16(k_format_version);
  out.bytes(encode_record(k_type_header, payload.buffer()));
  return std::move(out.buffer());
}

std::vector<std::uint8_t> encode_checkpoint(const CheckpointRecord& record) {
  ByteWriter payload;
  payload.u64(record.serial);
  payload.u64(record.first_chunk);
  payload.u32(static_cast<std::uint32_t>(record.hashes.size()));
  for (const auto& h : record.hashes) payload.bytes(h);
  return encode_record(k_type_checkpoint, payload.buffer());
}

Result<Replay> parse_journal(std::span<const std::uint8_t> bytes) {
  Replay replay;
  replay.file_length = bytes.size();
  SESSCP_TRY(parse_preamble(bytes));
  auto header_end = parse_header(bytes, replay.identity);
  if (!header_end) return header_end.error();
  std::uint64_t offset = *header_end;
  while (offset < bytes.size()) {
    auto frame = read_frame(bytes, offset);
    if (!frame) {
      replay.tail_problem = frame.error().message;
      break;
    }
    replay.tail_problem = apply_checkpoint(*frame, offset, replay);
    if (!replay.tail_problem.empty()) break;
    offset = frame->end;
  }
  replay.valid_length = offset;
  return replay;
}

} // namespace sesscp::checkpoint
