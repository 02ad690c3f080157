// libFuzzer target: the frame codec (core/frame.h).
//
// The input is read as a stream of frames, the way Conn reads a socket: an
// 8-byte header, then its payload, then the next header. Every payload that a
// decoder accepts is encoded again and decoded again, and the two decoded
// messages must be equal field by field: a decoder that accepts something the
// encoder cannot reproduce means the two sides of a session can disagree about
// what was said. The whole input is also given to check_name, whose verdict
// guards every path the receiver opens.

#include "core/frame.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string_view>
#include <vector>

using namespace sesscp;
using namespace sesscp::frame;

namespace {

// The bound the fuzzer gives DATA headers: a 1 MiB chunk plus the prefix, as a
// receiver with the default chunk size would.
constexpr std::uint32_t k_max_data = k_data_prefix + (1u << 20);

// abort() rather than assert(): the check must hold in every build type.
void check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "fuzz_frame: invariant violated: %s\n", what);
  std::abort();
}

using Bytes = std::span<const std::uint8_t>;

// Split a frame produced by an encoder into its payload, checking that its
// header is one decode_header accepts and that the length is exact.
Bytes payload_of(const std::vector<std::uint8_t>& encoded, Type type) {
  check(encoded.size() >= k_header_size, "encoded frame shorter than a header");
  auto header = decode_header(std::span<const std::uint8_t, k_header_size>(encoded.data(), k_header_size),
                              k_max_data);
  check(header.ok(), "decode_header rejects an encoded frame");
  check(header->type == type, "encoded frame has another type");
  check(header->length == encoded.size() - k_header_size, "encoded frame length field is wrong");
  return Bytes(encoded).subspan(k_header_size);
}

// Each message type: field-by-field equality. Spelled out rather than
// defaulted so that a field added to frame.h without a comparison here fails
// to be fuzzed visibly (review this list when frame.h changes).
bool same(const Hello& a, const Hello& b) {
  return a.version == b.version && a.features == b.features && a.mode == b.mode &&
         a.max_payload == b.max_payload && a.identity == b.identity;
}
bool same(const Accept& a, const Accept& b) {
  return a.version == b.version && a.features == b.features && a.mode == b.mode &&
         a.max_payload == b.max_payload && a.identity == b.identity && a.cookie == b.cookie;
}
bool same(const Join& a, const Join& b) { return a.cookie == b.cookie && a.index == b.index; }
bool same(const Refuse& a, const Refuse& b) {
  return a.reason == b.reason && a.version == b.version && a.message == b.message;
}
bool same(const Offer& a, const Offer& b) {
  return a.name == b.name && a.size == b.size && a.mtime_ns == b.mtime_ns && a.chunk_size == b.chunk_size &&
         a.mode_bits == b.mode_bits && a.fingerprint == b.fingerprint;
}
bool same(const Resume& a, const Resume& b) {
  return a.status == b.status && a.why == b.why && a.chunk_size == b.chunk_size &&
         a.next_chunk == b.next_chunk && a.next_serial == b.next_serial && a.message == b.message;
}
bool same(const DataPrefix& a, const DataPrefix& b) { return a.chunk == b.chunk && a.hash == b.hash; }
bool same(const Sync& a, const Sync& b) { return a.serial == b.serial && a.end_chunk == b.end_chunk; }
bool same(const Checkpoint& a, const Checkpoint& b) {
  return a.serial == b.serial && a.end_chunk == b.end_chunk;
}
bool same(const Resend& a, const Resend& b) { return a.chunk == b.chunk; }
bool same(const Repair& a, const Repair& b) { return a.chunk == b.chunk; }
bool same(const Verified& a, const Verified& b) {
  return a.checked == b.checked && a.total == b.total && a.damaged == b.damaged;
}
bool same(const SourceHashes& a, const SourceHashes& b) {
  return a.first_chunk == b.first_chunk && a.hashes == b.hashes;
}
bool same(const FileEnd& a, const FileEnd& b) {
  return a.first_chunk == b.first_chunk && a.chunk_count == b.chunk_count && a.session_root == b.session_root;
}
bool same(const FileDone& a, const FileDone& b) { return a.size == b.size && a.file_root == b.file_root; }
bool same(const Abort& a, const Abort& b) { return a.reason == b.reason && a.message == b.message; }
bool same(const Mkdir& a, const Mkdir& b) {
  return a.path == b.path && a.mode_bits == b.mode_bits && a.mtime_ns == b.mtime_ns;
}
bool same(const Symlink& a, const Symlink& b) {
  return a.path == b.path && a.target == b.target && a.mtime_ns == b.mtime_ns;
}
bool same(const NotFinished& a, const NotFinished& b) { return a.message == b.message; }
bool same(const GiveToken& a, const GiveToken& b) {
  if (a.fetch.size() != b.fetch.size()) return false;
  for (std::size_t i = 0; i < a.fetch.size(); ++i)
    if (a.fetch[i].path != b.fetch[i].path || a.fetch[i].contents != b.fetch[i].contents) return false;
  return true;
}
bool same(const Fetch& a, const Fetch& b) { return a.paths == b.paths; }

