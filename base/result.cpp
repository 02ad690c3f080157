#include "base/result.h"

#include <cerrno>
#include <cstring>

namespace sesscp {

const char* to_string(ErrorKind kind) {
  switch (kind) {
  case ErrorKind::usage: return "usage";
  case ErrorKind::unreachable: return "unreachable";
  case ErrorKind::refused: return "refused";
  case ErrorKind::protocol: return "protocol";
  case ErrorKind::version: return "version";
  case ErrorKind::timeout: return "timeout";
  case ErrorKind::disconnected: return "disconnected";
  case ErrorKind::interrupted: return "interrupted";
  case ErrorKind::io: return "io";
  case ErrorKind::no_space: return "no_space";
  case ErrorKind::cannot_create: return "cannot_create";
  case ErrorKind::corrupt: return "corrupt";
  case ErrorKind::integrity: return "integrity";
  case ErrorKind::source_changed: return "source_changed";
  case ErrorKind::busy: return "busy";
  case ErrorKind::auth: return "auth";
  case ErrorKind::internal: return "internal";
  }
  return "unknown";
}

int exit_code_for(ErrorKind kind) {
  switch (kind) {
  case ErrorKind::usage: return exit_code::k_usage;
  case ErrorKind::unreachable:
  case ErrorKind::refused:
  case ErrorKind::version: return exit_code::k_unavailable;
  // Held by another session (or too many sessions): temporary, retry later.
  case ErrorKind::busy: return exit_code::k_temp_fail;
  case ErrorKind::protocol: return exit_code::k_protocol;
  case ErrorKind::timeout:
  case ErrorKind::disconnected:
  case ErrorKind::interrupted:
  case ErrorKind::source_changed: return exit_code::k_temp_fail;
  case ErrorKind::io:
  case ErrorKind::no_space:
  case ErrorKind::corrupt: return exit_code::k_io;
  case ErrorKind::cannot_create: return exit_code::k_cannot_create;
  case ErrorKind::integrity: return exit_code::k_integrity;
  case ErrorKind::auth: return exit_code::k_no_perm;
  case ErrorKind::internal: return 70; // EX_SOFTWARE
  }
  return 70;
}

Error errno_error(ErrorKind kind, const std::string& what, int err) {
  if (err == ENOSPC || err == EDQUOT) kind = ErrorKind::no_space;
  // "<what> (<why>)": the first half of the CLI's one-line error format.
  return Error{kind, what + " (" + std::strerror(err) + ")"};
}

} // namespace sesscp
