// The trace written by crashsim.so and read by crashreplay: every operation
// that changes a file in the watched directory, in the order they happened,
// with the bytes written. Model and use: docs/RELIABILITY.md.
//
// Layout: the 8-byte magic "CRASHSM1", then records. A record is a 48-byte
// TraceHeader (host byte order: the trace is read on the machine that wrote
// it) followed by name_len bytes of name, name2_len bytes of name2 and
// data_len bytes of data. `seq` is the record's index from 0; crash point k
// means "records 0..k-1 happened, k and later did not".
#pragma once

#include <cstdint>

namespace crashsim {

inline constexpr char k_trace_magic[8] = {'C', 'R', 'A', 'S', 'H', 'S', 'M', '1'};

enum class Op : std::uint32_t {
  create = 1,    // new file `id` under `name` (a directory operation)
  link = 2,      // another name `name` for file `id` (directory operation)
  rename = 3,    // `name` -> `name2`, a = renameat2 flags (directory operation)
  unlink = 4,    // remove `name` (directory operation)
  write = 5,     // data_len bytes at offset a of file `id`
  set_size = 6,  // file `id` is now a bytes long (ftruncate, fallocate growth)
  fsync = 7,     // file `id`: data, size and metadata durable
  fdatasync = 8, // file `id`: data and size durable (not mtime or mode)
  dir_sync = 9,  // the watched directory: its entries are durable
  sync_all = 10, // syncfs/sync: everything durable
  set_mtime = 11, // file `id`: mtime = a (nanoseconds since the epoch, signed)
  set_mode = 12, // file `id`: mode = a
  injected = 13, // an injected failure: a = errno, name = the call; no effect
  baseline = 14, // the records before this one are what DIR held when tracing began:
                 // durable, and not crash points
};

struct TraceHeader {
  std::uint32_t op = 0;
  std::uint32_t id = 0;
  std::uint64_t seq = 0;
  std::uint64_t a = 0;
  std::uint64_t b = 0;
  std::uint32_t name_len = 0;
  std::uint32_t name2_len = 0;
  std::uint64_t data_len = 0;
};
static_assert(sizeof(TraceHeader) == 48);

inline const char* op_name(std::uint32_t op) {
  switch (static_cast<Op>(op)) {
  case Op::create: return "create";
  case Op::link: return "link";
  case Op::rename: return "rename";
  case Op::unlink: return "unlink";
  case Op::write: return "write";
  case Op::set_size: return "set_size";
  case Op::fsync: return "fsync";
  case Op::fdatasync: return "fdatasync";
  case Op::dir_sync: return "dir_sync";
  case Op::sync_all: return "sync_all";
  case Op::set_mtime: return "set_mtime";
  case Op::set_mode: return "set_mode";
  case Op::injected: return "injected";
  case Op::baseline: return "baseline";
  }
  return "unknown";
}

} // namespace crashsim
