#include "core/tls.h"

#include "base/fd.h"
#include "base/hash.h"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace sesscp::tls {

std::string last_error();

namespace {

constexpr const char* k_key_prefix = "sesscp-psk-v1 ";
// TLS_AES_128_GCM_SHA256: the cipher the PSK is bound to; AES-GCM is what
// kernel TLS offload supports, and AES-128 is the fastest here (~4 GB/s).
constexpr unsigned char k_tls13_aes128gcm_sha256[] = {0x13, 0x01};

Error tls_error(ErrorKind kind, const std::string& what) {
  std::string detail = last_error();
  return make_error(kind, detail.empty() ? what : what + " (" + detail + ")");
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool parse_hex(std::string_view hex, std::uint8_t* out, std::size_t n) {
  if (hex.size() != 2 * n) return false;
  for (std::size_t i = 0; i < n; ++i) {
    int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<std::uint8_t>(hi * 16 + lo);
  }
  return true;
}

// The PSK identity names the key (not secret): a short digest of it, so a
// receiver can say "key mismatch" instead of a bare handshake failure.
std::string key_identity(const Key& key) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(key.data(), key.size(), md, &len, EVP_sha256(), nullptr);
  return "sesscp-psk:" + to_hex({md, 8});
}

int g_ex_index = -1; // SSL ex_data slot: the Context::State of the connection

} // namespace

struct Context::State {
  SSL_CTX* ctx = nullptr;
  bool server = false;
  bool psk = false;
  Key key{};
  std::string identity;
  std::vector<std::uint8_t> pinned; // SHA-256 of the peer certificate, if pinned
  bool use_ca = false;
  ~State() { SSL_CTX_free(ctx); }
};

namespace {

// Per-connection note of why authentication failed, for the error message.
struct Note {
  const Context::State* state;
  std::string failure;
};

Note* note_of(SSL* ssl) { return static_cast<Note*>(SSL_get_ex_data(ssl, g_ex_index)); }

SSL_SESSION* make_psk_session(SSL* ssl, const Key& key) {
  const SSL_CIPHER* cipher = SSL_CIPHER_find(ssl, k_tls13_aes128gcm_sha256);
  if (!cipher) return nullptr;
  SSL_SESSION* sess = SSL_SESSION_new();
  if (!sess || !SSL_SESSION_set1_master_key(sess, key.data(), key.size()) ||
      !SSL_SESSION_set_cipher(sess, cipher) || !SSL_SESSION_set_protocol_version(sess, TLS1_3_VERSION)) {
    SSL_SESSION_free(sess);
    return nullptr;
  }
  return sess;
}

int use_session_cb(SSL* ssl, const EVP_MD* md, const unsigned char** id, std::size_t* idlen, SSL_SESSION** sess) {
  auto* note = note_of(ssl);
  SSL_SESSION* s = make_psk_session(ssl, note->state->key);
  if (!s) return 0;
  if (md && md != SSL_CIPHER_get_handshake_digest(SSL_SESSION_get0_cipher(s))) {
    SSL_SESSION_free(s); // this hash does not fit our PSK; offer nothing for it
    *sess = nullptr;
    return 1;
  }
  *id = reinterpret_cast<const unsigned char*>(note->state->identity.data());
  *idlen = note->state->identity.size();
  *sess = s;
  return 1;
}

int find_session_cb(SSL* ssl, const unsigned char* id, std::size_t idlen, SSL_SESSION** sess) {
  auto* note = note_of(ssl);
  const auto& mine = note->state->identity;
  if (idlen != mine.size() || std::memcmp(id, mine.data(), idlen) != 0) {
    note->failure = "key mismatch (the sender uses another key)";
    *sess = nullptr;
    return 1;
  }
  *sess = make_psk_session(ssl, note->state->key);
  return *sess ? 1 : 0;
}

void free_note(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) { delete static_cast<Note*>(ptr); }

} // namespace

void SslDeleter::operator()(SSL* ssl) const { SSL_free(ssl); }

Result<std::string> generate_key_text() {
  Key key;
  if (RAND_priv_bytes(key.data(), static_cast<int>(key.size())) != 1)
    return tls_error(ErrorKind::internal, "cannot draw random bytes");
  return std::string(k_key_prefix) + to_hex(key) + "\n";
}

Status write_key_file(const std::string& path, const std::string& text) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return errno_error(errno == EEXIST ? ErrorKind::usage : ErrorKind::cannot_create,
                              "cannot create key file " + path, errno);
  fchmod(fd.get(), 0600); // whatever the umask said
  if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()) || fsync(fd.get()) != 0)
    return errno_error(ErrorKind::io, "write key file " + path, errno);
  return {};
}

