// How a sender reaches its receiver when it is not a TCP connection it opens
// itself: a Transport opens the session's connections (the first one, and
// the extra ones of --streams) and, after a failed session, says what went
// wrong in the terms of the transport (an SSH client's exit status and
// message, say). Without one, the sender connects over TCP, with TLS unless
// --insecure (core/send/sender.cpp). ssh/ implements one.
#pragma once

#include "base/result.h"
#include "core/events.h"

#include <memory>
#include <string>

namespace sesscp {

class Conn;

class Transport {
public:
  enum class Role { session, stream };
  virtual ~Transport() = default;
  // Open one connection: the session's first (Role::session, once per
  // attempt) or one of its extra streams (Role::stream, after ACCEPT).
  virtual Result<std::unique_ptr<Conn>> open(Role role, Events& events) = 0;
  // After the session on the last Role::session connection failed with
  // `error`: the error to report, which may name the transport's own cause
  // (authentication refused, no sesscp on the remote host) instead of the
  // lost connection the session saw.
  virtual Error explain(const Error& error, Events& events) = 0;
  // For the connecting line and -v: e.g. "ssh backup@host (sesscp recv --stdio)".
  virtual std::string describe() const = 0;
};

} // namespace sesscp
