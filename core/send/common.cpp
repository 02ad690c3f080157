#include "core/send/common.h"

#include "core/conn.h"

#include <algorithm>
#include <thread>

namespace sesscp::send {

Error remote_error(frame::Reason reason, const std::string& message, const char* who) {
  auto kind = frame::error_kind_for(reason);
  // The receiver's disk or I/O trouble is not ours: the state is saved and
  // the same command resumes once the receiver is fixed.
  if (kind == ErrorKind::io || kind == ErrorKind::no_space) kind = ErrorKind::interrupted;
  return make_error(kind, std::string(who) + ": " + std::string(frame::to_string(reason)) +
                              (message.empty() ? "" : ": " + message));
}

Error unexpected(Conn& conn, frame::Type got, const char* expected, const char* who) {
  std::string msg = std::string("expected ") + expected + ", got " + frame::to_string(got);
  conn.send_abort(frame::Reason::protocol, msg);
  return make_error(ErrorKind::protocol, std::string(who) + " broke the protocol: " + msg);
}

Status read_payload(Conn& conn, const frame::Header& header, std::span<const std::uint8_t>& payload,
                    const char* who) {
  auto p = conn.read_control_payload(header);
  if (!p) return p.error();
  payload = *p;
  if (header.type == frame::Type::abort) {
    auto abort = frame::decode_abort(payload);
    if (!abort) return abort.error();
    return remote_error(abort->reason, abort->message, who);
  }
  return {};
}

void throttle(std::uint64_t limit, std::uint64_t bytes, Clock::time_point start, const std::atomic<bool>* stop) {
  if (limit == 0) return;
  auto due = start + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(static_cast<double>(bytes) / static_cast<double>(limit)));
  while (Clock::now() < due && !(stop && stop->load()))
    std::this_thread::sleep_for(std::min<Clock::duration>(due - Clock::now(), std::chrono::milliseconds(50)));
}

} // namespace sesscp::send