Result<Key> read_key_file(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return errno_error(ErrorKind::usage, "cannot open key file " + path, errno);
  struct stat st{};
  if (fstat(fd.get(), &st) != 0) return errno_error(ErrorKind::usage, "cannot stat key file " + path, errno);
  if (st.st_mode & 077) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
    return make_error(ErrorKind::usage, "key file " + path + " is readable by group or others (mode " + mode +
                                            "); run: chmod 600 " + path);
  }
  char buf[256] = {};
  ssize_t n = ::read(fd.get(), buf, sizeof buf - 1);
  if (n < 0) return errno_error(ErrorKind::usage, "cannot read key file " + path, errno);
  std::string_view text(buf, static_cast<std::size_t>(n));
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.remove_suffix(1);
  Key key;
  if (text.substr(0, std::strlen(k_key_prefix)) != k_key_prefix ||
      !parse_hex(text.substr(std::strlen(k_key_prefix)), key.data(), key.size()))
    return make_error(ErrorKind::usage, "key file " + path + " is not a sesscp key (make one with: sesscp keygen -o FILE)");
  return key;
}

Context::Context(Context&&) noexcept = default;
Context& Context::operator=(Context&&) noexcept = default;
Context::~Context() = default;

namespace {

// What every context has: TLS 1.3 only, our cipher suites, kernel TLS, no
// tickets, and the handshake's read-ahead.
void set_defaults(SSL_CTX* ctx) {
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256");
  // Kernel TLS where the kernel has it; OpenSSL falls back to user space otherwise.
  SSL_CTX_set_options(ctx, SSL_OP_ENABLE_KTLS | SSL_OP_NO_TICKET);
  SSL_CTX_set_num_tickets(ctx, 0); // no resumption tickets: nothing to store, nothing to read mid-transfer
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // During the handshake, read several 16 KiB records per recv() instead of
  // two syscalls per record. Not more: libssl moves the unread rest of this
  // buffer to its front for every record it takes out (256 KiB cost 7.5
  // copies per byte; docs/PERFORMANCE.md). After the handshake Conn puts its
  // own buffered BIO in place and turns read-ahead off (core/conn.cpp).
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_default_read_buffer_len(ctx, 64 * 1024);
}

// --key-file: the shared key as an external PSK.
Status use_key_file(Context::State& s, const std::string& key_file, bool server) {
  auto key = read_key_file(key_file);
  if (!key) return key.error();
  s.psk = true;
  s.key = *key;
  s.identity = key_identity(s.key);
  if (server) SSL_CTX_set_psk_find_session_callback(s.ctx, find_session_cb);
  else SSL_CTX_set_psk_use_session_callback(s.ctx, use_session_cb);
  return {};
}

// --cert/--key, and the peer checked by --ca or --peer-fingerprint.
Status use_certificates(Context::State& s, const Options& o, bool server) {
  if (o.cert_file.empty() || o.private_key_file.empty())
    return make_error(ErrorKind::usage, "--cert and --key go together");
  if (o.ca_file.empty() == o.peer_fingerprint.empty())
    return make_error(ErrorKind::usage, "with --cert, give exactly one of --ca or --peer-fingerprint");
  if (SSL_CTX_use_certificate_chain_file(s.ctx, o.cert_file.c_str()) != 1)
    return tls_error(ErrorKind::usage, "cannot load certificate " + o.cert_file);
  if (SSL_CTX_use_PrivateKey_file(s.ctx, o.private_key_file.c_str(), SSL_FILETYPE_PEM) != 1)
    return tls_error(ErrorKind::usage, "cannot load private key " + o.private_key_file);
  if (SSL_CTX_check_private_key(s.ctx) != 1)
    return tls_error(ErrorKind::usage, "private key " + o.private_key_file + " does not match " + o.cert_file);
  int verify = SSL_VERIFY_PEER | (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0);
  if (!o.ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(s.ctx, o.ca_file.c_str(), nullptr) != 1)
      return tls_error(ErrorKind::usage, "cannot load CA file " + o.ca_file);
    s.use_ca = true;
    SSL_CTX_set_verify(s.ctx, verify, nullptr);
    return {};
  }
  std::string_view fp = o.peer_fingerprint;
  if (fp.substr(0, 7) != "sha256:")
    return make_error(ErrorKind::usage, "--peer-fingerprint must look like sha256:HEX");
  std::string hex;
  for (char ch : fp.substr(7))
    if (ch != ':') hex.push_back(ch);
  s.pinned.resize(32);
  if (!parse_hex(hex, s.pinned.data(), 32))
    return make_error(ErrorKind::usage, "--peer-fingerprint must have 64 hex digits after sha256:");
  // The chain is not judged by a CA: the pinned fingerprint is checked after the handshake.
  SSL_CTX_set_verify(s.ctx, verify, [](int, X509_STORE_CTX*) { return 1; });
  return {};
}

} // namespace

