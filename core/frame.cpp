// The session protocol's per-message codec (docs/PROTOCOL.md): the type,
// reason and mode tables (names; ABORT's reason <-> error kind, which sets
// the exit code in PROTOCOL.md's table), the 8-byte header, one encode/decode
// pair per frame type, and the name and path rules of OFFER, MKDIR and FETCH
// (frame::check_name, check_path) that PROTOCOL.md states with those fields.
// shape: long file allowed: one encode/decode pair per frame type of docs/PROTOCOL.md's
// byte layout ("Frames"), kept together so that each reads beside its neighbours.
#include "core/frame.h"

#include <algorithm>
#include <cstring>

namespace sesscp::frame {

namespace {

Error bad(const std::string& what) { return make_error(ErrorKind::protocol, what); }

std::vector<std::uint8_t> finish(Type type, ByteWriter& w) {
  auto& payload = w.buffer();
  std::vector<std::uint8_t> out(k_header_size + payload.size());
  encode_header(type, static_cast<std::uint32_t>(payload.size()), out.data());
  std::copy(payload.begin(), payload.end(), out.begin() + k_header_size);
  return out;
}

std::string clip(std::string_view s, std::size_t n) { return std::string(s.substr(0, n)); }

void put_hash(ByteWriter& w, const Hash128& h) { w.bytes(h); }
Hash128 get_hash(ByteReader& r) {
  Hash128 h{};
  r.bytes(h);
  return h;
}

bool valid_chunk_size(std::uint32_t cs) {
  return cs >= k_min_chunk_size && cs <= k_max_chunk_size && cs % k_min_chunk_size == 0;
}

template <typename T> Result<T> done(ByteReader& r, T value, const std::string& what) {
  if (!r.done()) return bad(what);
  return value;
}

} // namespace

const char* to_string(Type type) {
  switch (type) {
  case Type::hello: return "HELLO";
  case Type::accept: return "ACCEPT";
  case Type::refuse: return "REFUSE";
  case Type::join: return "JOIN";
  case Type::offer: return "OFFER";
  case Type::resume: return "RESUME";
  case Type::data: return "DATA";
  case Type::sync: return "SYNC";
  case Type::checkpoint: return "CHECKPOINT";
  case Type::resend: return "RESEND";
  case Type::repair: return "REPAIR";
  case Type::verified: return "VERIFIED";
  case Type::source_hashes: return "SOURCE_HASHES";
  case Type::file_end: return "FILE_END";
  case Type::file_done: return "FILE_DONE";
  case Type::mkdir: return "MKDIR";
  case Type::symlink: return "SYMLINK";
  case Type::give_token: return "GIVE_TOKEN";
  case Type::fetch: return "FETCH";
  case Type::please_token: return "PLEASE_TOKEN";
  case Type::release: return "RELEASE";
  case Type::release_ack: return "RELEASE_ACK";
  case Type::not_finished: return "NOT_FINISHED";
  case Type::abort: return "ABORT";
  }
  return "UNKNOWN";
}

bool is_known(std::uint8_t t) {
  switch (static_cast<Type>(t)) {
  case Type::hello: case Type::accept: case Type::refuse: case Type::offer:
  case Type::resume: case Type::data: case Type::sync: case Type::checkpoint:
  case Type::resend: case Type::file_end: case Type::file_done: case Type::mkdir:
  case Type::symlink: case Type::release: case Type::release_ack: case Type::not_finished:
  case Type::give_token: case Type::please_token: case Type::fetch: case Type::abort: case Type::join:
  case Type::repair: case Type::verified: case Type::source_hashes:
    return true;
  }
  return false;
}

const char* to_string(Reason reason) {
  switch (reason) {
  case Reason::none: return "none";
  case Reason::protocol: return "protocol error";
  case Reason::version: return "protocol version mismatch";
  case Reason::busy: return "busy";
  case Reason::bad_name: return "bad name";
  case Reason::io_error: return "I/O error";
  case Reason::no_space: return "no space left";
  case Reason::integrity: return "integrity failure";
  case Reason::interrupted: return "interrupted";
  case Reason::source_changed: return "source changed";
  case Reason::timeout: return "timeout";
  case Reason::cannot_create: return "cannot create output";
  case Reason::internal: return "internal error";
  case Reason::too_large: return "too large";
  case Reason::shutting_down: return "shutting down";
  case Reason::auth: return "authentication failed";
  case Reason::unsupported_mode: return "dialog mode not supported";
  case Reason::unknown_session: return "unknown session";
  }
  return "unknown reason";
}

const char* to_string(DialogMode mode) {
  switch (mode) {
  case DialogMode::simplex: return "simplex";
  case DialogMode::half_duplex: return "half-duplex";
  case DialogMode::full_duplex: return "full-duplex";
  }
  return "unknown mode";
}

ErrorKind error_kind_for(Reason reason) {
  switch (reason) {
  case Reason::protocol: return ErrorKind::protocol;
  case Reason::version: return ErrorKind::version;
  case Reason::busy: return ErrorKind::busy;
  case Reason::bad_name:
  case Reason::unsupported_mode:
  case Reason::too_large: return ErrorKind::refused;
  case Reason::io_error: return ErrorKind::io;
  case Reason::no_space: return ErrorKind::no_space;
  case Reason::integrity: return ErrorKind::integrity;
  case Reason::source_changed: return ErrorKind::source_changed;
  case Reason::timeout: return ErrorKind::timeout;
  case Reason::cannot_create: return ErrorKind::cannot_create;
  case Reason::internal: return ErrorKind::internal;
  case Reason::auth: return ErrorKind::auth;
  case Reason::none:
  case Reason::interrupted:
  case Reason::shutting_down:
  case Reason::unknown_session: return ErrorKind::interrupted;
  }
  return ErrorKind::protocol;
}

Reason reason_for(ErrorKind kind) {
  switch (kind) {
  case ErrorKind::protocol: return Reason::protocol;
  case ErrorKind::version: return Reason::version;
  case ErrorKind::busy: return Reason::busy;
  case ErrorKind::io:
  case ErrorKind::corrupt: return Reason::io_error;
  case ErrorKind::no_space: return Reason::no_space;
  case ErrorKind::integrity: return Reason::integrity;
  case ErrorKind::source_changed: return Reason::source_changed;
  case ErrorKind::timeout: return Reason::timeout;
  case ErrorKind::cannot_create: return Reason::cannot_create;
  case ErrorKind::usage:
  case ErrorKind::refused: return Reason::bad_name;
  case ErrorKind::interrupted:
  case ErrorKind::disconnected:
  case ErrorKind::unreachable: return Reason::interrupted;
  case ErrorKind::internal: return Reason::internal;
  case ErrorKind::auth: return Reason::auth;
  }
  return Reason::internal;
}

void encode_header(Type type, std::uint32_t length, std::uint8_t* out) {
  out[0] = static_cast<std::uint8_t>(type);
  out[1] = 0;
  out[2] = 0;
  out[3] = 0;
  out[4] = static_cast<std::uint8_t>(length >> 24);
  out[5] = static_cast<std::uint8_t>(length >> 16);
  out[6] = static_cast<std::uint8_t>(length >> 8);
  out[7] = static_cast<std::uint8_t>(length);
}

Result<Header> decode_header(std::span<const std::uint8_t, k_header_size> b,
                             std::uint32_t max_data_payload) {
  if (!is_known(b[0])) return bad("unknown frame type");
  if (b[1] != 0 || b[2] != 0 || b[3] != 0) return bad("nonzero flags in frame header");
  Header h{static_cast<Type>(b[0]), (std::uint32_t{b[4]} << 24) | (std::uint32_t{b[5]} << 16) |
                                        (std::uint32_t{b[6]} << 8) | std::uint32_t{b[7]}};
  std::uint32_t limit = h.type == Type::data ? max_data_payload : k_max_control_payload;
  if (h.length > limit) return bad("frame length exceeds the limit");
  return h;
}

namespace {

// HELLO's and ACCEPT's shared fields (Greeting), after the version.
void write_greeting(ByteWriter& w, const Greeting& m) {
  w.u64(m.features);
  w.u8(static_cast<std::uint8_t>(m.mode));
  w.u32(m.max_payload);
  w.str16(clip(m.identity, k_max_text));
}
void read_greeting(ByteReader& r, Greeting& m) {
  m.features = r.u64();
  m.mode = static_cast<DialogMode>(r.u8());
  m.max_payload = r.u32();
  m.identity = r.str16();
}
// An unknown mode is malformed; a known one this side does not implement
// decodes, so the receiver can refuse it with a reason.
Status check_greeting(const Greeting& m, const std::string& what) {
  if (static_cast<std::uint8_t>(m.mode) > 2) return bad(what + ": unknown dialog mode");
  if (m.identity.size() > k_max_text) return bad(what + ": identity too long");
  return {};
}

} // namespace

std::vector<std::uint8_t> encode(const Hello& m) {
  ByteWriter w;
  w.bytes({reinterpret_cast<const std::uint8_t*>(k_magic), sizeof k_magic});
  w.u16(m.version);
  write_greeting(w, m);
  return finish(Type::hello, w);
}

Result<Hello> decode_hello(std::span<const std::uint8_t> p) {
  ByteReader r(p);
  std::uint8_t magic[8];
  r.bytes(magic);
  if (r.failed() || std::memcmp(magic, k_magic, sizeof magic) != 0) return bad("HELLO: bad magic");
  Hello m;
  m.version = r.u16();
  if (r.failed()) return bad("HELLO: truncated");
  // Another version's HELLO may be laid out differently: stop at the version
  // so the receiver can refuse it with a precise reason.
  if (m.version != k_protocol_version) return m;
  read_greeting(r, m);
  SESSCP_TRY(check_greeting(m, "HELLO"));
  return done(r, m, "HELLO: bad length");
}

std::vector<std::uint8_t> encode(const Accept& m) {
  ByteWriter w;
  w.u16(m.version);
  write_greeting(w, m);
  if (m.features & feature::k_streams) w.bytes(m.cookie);
  return finish(Type::accept, w);
}

Result<Accept> decode_accept(std::span<const std::uint8_t> p) {
  ByteReader r(p);
  Accept m;
  m.version = r.u16();
  read_greeting(r, m);
  if (m.features & feature::k_streams) r.bytes(m.cookie);
  SESSCP_TRY(check_greeting(m, "ACCEPT"));
  return done(r, m, "ACCEPT: bad length");
}

std::vector<std::uint8_t> encode(const Refuse& m) {
  ByteWriter w;
  w.u16(static_cast<std::uint16_t>(m.reason));
  w.u16(m.version);
  w.str16(clip(m.message, k_max_text));
  return finish(Type::refuse, w);
}

Result<Refuse> decode_refuse(std::span<const std::uint8_t> p) {
  ByteReader r(p);
  Refuse m;
  m.reason = static_cast<Reason>(r.u16());
  m.version = r.u16();
  m.message = r.str16();
  if (m.message.size() > k_max_text) return bad("REFUSE: message too long");
  return done(r, m, "REFUSE: bad length");
}

std::vector<std::uint8_t> encode(const Offer& m) {
  ByteWriter w;
  w.str16(clip(m.name, k_max_text));
  w.u64(m.size);
  w.i64(m.mtime_ns);
  w.u32(m.chunk_size);
  w.u32(m.mode_bits);
  put_hash(w, m.fingerprint);
  return finish(Type::offer, w);
}

Result<Offer> decode_offer(std::span<const std::uint8_t> p) {
  ByteReader r(p);
  Offer m;
  m.name = r.str16();
  m.size = r.u64();
  m.mtime_ns = r.i64();
  m.chunk_size = r.u32();
  m.mode_bits = r.u32();
  m.fingerprint = get_hash(r);
  if (!r.done()) return bad("OFFER: bad length");
  // Longer names than a receiver accepts still decode, so the receiver can
  // refuse them as a bad name (check_name) rather than as a protocol error.
  if (m.name.size() > k_max_text) return bad("OFFER: name longer than 1024 bytes");
  if (!valid_chunk_size(m.chunk_size)) return bad("OFFER: invalid chunk size");
  if (m.size > (std::uint64_t{1} << 62)) return bad("OFFER: size out of range");
  return m;
}

std::vector<std::uint8_t> encode(const Resume& m) {
  ByteWriter w;
  w.u8(static_cast<std::uint8_t>(m.status));
  w.u8(static_cast<std::uint8_t>(m.why));
  w.u32(m.chunk_size);
  w.u64(m.next_chunk);
  w.u64(m.next_serial);
  w.str16(clip(m.message, k_max_text));
  return finish(Type::resume, w);
}

Result<Resume> decode_resume(std::span<const std::uint8_t> p) {
  ByteReader r(p);
  Resume m;
  auto status = r.u8();
  auto why = r.u8();
  m.chunk_size = r.u32();
  m.next_chunk = r.u64();
  m.next_serial = r.u64();
  m.message = r.str16();
  if (!r.done()) return bad("RESUME: bad length");
  if (m.message.size() > k_max_text) return bad("RESUME: message too long");
  if (status > 1 || why > 4) return bad("RESUME: invalid status");
  m.status = static_cast<ResumeStatus>(status);
  m.why = static_cast<ResumeWhy>(why);
  if (m.status == ResumeStatus::transfer && !valid_chunk_size(m.chunk_size))
    return bad("RESUME: invalid chunk size");
  return m;
}

void encode_data_prefix(const DataPrefix& m, std::uint32_t chunk_len,
                        std::uint8_t (&out)[k_header_size + k_data_prefix]) {
  encode_header(Type::data, k_data_prefix + chunk_len, out);
  for (int i = 0; i < 8; ++i) out[k_header_size + i] = static_cast<std::uint8_t>(m.chunk >> (56 - 8 * i));
  std::memcpy(out + k_header_size + 8, m.hash.data(), m.hash.size());
}

Result<DataPrefix> decode_data_prefix(std::span<const std::uint8_t> p) {
  if (p.size() < k_data_prefix) return bad("DATA: shorter than its prefix");
  ByteReader r(p.first(k_data_prefix));
  DataPrefix m;
  m.chunk = r.u64();
  m.hash = get_hash(r);
  return m;
}

std::vector<std::uint8_t> encode(const Sync& m) {
  ByteWriter w;
  w.u64(m.serial);
  w.u64(m.end_chunk);
  return finish(Type::sync, w);
}

Result<Sync> decode_sync(std::span<const std::uint8_t> p) {
  ByteReader r(p);
  Sync m;
  m.serial = r.u64();
  m.end_chunk = r.u64();
  return done(r, m, "SYNC: bad length");
}

std::vector<std::uint8_t> encode(const Checkpoint& m) {
  ByteWriter w;
  w.u64(m.serial);
  w.u64(m.end_chunk);
  return finish(Type::checkpoint, w);
}

Result<Checkpoint> decode_checkpoint(std::span<const std::uint8_t> p) {
  ByteReader r(p);
  Checkpoint m;
  m.serial = r.u64();
  m.end_chunk = r.u64();
  return done(r, m, "CHECKPOINT: bad length");
}

std::vector<std::uint8_t> encode(const Resend& m) {
  ByteWriter w;
  w.u64(m.chunk);
  return finish(Type::resend, w);
}

Result<Resend> decode_resend(std::span<const std::uint8_t> p) {
  ByteReader r(p);
  Resend m;
  m.chunk = r.u64();
  return done(r, m, "RESEND: bad length");
}

std::vector<std::uint8_t> encode(const Repair& m) {
  ByteWriter w;
  w.u64(m.chunk);
  return finish(Type::repair, w);
}

Result<Repair> decode_repair(std::span<const std::uint8_t> p) {
  ByteReader r(p);
  Repair m;
  m.chunk = r.u64();
  return done(r, m, "REPAIR: bad length");
}

std::vector<std::uint8_t> encode(const Verified& m) {
  ByteWriter w;
  w.u64(m.checked);
  w.u64(m.total);
  w.u64(m.damaged);
  return finish(Type::verified, w);
}

Result<Verified> decode_verified(std::span<const std::uint8_t> p) {
  ByteReader r(p);
  Verified m;
  m.checked = r.u64();
  m.total = r.u64();
  m.damaged = r.u64();
  if (!r.done()) return bad("VERIFIED: bad length");
  if (m.checked > m.total || m.damaged > m.checked) return bad("VERIFIED: counts out of range");
  return m;
}

std::vector<std::uint8_t> encode(const SourceHashes& m) {
  ByteWriter w;
  w.u64(m.first_chunk);
  w.u16(static_cast<std::uint16_t>(m.hashes.size()));
  for (const auto& h : m.hashes) put_hash(w, h);
  return finish(Type::source_hashes, w);
}

Result<SourceHashes> decode_source_hashes(std::span<const std::uint8_t> p) {
  ByteReader r(p);
  SourceHashes m;
  m.first_chunk = r.u64();
  std::uint16_t n = r.u16();
  if (n == 0 || n > k_max_source_hashes) return bad("SOURCE_HASHES: count out of range");
  if (p.size() != 10 + std::size_t{n} * 16) return bad("SOURCE_HASHES: bad length");
  m.hashes.reserve(n);
  for (std::uint16_t i = 0; i < n; ++i) m.hashes.push_back(get_hash(r));
  if (!r.done()) return bad("SOURCE_HASHES: bad length");
  return m;
}

std::vector<std::uint8_t> encode(const FileEnd& m) {
  ByteWriter w;
  w.u64(m.first_chunk);
  w.u64(m.chunk_count);
  put_hash(w, m.session_root);
  return finish(Type::file_end, w);
}

Result<FileEnd> decode_file_end(std::span<const std::uint8_t> p) {
  ByteReader r(p);
  FileEnd m;
  m.first_chunk = r.u64();
  m.chunk_count = r.u64();
  m.session_root = get_hash(r);
  if (!r.done()) return bad("FILE_END: bad length");
  if (m.first_chunk > m.chunk_count) return bad("FILE_END: first chunk past the end");
  return m;
}

std::vector<std::uint8_t> encode(const FileDone& m) {
  ByteWriter w;
  w.u64(m.size);
  put_hash(w, m.file_root);
  return finish(Type::file_done, w);
}

Result<FileDone> decode_file_done(std::span<const std::uint8_t> p) {
  ByteReader r(p);
  FileDone m;
  m.size = r.u64();
  m.file_root = get_hash(r);
  return done(r, m, "FILE_DONE: bad length");
}

std::vector<std::uint8_t> encode(const Abort& m) {
  ByteWriter w;
  w.u16(static_cast<std::uint16_t>(m.reason));
  w.str16(clip(m.message, k_max_text));
  return finish(Type::abort, w);
}

Result<Abort> decode_abort(std::span<const std::uint8_t> p) {
  ByteReader r(p);
  Abort m;
  m.reason = static_cast<Reason>(r.u16());
  m.message = r.str16();
  if (m.message.size() > k_max_text) return bad("ABORT: message too long");
  return done(r, m, "ABORT: bad length");
}

std::vector<std::uint8_t> encode(const Join& m) {
  ByteWriter w;
  w.bytes(m.cookie);
  w.u16(m.index);
  return finish(Type::join, w);
}

Result<Join> decode_join(std::span<const std::uint8_t> p) {
  ByteReader r(p);
  Join m;
  r.bytes(m.cookie);
  m.index = r.u16();
  return done(r, m, "JOIN: bad length");
}

std::vector<std::uint8_t> encode(const Mkdir& m) {
  ByteWriter w;
  w.str16(clip(m.path, k_max_text));
  w.u32(m.mode_bits);
  w.i64(m.mtime_ns);
  return finish(Type::mkdir, w);
}

Result<Mkdir> decode_mkdir(std::span<const std::uint8_t> p) {
  ByteReader r(p);
  Mkdir m;
  m.path = r.str16();
  m.mode_bits = r.u32();
  m.mtime_ns = r.i64();
  if (!r.done()) return bad("MKDIR: bad length");
  if (m.path.size() > k_max_text) return bad("MKDIR: path longer than 1024 bytes");
  return m;
}

std::vector<std::uint8_t> encode(const Symlink& m) {
  ByteWriter w;
  w.str16(clip(m.path, k_max_text));
  w.str16(clip(m.target, k_max_link_target));
  w.i64(m.mtime_ns);
  return finish(Type::symlink, w);
}

Result<Symlink> decode_symlink(std::span<const std::uint8_t> p) {
  ByteReader r(p);
  Symlink m;
  m.path = r.str16();
  m.target = r.str16();
  m.mtime_ns = r.i64();
  if (!r.done()) return bad("SYMLINK: bad length");
  if (m.path.size() > k_max_text) return bad("SYMLINK: path longer than 1024 bytes");
  if (m.target.empty() || m.target.size() > k_max_link_target) return bad("SYMLINK: empty or overlong target");
  if (m.target.find('\0') != std::string::npos) return bad("SYMLINK: NUL in the target");
  return m;
}

std::vector<std::uint8_t> encode(const NotFinished& m) {
  ByteWriter w;
  w.str16(clip(m.message, k_max_text));
  return finish(Type::not_finished, w);
}

Result<NotFinished> decode_not_finished(std::span<const std::uint8_t> p) {
  ByteReader r(p);
  NotFinished m;
  m.message = r.str16();
  if (m.message.size() > k_max_text) return bad("NOT_FINISHED: message too long");
  return done(r, m, "NOT_FINISHED: bad length");
}

namespace {

// GIVE_TOKEN and FETCH carry the same list of paths.
void write_paths(ByteWriter& w, const std::vector<FetchPath>& paths) {
  auto n = std::min(paths.size(), k_max_fetch_paths);
  w.u16(static_cast<std::uint16_t>(n));
  for (std::size_t i = 0; i < n; ++i) {
    w.u8(paths[i].contents ? 1 : 0);
    w.str16(clip(paths[i].path, k_max_text));
  }
}

Result<std::vector<FetchPath>> read_paths(std::span<const std::uint8_t> p, const std::string& what) {
  ByteReader r(p);
  std::vector<FetchPath> out;
  auto n = r.u16();
  if (r.failed()) return bad(what + ": truncated");
  if (n > k_max_fetch_paths) return bad(what + ": more than 256 paths");
  for (std::uint16_t i = 0; i < n; ++i) {
    auto contents = r.u8();
    auto path = r.str16();
    if (r.failed()) return bad(what + ": truncated");
    if (contents > 1) return bad(what + ": bad contents flag");
    if (path.size() > k_max_text) return bad(what + ": path longer than 1024 bytes");
    out.push_back({std::move(path), contents == 1});
  }
  return done(r, out, what + ": bad length");
}

} // namespace

std::vector<std::uint8_t> encode(const GiveToken& m) {
  ByteWriter w;
  write_paths(w, m.fetch);
  return finish(Type::give_token, w);
}

Result<GiveToken> decode_give_token(std::span<const std::uint8_t> p) {
  auto paths = read_paths(p, "GIVE_TOKEN");
  if (!paths) return paths.error();
  return GiveToken{std::move(*paths)};
}

std::vector<std::uint8_t> encode(const Fetch& m) {
  ByteWriter w;
  write_paths(w, m.paths);
  return finish(Type::fetch, w);
}

Result<Fetch> decode_fetch(std::span<const std::uint8_t> p) {
  auto paths = read_paths(p, "FETCH");
  if (!paths) return paths.error();
  return Fetch{std::move(*paths)};
}

std::vector<std::uint8_t> encode_empty(Type type) {
  ByteWriter w;
  return finish(type, w);
}

Status decode_empty(std::span<const std::uint8_t> p) {
  if (!p.empty()) return bad("unexpected payload");
  return {};
}

std::string check_name(std::string_view name) {
  if (name.empty()) return "empty name";
  if (name.size() > k_max_dest_name)
    return "name longer than 240 bytes (the receiver needs room for its .sesscp.journal suffix)";
  if (name == "." || name == "..") return "name is '.' or '..'";
  for (unsigned char c : name) {
    if (c == '/') return "name contains '/' (only plain file names are accepted)";
    if (c < 0x20 || c == 0x7F) return "name contains a control character";
  }
  auto ends_with = [&](std::string_view suffix) {
    return name.size() >= suffix.size() && name.substr(name.size() - suffix.size()) == suffix;
  };
  if (ends_with(".sesscp.part") || ends_with(".sesscp.journal") || ends_with(".sesscp.publish"))
    return "name ends with a suffix sesscp reserves for its own files";
  return "";
}

std::string check_path(std::string_view path) {
  if (path.empty()) return "empty name";
  if (path.size() > k_max_text) return "path longer than 1024 bytes";
  if (path.front() == '/') return "absolute path (paths are relative to the receiver's directory)";
  std::size_t start = 0;
  for (;;) {
    auto slash = path.find('/', start);
    auto component = path.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (component.empty()) return "empty path component (leading, trailing or doubled '/')";
    if (auto why = check_name(component); !why.empty()) return why + " (in component '" + std::string(component) + "')";
    if (slash == std::string_view::npos) return "";
    start = slash + 1;
  }
}

} // namespace sesscp::frame
