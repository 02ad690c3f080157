// TLS 1.3 for sessions: a pre-shared key (external PSK, no certificates) or
// certificates with a CA or a pinned peer fingerprint. Both sides
// authenticate each other; plaintext only with --insecure.
#pragma once

#include "base/result.h"

#include <array>
#include <cstdint>
#include <memory>
#include <string>

typedef struct ssl_st SSL;
typedef struct ssl_ctx_st SSL_CTX;

namespace sesscp::tls {

struct Options {
  bool insecure = false;        // plaintext, no authentication
  std::string key_file;         // shared key (sesscp keygen)
  std::string cert_file;        // PEM certificate chain
  std::string private_key_file; // PEM private key for cert_file
  std::string ca_file;          // trust anchors for the peer's certificate
  std::string peer_fingerprint; // "sha256:HEX" of the peer's certificate
};

inline constexpr std::size_t k_key_size = 32;
using Key = std::array<std::uint8_t, k_key_size>;

// Return a new full-entropy key in key-file form ("sesscp-psk-v1 HEX\n").
Result<std::string> generate_key_text();

// Write a new key file with mode 0600; refuses to replace an existing file.
Status write_key_file(const std::string& path, const std::string& text);

// Read a key file, refusing one that group or others can read.
Result<Key> read_key_file(const std::string& path);

struct SslDeleter {
  void operator()(SSL* ssl) const;
};
using SslPtr = std::unique_ptr<SSL, SslDeleter>;

class Context {
public:
  // Build a context for one side from the options (which must not be insecure).
  static Result<Context> create(const Options& options, bool server);
  Context(Context&&) noexcept;
  Context& operator=(Context&&) noexcept;
  ~Context();

  // A new TLS connection over `fd`. `host` is checked against the peer's
  // certificate when a CA is used on the client side.
  Result<SslPtr> wrap(int fd, const std::string& host) const;

  // After the handshake: check what OpenSSL cannot (the pinned fingerprint).
  Status check_peer(SSL* ssl) const;

  // One line describing the mode, for the banner (e.g. "TLS 1.3, shared key").
  std::string describe() const;

  struct State; // OpenSSL objects and key material, in tls.cpp

private:
  Context() = default;
  std::unique_ptr<State> m_state;
};

// Describe why a handshake failed, from OpenSSL's error queue and the
// context's notes ("key mismatch", "certificate verify failed", ...).
std::string handshake_failure(SSL* ssl);

// Drain OpenSSL's error queue; return its most specific entry ("" if empty).
std::string last_error();

// True if kernel TLS offload is active for sending on this connection.
bool ktls_send_active(SSL* ssl);

} // namespace sesscp::tls