Result<Context> Context::create(const Options& o, bool server) {
  if (g_ex_index < 0) g_ex_index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, free_note);
  Context c;
  c.m_state = std::make_unique<State>();
  State& s = *c.m_state;
  s.server = server;
  s.ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (!s.ctx) return tls_error(ErrorKind::internal, "cannot create a TLS context");
  set_defaults(s.ctx);
  if (!o.key_file.empty()) {
    SESSCP_TRY(use_key_file(s, o.key_file, server));
    return c;
  }
  SESSCP_TRY(use_certificates(s, o, server));
  return c;
}

Result<SslPtr> Context::wrap(int fd, const std::string& host) const {
  SslPtr ssl(SSL_new(m_state->ctx));
  if (!ssl) return tls_error(ErrorKind::internal, "cannot create a TLS connection");
  SSL_set_ex_data(ssl.get(), g_ex_index, new Note{m_state.get(), {}});
  if (SSL_set_fd(ssl.get(), fd) != 1) return tls_error(ErrorKind::internal, "cannot attach TLS to the socket");
  if (!m_state->server && m_state->use_ca && !host.empty()) {
    unsigned char addr[16];
    bool is_ip = inet_pton(AF_INET, host.c_str(), addr) == 1 || inet_pton(AF_INET6, host.c_str(), addr) == 1;
    auto* param = SSL_get0_param(ssl.get());
    if (is_ip) X509_VERIFY_PARAM_set1_ip_asc(param, host.c_str());
    else {
      // SSL_set_tlsext_host_name is a macro with an old-style cast.
      SSL_ctrl(ssl.get(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, const_cast<char*>(host.c_str()));
      X509_VERIFY_PARAM_set1_host(param, host.c_str(), 0);
    }
  }
  return ssl;
}

Status Context::check_peer(SSL* ssl) const {
  if (m_state->pinned.empty()) return {};
  X509* cert = SSL_get0_peer_certificate(ssl);
  if (!cert) return make_error(ErrorKind::auth, "authentication failed: the peer sent no certificate");
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  X509_digest(cert, EVP_sha256(), md, &len);
  if (len != 32 || std::memcmp(md, m_state->pinned.data(), 32) != 0)
    return make_error(ErrorKind::auth, "authentication failed: peer certificate fingerprint sha256:" +
                                           to_hex({md, len}) + " is not the pinned one");
  return {};
}

std::string Context::describe() const {
  if (m_state->psk) return "TLS 1.3, shared key " + m_state->identity.substr(11);
  return m_state->pinned.empty() ? "TLS 1.3, certificates checked against the CA"
                                 : "TLS 1.3, pinned peer certificate";
}

std::string last_error() {
  std::string detail;
  while (unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    detail = buf; // keep the last, most specific one
  }
  return detail;
}

std::string handshake_failure(SSL* ssl) {
  auto* note = ssl ? note_of(ssl) : nullptr;
  std::string detail = last_error();
  if (ssl) {
    long vr = SSL_get_verify_result(ssl);
    if (vr != X509_V_OK) return std::string("certificate not trusted: ") + X509_verify_cert_error_string(vr);
  }
  if (note && !note->failure.empty()) return note->failure;
  if (note && note->state->psk &&
      (detail.find("bad record mac") != std::string::npos || detail.find("decrypt") != std::string::npos ||
       detail.find("handshake failure") != std::string::npos || detail.find("no suitable") != std::string::npos ||
       detail.find("binder") != std::string::npos || detail.find("certificate") != std::string::npos))
    return "key mismatch (" + detail + ")";
  if (detail.find("unexpected eof") != std::string::npos)
    return "the receiver closed the connection during the TLS handshake (busy, or running with --insecure?)";
  if (detail.find("wrong version number") != std::string::npos || detail.find("packet length") != std::string::npos)
    return "the peer does not speak TLS (is it running with --insecure?)";
  return detail.empty() ? "the peer closed the connection during the TLS handshake (busy, running with --insecure, "
                          "or it rejected our credentials)"
                        : detail;
}

bool ktls_send_active(SSL* ssl) {
#ifdef BIO_CTRL_GET_KTLS_SEND
  return BIO_ctrl(SSL_get_wbio(ssl), BIO_CTRL_GET_KTLS_SEND, 0, nullptr) > 0;
#else
  (void)ssl;
  return false;
#endif
}

} // namespace sesscp::tls
