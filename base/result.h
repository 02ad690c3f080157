// Typed errors and a small Result<T> for low-level code (no exceptions below cli/).
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace sesscp {

// What went wrong, as far as a caller deciding what to do next cares.
enum class ErrorKind {
  usage,          // bad arguments or bad input from the user
  unreachable,    // peer could not be reached (connect failed)
  refused,        // peer answered but refused the session or the file
  protocol,       // peer broke the protocol (malformed or out-of-order frame)
  version,        // protocol version mismatch
  timeout,        // peer stopped answering within the deadline
  disconnected,   // connection lost mid-session (EOF, reset)
  interrupted,    // stopped by a signal; state saved
  io,             // local I/O error
  no_space,       // disk full
  cannot_create,  // cannot create the output file or journal
  corrupt,        // data or journal failed verification
  integrity,      // end-to-end digest mismatch that retrying cannot fix
  source_changed, // source file changed while being read
  busy,           // resource held by another session
  auth,           // authentication failed (wrong or missing key, untrusted certificate)
  internal,       // a bug
};

struct Error {
  ErrorKind kind;
  std::string message;
};

const char* to_string(ErrorKind kind);

// Map an error kind to the documented exit code (see README "Exit codes").
int exit_code_for(ErrorKind kind);

// Exit codes (sysexits.h values), shared by the CLI and the documentation.
namespace exit_code {
inline constexpr int k_ok = 0;
inline constexpr int k_usage = 64;
inline constexpr int k_integrity = 65;
inline constexpr int k_unavailable = 69;
inline constexpr int k_cannot_create = 73;
inline constexpr int k_io = 74;
inline constexpr int k_temp_fail = 75;
inline constexpr int k_protocol = 76;
inline constexpr int k_no_perm = 77;
} // namespace exit_code

template <typename T> class [[nodiscard]] Result {
public:
  Result(T value) : m_v(std::move(value)) {}
  Result(Error error) : m_v(std::move(error)) {}

  explicit operator bool() const { return m_v.index() == 0; }
  bool ok() const { return m_v.index() == 0; }
  T& value() { assert(ok()); return std::get<0>(m_v); }
  const T& value() const { assert(ok()); return std::get<0>(m_v); }
  T& operator*() { return value(); }
  T* operator->() { return &value(); }
  const Error& error() const { assert(!ok()); return std::get<1>(m_v); }

private:
  std::variant<T, Error> m_v;
};

template <> class [[nodiscard]] Result<void> {
public:
  Result() = default;
  Result(Error error) : m_err(std::move(error)), m_ok(false) {}
  explicit operator bool() const { return m_ok; }
  bool ok() const { return m_ok; }
  const Error& error() const { assert(!m_ok); return m_err; }

private:
  Error m_err{ErrorKind::internal, {}};
  bool m_ok = true;
};

using Status = Result<void>;

inline Error make_error(ErrorKind kind, std::string message) {
  return Error{kind, std::move(message)};
}

// Error from errno with context, e.g. errno_error(ErrorKind::io, "write x.part").
// ENOSPC/EDQUOT become ErrorKind::no_space whatever `kind` says.
Error errno_error(ErrorKind kind, const std::string& what, int err);

} // namespace sesscp

// Propagate an error from an expression returning Status or Result<T>.
#define SESSCP_TRY(expr)                                                        \
  do {                                                                          \
    auto&& sesscp_try_r_ = (expr);                                              \
    if (!sesscp_try_r_) return sesscp_try_r_.error();                           \
  } while (0)
