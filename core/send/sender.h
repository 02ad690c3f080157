// The sending engine: send files and trees to a receiver, retrying over new sessions; and the --serve side's sending turn.
#pragma once

#include "checkpoint/verify.h"
#include "core/events.h"
#include "core/frame.h"
#include "core/net.h"
#include "base/result.h"
#include "core/retry.h"
#include "core/tls.h"
#include "core/transport.h"
#include "core/turn.h"

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace sesscp {

struct SendOptions {
  std::string path;             // local source file or directory (when `paths` is empty)
  std::vector<std::string> paths; // local sources, files and directories, all in one session
  net::Endpoint endpoint;       // receiver
  std::string name;             // destination name of a single file ("" = basename of path)
  bool follow_links = false;    // send what symlinks inside directories point to, not the links
  std::uint32_t chunk_size = 1u << 20;
  // Unconfirmed bytes allowed in flight: what a receiver crash can cost.
  // 60 MiB + one 1 MiB chunk stays under the 64 MiB re-send bound; measured
  // here, 32 MiB windows cost 20-40% of throughput on a disk that needs
  // ~10 ms per fdatasync, while 60 MiB reaches the disk's speed.
  std::uint64_t window = 60u << 20;
  std::uint64_t bwlimit = 0;          // bytes per second, 0 = unlimited (all streams together)
  // TCP connections for the session (--streams): the first carries the
  // session; the others carry DATA of the files larger than one chunk.
  unsigned streams = 1;
  int timeout_ms = 30'000;            // peer silence that ends the session
  tls::Options tls;                   // how to encrypt and authenticate
  RetryPolicy retry;                  // reconnect after network failures (--retry, --retry-for)
  // Half-duplex (--fetch): after the push, give the data token to the
  // receiver with this request, and receive what it sends into `fetch_dir`.
  std::vector<frame::FetchPath> fetch;
  std::string fetch_dir = ".";
  // Full-duplex (--duplex full): fetch while sending, both at once over the
  // one connection, instead of taking turns (half-duplex).
  Dialog dialog = Dialog::half_duplex;
  // How the fetch is received (dialog::wire sets it): without one, --fetch
  // fails with an internal error.
  ReceiveTurn receive_turn;
  // --checksum: re-hash the source's chunks that the receiver confirmed in
  // earlier sessions (overlapped with sending the rest); a chunk that
  // differs from the receiver's journal is sent again.
  bool checksum = false;
  // What --fetch receives: how much of a partial file is read back on resume.
  checkpoint::ResumeCheck verify_resume = checkpoint::ResumeCheck::full;
  // How the session's connections are opened (send to HOST:PATH: over SSH,
  // ssh/). Null: TCP to `endpoint`, with `tls`.
  std::shared_ptr<Transport> transport;
  const std::atomic<bool>* stop = nullptr;
};

class Conn;
namespace session {
class Machine;
}

// Return how many chunks may be unconfirmed at once for a window in bytes.
std::uint64_t window_chunks(std::uint64_t window, std::uint32_t chunk_size);

// Return the number of chunks between two minor sync points for a window:
// a quarter of the window, so several sync points are always in flight.
std::uint64_t sync_interval_chunks(std::uint64_t window, std::uint32_t chunk_size);

// Send the sources (`options.paths`, or `options.path`) in one session, or,
// when `options.retry` allows it, in as many as it takes: after a failure
// that another attempt may fix, wait (backoff with jitter) and reconnect;
// files already complete are skipped and the partial one resumes from the
// receiver's last checkpoint. Each file gets its own Events::file_report.
// `report` is filled in whatever the outcome: for a single file, that file's
// report; for several, the totals (name "N files"). Retries spent:
// ErrorKind::interrupted (exit 75).
Status send_file(const SendOptions& options, Events& events, FileReport& report);

// Half-duplex, the responder's turn (a ServeTurn): the initiator gave the
// data token with the request `fetch`; send those paths from the export
// (`turn.serve_fd`, opened on `turn.dir`) over `conn`, as send_file does,
// then give the token back once every file sent is confirmed. Each path must
// pass frame::check_path and resolve beneath the export without a symlink on
// the way; anything else is answered with ABORT bad name
// (ErrorKind::refused). Full-duplex: the same over the responder's sending
// direction (docs/PROTOCOL.md, "Full-duplex"), which ends with its own
// RELEASE instead of giving a token back.
Status serve_turn(Conn& conn, session::Machine& machine, const TurnOptions& turn,
                  const std::vector<frame::FetchPath>& fetch, Events& events, Dialog dialog);

} // namespace sesscp
