// What the sending engine's parts share: the clock, the peer's errors, --bwlimit pacing.
#pragma once

#include "base/result.h"
#include "core/frame.h"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <span>
#include <string>

namespace sesscp {
class Conn;
}

namespace sesscp::send {

using Clock = std::chrono::steady_clock;

// An error the peer (`who`: the receiver, or in a half-duplex turn the
// sender) reported in ABORT or REFUSE.
Error remote_error(frame::Reason reason, const std::string& message, const char* who = "receiver");

// The peer sent `got` where `expected` was due: ABORT protocol, and the error.
Error unexpected(Conn& conn, frame::Type got, const char* expected, const char* who = "receiver");

// Read the payload of the frame `header` announced into `payload`; ABORT
// becomes the error the peer (`who`) reported.
Status read_payload(Conn& conn, const frame::Header& header, std::span<const std::uint8_t>& payload,
                    const char* who = "receiver");

// Sleep as needed to keep the average rate under `limit` bytes per second.
void throttle(std::uint64_t limit, std::uint64_t bytes, Clock::time_point start, const std::atomic<bool>* stop);

} // namespace sesscp::send