// Decode `payload`; when accepted, encode and decode again and compare.
template <typename Decode> void round_trip(Type type, Bytes payload, Decode decode, const char* what) {
  auto first = decode(payload);
  if (!first) {
    check(first.error().kind == ErrorKind::protocol, "decoder failed with a kind other than protocol");
    return;
  }
  const auto encoded = encode(*first);
  auto second = decode(payload_of(encoded, type));
  if (!second) {
    std::fprintf(stderr, "fuzz_frame: %s: re-encoded frame rejected: %s\n", what,
                 second.error().message.c_str());
    check(false, "decode(encode(decode(x))) fails");
  }
  if (!same(*first, *second)) {
    std::fprintf(stderr, "fuzz_frame: %s: round trip changed a field\n", what);
    check(false, "decode(encode(m)) != m");
  }
}

void round_trip_data(Bytes payload) {
  auto first = decode_data_prefix(payload);
  if (!first) {
    check(payload.size() < k_data_prefix, "DATA prefix rejected although long enough");
    return;
  }
  const auto chunk_len = static_cast<std::uint32_t>(payload.size() - k_data_prefix);
  std::uint8_t encoded[k_header_size + k_data_prefix];
  encode_data_prefix(*first, chunk_len, encoded);
  auto header = decode_header(std::span<const std::uint8_t, k_header_size>(encoded, k_header_size), k_max_data);
  check(header.ok() && header->type == Type::data, "encoded DATA header rejected");
  check(header->length == payload.size(), "encoded DATA header has another length");
  auto second = decode_data_prefix(Bytes(encoded).subspan(k_header_size));
  check(second.ok(), "re-encoded DATA prefix rejected");
  if (!same(*first, *second)) {
    std::fprintf(stderr, "fuzz_frame: DATA: round trip changed a field\n");
    check(false, "decode(encode(m)) != m");
  }
}

void round_trip_empty(Type type, Bytes payload) {
  if (!decode_empty(payload)) return;
  const auto encoded = encode_empty(type);
  check(decode_empty(payload_of(encoded, type)).ok(), "re-encoded empty frame rejected");
}

