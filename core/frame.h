// Session protocol frames: types, limits, and encoding of each message.
// Byte layouts: docs/PROTOCOL.md. Every decoder checks lengths before use.
#pragma once

#include "base/bytes.h"
#include "base/hash.h"
#include "base/result.h"

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace sesscp::frame {

inline constexpr std::uint16_t k_protocol_version = 1;
inline constexpr std::size_t k_header_size = 8;
inline constexpr std::uint32_t k_max_control_payload = 64 * 1024;
inline constexpr std::uint32_t k_min_chunk_size = 4096;
inline constexpr std::uint32_t k_max_chunk_size = 16u << 20;
inline constexpr std::uint32_t k_data_prefix = 8 + 16; // chunk index + XXH3-128
inline constexpr std::size_t k_max_name = 255;      // NAME_MAX: no file name is longer
inline constexpr std::size_t k_max_dest_name = 240; // leaves room for ".sesscp.journal" in NAME_MAX
inline constexpr std::size_t k_max_text = 1024;
inline constexpr std::size_t k_max_link_target = 4095; // PATH_MAX - 1
inline constexpr std::size_t k_max_fetch_paths = 256; // paths one GIVE_TOKEN may ask for
inline constexpr char k_magic[8] = {'S', 'E', 'S', 'S', 'C', 'P', 0, 0};

enum class Type : std::uint8_t {
  hello = 0x01,
  accept = 0x02,
  refuse = 0x03,
  join = 0x04, // an extra connection (stream) joins an established session (--streams)
  offer = 0x10,
  resume = 0x11,
  data = 0x12,
  sync = 0x13,
  checkpoint = 0x14,
  resend = 0x15,
  file_end = 0x16,
  file_done = 0x17,
  mkdir = 0x18,
  symlink = 0x19,
  give_token = 0x1A,   // half-duplex: the data token passes to the peer
  please_token = 0x1B, // half-duplex: ask the holder for the data token
  repair = 0x1C,       // a chunk confirmed earlier is damaged in the partial file: send it again
  verified = 0x1D,     // how far the receiver's re-verification of the partial file has got
  source_hashes = 0x1F, // --checksum: the source's hashes of the chunks confirmed earlier
  fetch = 0x1E,        // full-duplex: what the initiator receives while it sends
  release = 0x20,
  release_ack = 0x21,
  not_finished = 0x22,
  abort = 0x7F,
};

const char* to_string(Type type);
bool is_known(std::uint8_t type);

// Functional units (feature bits) negotiated at establishment.
namespace feature {
inline constexpr std::uint64_t k_minor_sync = 1u << 0;
inline constexpr std::uint64_t k_major_sync = 1u << 1;
inline constexpr std::uint64_t k_resend = 1u << 2;     // in-session resync of one chunk
inline constexpr std::uint64_t k_activities = 1u << 3; // resume a file on a later connection
// Verified resume: the receiver re-reads the chunks confirmed in earlier
// sessions while the rest arrives, reports its progress (VERIFIED) and asks
// for each damaged one again (REPAIR). Without it (an older peer) the
// receiver checks them all before it answers the OFFER.
inline constexpr std::uint64_t k_repair = 1u << 5;
inline constexpr std::uint64_t k_all = k_minor_sync | k_major_sync | k_resend | k_activities | k_repair;
// --checksum: the sender re-hashes the chunks confirmed earlier and sends
// their hashes (SOURCE_HASHES); offered only when asked for.
inline constexpr std::uint64_t k_checksum = 1u << 6;
// The session runs over an SSH connection's pipes (send to HOST:PATH,
// docs/SSH.md), not over TCP: set by the sender, echoed by a receiver
// started with --stdio. It changes nothing on the wire; it tells both sides
// (and -v) which transport carries the session and why there is no TLS.
inline constexpr std::uint64_t k_stdio = 1u << 7;
// Several connections for one session (send --streams N): offered only when
// N > 1, with N in bits 8-15 of the same field (k_streams_shift); a receiver
// that accepts answers with the bit set and a session cookie in ACCEPT. A
// receiver that does not know the bit drops it (it answers the intersection
// of what it knows), and the sender then uses one connection.
inline constexpr std::uint64_t k_streams = 1u << 4;
inline constexpr unsigned k_streams_shift = 8;
inline constexpr std::uint64_t k_streams_mask = std::uint64_t{0xFF} << k_streams_shift;
inline constexpr unsigned k_max_streams = 64;
// The number of connections a HELLO's feature bits announce (1 without k_streams).
inline unsigned streams_of(std::uint64_t features) {
  if (!(features & k_streams)) return 1;
  return static_cast<unsigned>((features & k_streams_mask) >> k_streams_shift);
}
inline std::uint64_t with_streams(std::uint64_t features, unsigned n) {
  if (n <= 1) return features & ~(k_streams | k_streams_mask);
  return (features & ~k_streams_mask) | k_streams | (std::uint64_t{n} << k_streams_shift);
}
} // namespace feature

// Who may send file data (docs/PROTOCOL.md, "Dialog control"). Version 1
// implements simplex; the others are named so a peer can ask and be refused.
enum class DialogMode : std::uint8_t { simplex = 0, half_duplex = 1, full_duplex = 2 };
const char* to_string(DialogMode mode);

// Reason codes carried by REFUSE and ABORT.
enum class Reason : std::uint16_t {
  none = 0,
  protocol = 1,
  version = 2,
  busy = 3,
  bad_name = 4,
  io_error = 5,
  no_space = 6,
  integrity = 7,
  interrupted = 8,
  source_changed = 9,
  timeout = 10,
  cannot_create = 11,
  internal = 12,
  too_large = 13,
  shutting_down = 14,
  auth = 15,
  unsupported_mode = 16,
  unknown_session = 17, // JOIN for a session that does not exist (any more)
};
const char* to_string(Reason reason);
ErrorKind error_kind_for(Reason reason);
Reason reason_for(ErrorKind kind);

struct Header {
  Type type;
  std::uint32_t length;
};

// Encode a header into out[0..8).
void encode_header(Type type, std::uint32_t length, std::uint8_t* out);

// Decode and validate a header: known type, zero flags/reserved, and a
// length within the bound for that type (`max_data_payload` for DATA).
Result<Header> decode_header(std::span<const std::uint8_t, k_header_size> bytes,
                             std::uint32_t max_data_payload);

// What HELLO and ACCEPT both carry, in this order on the wire.
struct Greeting {
  std::uint16_t version = k_protocol_version;
  std::uint64_t features = feature::k_all;
  DialogMode mode = DialogMode::simplex;
  std::uint32_t max_payload = k_data_prefix + k_max_chunk_size;
  std::string identity;
};
struct Hello : Greeting {}; // on the wire after the magic
using Cookie = std::array<std::uint8_t, 16>;
struct Accept : Greeting {
  Cookie cookie{}; // on the wire only with feature::k_streams: what JOIN must present
};
// The first frame of an extra connection of a session (--streams): which
// session (the cookie its ACCEPT gave) and which stream (1..N-1).
struct Join {
  Cookie cookie{};
  std::uint16_t index = 0;
};
struct Refuse {
  Reason reason = Reason::none;
  std::uint16_t version = k_protocol_version; // the refuser's protocol version
  std::string message;
};
struct Offer {
  std::string name;
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
  std::uint32_t chunk_size = 0;
  std::uint32_t mode_bits = 0644;
  Hash128 fingerprint{};
};
enum class ResumeStatus : std::uint8_t { transfer = 0, complete = 1 };
// Why the resume point is what it is.
enum class ResumeWhy : std::uint8_t {
  fresh = 0,          // nothing there: start at 0
  journal = 1,        // resumed from the journal
  source_changed = 2, // journal was for another version of the source: restart at 0
  journal_unusable = 3, // journal missing or corrupt: restart at 0
  already_complete = 4,
};
struct Resume {
  ResumeStatus status = ResumeStatus::transfer;
  ResumeWhy why = ResumeWhy::fresh;
  std::uint32_t chunk_size = 0;   // chunk size the sender must use
  std::uint64_t next_chunk = 0;   // first chunk to send
  std::uint64_t next_serial = 1;  // serial of the next minor sync point
  std::string message;            // human detail, e.g. what changed
};
// A DATA frame's fixed prefix; the chunk bytes follow it.
struct DataPrefix {
  std::uint64_t chunk = 0;
  Hash128 hash{};
};
struct Sync {
  std::uint64_t serial = 0;
  std::uint64_t end_chunk = 0; // every chunk below this is part of the sync point
};
struct Checkpoint {
  std::uint64_t serial = 0;
  std::uint64_t end_chunk = 0; // every chunk below this is durable and journaled
};
struct Resend {
  std::uint64_t chunk = 0;
};
// A chunk below the resume point that the partial file no longer holds as
// confirmed (or, --checksum, that differs at the source): send it again.
struct Repair {
  std::uint64_t chunk = 0;
};
// Re-verification progress of the open file, and the receiver's heartbeat
// while it re-reads: `checked` of `total` earlier chunks read back so far,
// `damaged` of them found damaged or missing.
struct Verified {
  std::uint64_t checked = 0;
  std::uint64_t total = 0;
  std::uint64_t damaged = 0;
};
// --checksum: the source's hashes of chunks [first_chunk, first_chunk + n)
// of the open file, hashed now; n is 1..k_max_source_hashes.
inline constexpr std::size_t k_max_source_hashes = 2048;
struct SourceHashes {
  std::uint64_t first_chunk = 0;
  std::vector<Hash128> hashes;
};
struct FileEnd {
  std::uint64_t first_chunk = 0; // first chunk sent in this session
  std::uint64_t chunk_count = 0; // chunks in the file
  Hash128 session_root{};        // hash_list_root of chunks [first_chunk, chunk_count)
};
struct FileDone {
  std::uint64_t size = 0;
  Hash128 file_root{}; // hash_list_root of every chunk of the file
};
struct Abort {
  Reason reason = Reason::none;
  std::string message;
};
// A directory of the tree being sent (no reply; created at once, its mode and
// mtime applied at orderly release, deepest first).
struct Mkdir {
  std::string path;
  std::uint32_t mode_bits = 0755;
  std::int64_t mtime_ns = 0;
};
// A symbolic link, sent as a link: the target is data, never resolved by the
// receiver (no reply).
struct Symlink {
  std::string path;
  std::string target;
  std::int64_t mtime_ns = 0;
};
// Half-duplex: the data token passes to the peer, at a major sync point of
// the giver (nothing it sent is unconfirmed). `fetch` lists what the giver
// asks the new holder to send in its turn: paths beneath the holder's export
// (--serve), each checked with check_path; `contents` sends a directory's
// contents rather than the directory (like `DIR/` on the command line). The
// new holder gives the token back when everything it sent is confirmed.
struct FetchPath {
  std::string path;
  bool contents = false;
  bool operator==(const FetchPath&) const = default;
};
struct GiveToken {
  std::vector<FetchPath> fetch;
};
// Full-duplex: sent once by the initiator right after ACCEPT; the responder
// sends these paths from its export while the initiator sends its own files.
struct Fetch {
  std::vector<FetchPath> paths;
};
// The answer to RELEASE while the peer still has work outstanding.
struct NotFinished {
  std::string message;
};

// Encode a whole frame (header + payload) for each message.
std::vector<std::uint8_t> encode(const Hello& m);
std::vector<std::uint8_t> encode(const Accept& m);
std::vector<std::uint8_t> encode(const Refuse& m);
std::vector<std::uint8_t> encode(const Offer& m);
std::vector<std::uint8_t> encode(const Resume& m);
std::vector<std::uint8_t> encode(const Sync& m);
std::vector<std::uint8_t> encode(const Checkpoint& m);
std::vector<std::uint8_t> encode(const Resend& m);
std::vector<std::uint8_t> encode(const Repair& m);
std::vector<std::uint8_t> encode(const Verified& m);
std::vector<std::uint8_t> encode(const SourceHashes& m);
std::vector<std::uint8_t> encode(const FileEnd& m);
std::vector<std::uint8_t> encode(const FileDone& m);
std::vector<std::uint8_t> encode(const Abort& m);
std::vector<std::uint8_t> encode(const Mkdir& m);
std::vector<std::uint8_t> encode(const Symlink& m);
std::vector<std::uint8_t> encode(const NotFinished& m);
std::vector<std::uint8_t> encode(const GiveToken& m);
std::vector<std::uint8_t> encode(const Fetch& m);
std::vector<std::uint8_t> encode(const Join& m);
std::vector<std::uint8_t> encode_empty(Type type); // RELEASE, RELEASE_ACK, PLEASE_TOKEN
// Encode the header and prefix of a DATA frame carrying `chunk_len` bytes.
void encode_data_prefix(const DataPrefix& m, std::uint32_t chunk_len,
                        std::uint8_t (&out)[k_header_size + k_data_prefix]);

// Decode a payload (without header). Each fails with ErrorKind::protocol on
// a short, long or invalid payload.
Result<Hello> decode_hello(std::span<const std::uint8_t> p);
Result<Accept> decode_accept(std::span<const std::uint8_t> p);
Result<Refuse> decode_refuse(std::span<const std::uint8_t> p);
Result<Offer> decode_offer(std::span<const std::uint8_t> p);
Result<Resume> decode_resume(std::span<const std::uint8_t> p);
Result<DataPrefix> decode_data_prefix(std::span<const std::uint8_t> p);
Result<Sync> decode_sync(std::span<const std::uint8_t> p);
Result<Checkpoint> decode_checkpoint(std::span<const std::uint8_t> p);
Result<Resend> decode_resend(std::span<const std::uint8_t> p);
Result<Repair> decode_repair(std::span<const std::uint8_t> p);
Result<Verified> decode_verified(std::span<const std::uint8_t> p);
Result<SourceHashes> decode_source_hashes(std::span<const std::uint8_t> p);
Result<FileEnd> decode_file_end(std::span<const std::uint8_t> p);
Result<FileDone> decode_file_done(std::span<const std::uint8_t> p);
Result<Abort> decode_abort(std::span<const std::uint8_t> p);
Result<Mkdir> decode_mkdir(std::span<const std::uint8_t> p);
Result<Symlink> decode_symlink(std::span<const std::uint8_t> p);
Result<NotFinished> decode_not_finished(std::span<const std::uint8_t> p);
Result<GiveToken> decode_give_token(std::span<const std::uint8_t> p);
Result<Fetch> decode_fetch(std::span<const std::uint8_t> p);
Result<Join> decode_join(std::span<const std::uint8_t> p);
Status decode_empty(std::span<const std::uint8_t> p);

// Return "" when `name` is a safe single path component for the receiver's
// directory, else why not (absolute, "..", "/", control characters, ...).
std::string check_name(std::string_view name);

// Return "" when `path` is a safe relative path beneath the receiver's
// directory: '/'-separated components, each one passing check_name, no empty
// component (so no leading, trailing or doubled '/'), at most k_max_text bytes.
std::string check_path(std::string_view path);

} // namespace sesscp::frame