void fuzz_payload(Type type, Bytes p) {
  switch (type) {
  case Type::hello: round_trip(type, p, decode_hello, "HELLO"); break;
  case Type::accept: round_trip(type, p, decode_accept, "ACCEPT"); break;
  case Type::refuse: round_trip(type, p, decode_refuse, "REFUSE"); break;
  case Type::offer: round_trip(type, p, decode_offer, "OFFER"); break;
  case Type::resume: round_trip(type, p, decode_resume, "RESUME"); break;
  case Type::data: round_trip_data(p); break;
  case Type::sync: round_trip(type, p, decode_sync, "SYNC"); break;
  case Type::checkpoint: round_trip(type, p, decode_checkpoint, "CHECKPOINT"); break;
  case Type::resend: round_trip(type, p, decode_resend, "RESEND"); break;
  case Type::repair: round_trip(type, p, decode_repair, "REPAIR"); break;
  case Type::verified: round_trip(type, p, decode_verified, "VERIFIED"); break;
  case Type::source_hashes: round_trip(type, p, decode_source_hashes, "SOURCE_HASHES"); break;
  case Type::file_end: round_trip(type, p, decode_file_end, "FILE_END"); break;
  case Type::file_done: round_trip(type, p, decode_file_done, "FILE_DONE"); break;
  case Type::abort: round_trip(type, p, decode_abort, "ABORT"); break;
  case Type::mkdir: round_trip(type, p, decode_mkdir, "MKDIR"); break;
  case Type::symlink: round_trip(type, p, decode_symlink, "SYMLINK"); break;
  case Type::not_finished: round_trip(type, p, decode_not_finished, "NOT_FINISHED"); break;
  case Type::give_token: round_trip(type, p, decode_give_token, "GIVE_TOKEN"); break;
  case Type::fetch: round_trip(type, p, decode_fetch, "FETCH"); break;
  case Type::join: round_trip(type, p, decode_join, "JOIN"); break;
  case Type::release:
  case Type::release_ack:
  case Type::please_token: round_trip_empty(type, p); break;
  }
}

void fuzz_frames(Bytes in) {
  while (in.size() >= k_header_size) {
    const auto raw = in.first<k_header_size>();
    auto header = decode_header(raw, k_max_data);
    // A bad header ends the stream, as it ends a session: nothing after it
    // has a trustworthy boundary.
    if (!header) return;
    check(is_known(static_cast<std::uint8_t>(header->type)), "decode_header accepted an unknown type");
    check(header->length <= (header->type == Type::data ? k_max_data : k_max_control_payload),
          "decode_header accepted a length over the limit");
    // Accepted headers are canonical (flags and reserved are zero), so
    // encoding them again gives the same bytes.
    std::uint8_t again[k_header_size];
    encode_header(header->type, header->length, again);
    check(std::memcmp(again, raw.data(), k_header_size) == 0, "encode_header(decode_header(h)) != h");
    in = in.subspan(k_header_size);
    // A truncated last frame still exercises the decoders with what is left.
    const auto n = std::min<std::size_t>(header->length, in.size());
    fuzz_payload(header->type, in.first(n));
    in = in.subspan(n);
  }
}

void fuzz_name(Bytes in) {
  const std::string_view name(reinterpret_cast<const char*>(in.data()), in.size());
  if (!check_name(name).empty()) return;
  // An accepted name is opened relative to the receiver's directory: it must
  // be one plain component that cannot climb out or collide with our files.
  check(!name.empty() && name.size() <= k_max_name, "accepted name is empty or too long");
  check(name != "." && name != "..", "accepted '.' or '..'");
  for (unsigned char c : name) {
    check(c != '/', "accepted a name containing '/'");
    check(c >= 0x20, "accepted a name containing a control character");
  }
}

void fuzz_path(Bytes in) {
  const std::string_view path(reinterpret_cast<const char*>(in.data()), in.size());
  if (!check_path(path).empty()) return;
  // An accepted path is walked component by component beneath the
  // receiver's directory: each component must be a name check_name accepts.
  check(!path.empty() && path.size() <= k_max_text && path.front() != '/', "accepted an empty, long or absolute path");
  std::size_t start = 0;
  for (;;) {
    auto slash = path.find('/', start);
    auto component = path.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    check(check_name(component).empty(), "accepted a path with a component check_name refuses");
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const Bytes in(data, size);
  fuzz_frames(in);
  fuzz_name(in);
  fuzz_path(in);
  return 0;
}
