// testpeer: a raw protocol peer (the sender's side) for hostile-input tests.
//
//   testpeer HOST:PORT [options]
//
// Connects, optionally runs the TLS 1.3 handshake as a client with the
// project's own tls::Context (so a TLS receiver accepts it), sends a HELLO,
// reads the reply, and if it is ACCEPT sends ONE of (first that applies):
//   --raw-hex HEX                  these bytes, verbatim (any framing, or none)
//   --frames-after-hello SPEC,...  whole frames built from TYPE:PAYLOAD_HEX
//                                  (header computed; TYPE is a hex byte such
//                                  as 12 or a name such as DATA / offer;
//                                  PAYLOAD_HEX may be empty: "20:")
//   otherwise an OFFER             name from --name-hex / --name, --size,
//                                  chunk size --chunk-size (default 1 MiB),
//                                  mtime now, mode 0644, zero fingerprint.
//                                  The name is NOT checked or clipped: any
//                                  bytes (NUL, '\n', '/', "..", > 255 bytes,
//                                  overlong UTF-8) go on the wire as given,
//                                  with their true u16 length.
// and then reads one reply frame (with --until-abort: reads frames until an
// ABORT, which is the reply printed, or the end of the connection).
//
// Receiver side (--serve SCENARIO): listen on HOST:PORT (port 0 picks one;
// "testpeer: listening on 127.0.0.1:PORT" goes to stderr), plaintext, accept
// one connection, answer HELLO with ACCEPT (confirming the HELLO's dialog
// mode) and then play SCENARIO against a real `sesscp send --insecure`:
//   data-from-receiver  answer the first OFFER with a DATA frame, which a
//                       simplex session forbids, and a half-duplex one while
//                       the sender holds the data token; print the sender's
//                       answer (reply: ABORT reason=1 ...)
//   please-token        (half-duplex) answer every OFFER with RESUME complete,
//                       the first one followed by PLEASE_TOKEN; on the
//                       GIVE_TOKEN print "token: GIVE_TOKEN after OFFERS=N
//                       fetch=K" and give the token straight back (nothing
//                       to send); on RELEASE answer RELEASE_ACK and print
//                       "reply: RELEASE_ACK releases=1 offers=N"
//   refuse-release      answer every OFFER with RESUME complete, the first
//                       RELEASE with NOT_FINISHED and the next with
//                       RELEASE_ACK; print "reply: RELEASE_ACK releases=2"
//
// Options:
//   --serve SCENARIO     be the receiver (above)
//   --hello-mode M       dialog mode in the HELLO (default 0, simplex)
//   --tls-key-file F     TLS 1.3 with this shared key (sesscp keygen)
//   --tls                TLS 1.3 with the key in $SESSCP_KEY_FILE
//                        (default without either: plaintext, for a receiver
//                        started with --insecure)
//   --hello-version V    protocol version in the HELLO (default 1)
//   --name STR           OFFER name as text (default "testpeer.bin")
//   --name-hex HEX       OFFER name as hex bytes, e.g. 2e2e (".."), 610a62
//   --size N             OFFER size in bytes (default 0)
//   --chunk-size N       OFFER chunk size in bytes (default 1048576)
//   --timeout S          per-step deadline in seconds (default 10)
//   --until-abort        after the frames, read until an ABORT (or EOF)
//   --stream-test T      open a session whose HELLO announces 2 streams
//                        (--streams 2), then a second connection, and on it:
//                        T = frame: JOIN as stream 1, then the
//                        --frames-after-hello frames (e.g. a SYNC, which an
//                        extra stream may not carry); T = bad-index: JOIN as
//                        stream 2 (only stream 1 may join); T = twice: JOIN as
//                        stream 1 on two connections, the second is read.
//                        The reply printed is the last frame read on the
//                        extra connection (ACCEPT for an accepted JOIN).
//   --no-hello           send no HELLO: the --raw-hex / --frames-after-hello
//                        bytes are the connection's first frames (e.g. a JOIN,
//                        type 04, as an extra stream of --streams opens with),
//                        then read one reply
//
// Output: exactly one line on stdout for the last reply read,
//   reply: TYPE reason=N message=TEXT
// TYPE as frame::to_string (ACCEPT, REFUSE, RESUME, ABORT, ...; UNKNOWN(0xNN)
// for a type the protocol does not define); reason is the REFUSE/ABORT
// reason code (0 for other frames); message is the REFUSE/ABORT/RESUME text
// with bytes outside printable ASCII written as \xNN. Details (the RESUME
// fields, the HELLO reply when an OFFER follows) go to stderr.
// If the HELLO is not answered with ACCEPT, that reply is the one printed.
//
// Exit status: 0 a reply frame was read; 2 the connection closed (EOF or
// reset) without one; 1 anything else (usage, connect or TLS failure,
// timeout, a reply too long to be a control frame).
//
// Examples:
//   testpeer 127.0.0.1:PORT --tls --name-hex 2e2e            # ".." -> ABORT reason=4
//   testpeer 127.0.0.1:PORT --raw-hex 12000000ffffffff       # DATA header, 4 GiB
//   testpeer 127.0.0.1:PORT --hello-version 99               # REFUSE reason=2

#include "base/bytes.h"
#include "core/conn.h"
#include "core/frame.h"
#include "core/net.h"
#include "core/tls.h"

#include <memory>

#include <poll.h>
#include <strings.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

using namespace sesscp;

namespace {

constexpr int k_exit_reply = 0;
constexpr int k_exit_error = 1;
constexpr int k_exit_closed = 2;

struct Args {
  std::string endpoint;
  bool tls = false;
  std::string key_file;
  std::uint16_t hello_version = frame::k_protocol_version;
  std::string name = "testpeer.bin";
  std::uint64_t size = 0;
  std::uint32_t chunk_size = 1u << 20;
  std::optional<std::vector<std::uint8_t>> raw;
  std::vector<std::vector<std::uint8_t>> frames;
  int timeout_ms = 10000;
  std::string serve;
  std::uint8_t hello_mode = 0;
  bool until_abort = false;
  bool no_hello = false;
  std::string stream_test;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr, "testpeer: %s\n(see the comment at the top of tests/tools/testpeer.cpp)\n", why.c_str());
  std::exit(k_exit_error);
}

bool parse_hex(std::string_view hex, std::vector<std::uint8_t>& out) {
  if (hex.size() % 2) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    int hi = nibble(hex[i]), lo = nibble(hex[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out.push_back(static_cast<std::uint8_t>(hi * 16 + lo));
  }
  return true;
}

std::uint64_t parse_number(std::string_view what, const char* text) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text, &end, 0);
  if (errno || !*text || *end) usage(std::string(what) + ": not a number: " + text);
  return v;
}

std::optional<std::uint8_t> parse_type(std::string_view t) {
  for (int v = 0; v < 256; ++v) {
    auto u = static_cast<std::uint8_t>(v);
    if (!frame::is_known(u)) continue;
    std::string n = frame::to_string(static_cast<frame::Type>(u));
    if (n.size() == t.size() && strncasecmp(n.c_str(), t.data(), t.size()) == 0) return u;
  }
  std::vector<std::uint8_t> b;
  if (t.size() == 2 && parse_hex(t, b)) return b[0];
  return std::nullopt;
}

// SPEC = TYPE:PAYLOAD_HEX -> header + payload.
std::vector<std::uint8_t> build_frame(std::string_view spec) {
  auto colon = spec.find(':');
  if (colon == std::string_view::npos) usage("frame spec needs TYPE:PAYLOAD_HEX: " + std::string(spec));
  auto type = parse_type(spec.substr(0, colon));
  if (!type) usage("unknown frame type in " + std::string(spec));
  std::vector<std::uint8_t> payload;
  if (!parse_hex(spec.substr(colon + 1), payload)) usage("bad payload hex in " + std::string(spec));
  ByteWriter w;
  // Written by hand rather than with encode_header: the type may be one the
  // protocol does not know, which is the point of some tests.
  w.u8(*type);
  w.u8(0);
  w.u16(0);
  w.u32(static_cast<std::uint32_t>(payload.size()));
  w.bytes(payload);
  return std::move(w.buffer());
}

Args parse_args(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string_view opt = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) usage(std::string(opt) + " needs a value");
      return argv[++i];
    };
    if (opt == "--tls") {
      const char* env = std::getenv("SESSCP_KEY_FILE");
      if (!env || !*env) usage("--tls needs SESSCP_KEY_FILE in the environment");
      a.tls = true;
      a.key_file = env;
    } else if (opt == "--tls-key-file") {
      a.tls = true;
      a.key_file = value();
    } else if (opt == "--hello-version") {
      auto v = parse_number(opt, value());
      if (v > 0xFFFF) usage("--hello-version above 65535");
      a.hello_version = static_cast<std::uint16_t>(v);
    } else if (opt == "--name") {
      a.name = value();
    } else if (opt == "--name-hex") {
      std::vector<std::uint8_t> b;
      if (!parse_hex(value(), b)) usage("--name-hex: bad hex");
      a.name.assign(b.begin(), b.end());
    } else if (opt == "--size") {
      a.size = parse_number(opt, value());
    } else if (opt == "--chunk-size") {
      auto v = parse_number(opt, value());
      if (v > 0xFFFFFFFFu) usage("--chunk-size above 2^32-1");
      a.chunk_size = static_cast<std::uint32_t>(v);
    } else if (opt == "--raw-hex") {
      std::vector<std::uint8_t> b;
      if (!parse_hex(value(), b)) usage("--raw-hex: bad hex");
      a.raw = std::move(b);
    } else if (opt == "--frames-after-hello") {
      std::string_view list = value();
      while (!list.empty()) {
        auto comma = list.find(',');
        a.frames.push_back(build_frame(list.substr(0, comma)));
        list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
      }
    } else if (opt == "--serve") {
      a.serve = value();
      if (a.serve != "data-from-receiver" && a.serve != "refuse-release" && a.serve != "please-token")
        usage("unknown scenario " + a.serve);
    } else if (opt == "--until-abort") {
      a.until_abort = true;
    } else if (opt == "--no-hello") {
      a.no_hello = true;
    } else if (opt == "--stream-test") {
      a.stream_test = value();
      if (a.stream_test != "frame" && a.stream_test != "bad-index" && a.stream_test != "twice")
        usage("unknown --stream-test " + a.stream_test);
    } else if (opt == "--hello-mode") {
      auto v = parse_number(opt, value());
      if (v > 255) usage("--hello-mode above 255");
      a.hello_mode = static_cast<std::uint8_t>(v);
    } else if (opt == "--timeout") {
      a.timeout_ms = static_cast<int>(parse_number(opt, value()) * 1000);
    } else if (!opt.empty() && opt[0] == '-') {
      usage("unknown option " + std::string(opt));
    } else if (a.endpoint.empty()) {
      a.endpoint = opt;
    } else {
      usage("more than one HOST:PORT");
    }
  }
  if (a.endpoint.empty()) usage("HOST:PORT is required");
  return a;
}

std::string printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

struct Reply {
  std::uint8_t type = 0;
  std::uint16_t reason = 0;
  std::string message;
};

std::string type_name(std::uint8_t t) {
  if (frame::is_known(t)) return frame::to_string(static_cast<frame::Type>(t));
  char buf[16];
  std::snprintf(buf, sizeof buf, "UNKNOWN(0x%02x)", t);
  return buf;
}

int fail(const Error& e) {
  std::fprintf(stderr, "testpeer: %s (%s)\n", e.message.c_str(), to_string(e.kind));
  return e.kind == ErrorKind::disconnected ? k_exit_closed : k_exit_error;
}

// Read one frame without judging it (frame::decode_header would reject an
// unknown type, and seeing exactly what the receiver sent is the point).
Result<Reply> read_reply(Conn& conn) {
  std::uint8_t raw[frame::k_header_size];
  SESSCP_TRY(conn.read_exact(raw));
  ByteReader h({raw, sizeof raw});
  Reply r;
  r.type = h.u8();
  h.u8();
  h.u16();
  std::uint32_t len = h.u32();
  if (len > frame::k_max_control_payload)
    return make_error(ErrorKind::protocol, type_name(r.type) + " reply announces " + std::to_string(len) +
                                               " payload bytes, more than a control frame may hold");
  std::vector<std::uint8_t> payload(len);
  SESSCP_TRY(conn.read_exact(payload));
  switch (static_cast<frame::Type>(r.type)) {
  case frame::Type::abort:
    if (auto a = frame::decode_abort(payload)) {
      r.reason = static_cast<std::uint16_t>(a->reason);
      r.message = a->message;
    } else {
      r.message = "(undecodable ABORT: " + a.error().message + ")";
    }
    break;
  case frame::Type::refuse:
    if (auto f = frame::decode_refuse(payload)) {
      r.reason = static_cast<std::uint16_t>(f->reason);
      r.message = f->message;
      std::fprintf(stderr, "testpeer: REFUSE from protocol version %u\n", unsigned{f->version});
    } else {
      r.message = "(undecodable REFUSE: " + f.error().message + ")";
    }
    break;
  case frame::Type::resume:
    if (auto m = frame::decode_resume(payload)) {
      r.message = m->message;
      std::fprintf(stderr, "testpeer: RESUME status=%u why=%u chunk_size=%u next_chunk=%llu next_serial=%llu\n",
                   unsigned(m->status), unsigned(m->why), m->chunk_size,
                   static_cast<unsigned long long>(m->next_chunk), static_cast<unsigned long long>(m->next_serial));
    } else {
      r.message = "(undecodable RESUME: " + m.error().message + ")";
    }
    break;
  case frame::Type::accept:
    if (auto m = frame::decode_accept(payload)) r.message = m->identity;
    break;
  default: break;
  }
  return r;
}

std::vector<std::uint8_t> offer_frame(const Args& a) {
  // Built field by field: frame::encode(Offer) clips names to 255 bytes and
  // hostile names must reach the receiver exactly as given.
  ByteWriter w;
  auto n = std::min<std::size_t>(a.name.size(), 0xFFFF);
  w.u16(static_cast<std::uint16_t>(n));
  w.bytes({reinterpret_cast<const std::uint8_t*>(a.name.data()), n});
  w.u64(a.size);
  auto now = std::chrono::system_clock::now().time_since_epoch();
  w.i64(std::chrono::duration_cast<std::chrono::nanoseconds>(now).count());
  w.u32(a.chunk_size);
  w.u32(0644);
  Hash128 zero{};
  w.bytes(zero);
  ByteWriter f;
  f.u8(static_cast<std::uint8_t>(frame::Type::offer));
  f.u8(0);
  f.u16(0);
  f.u32(static_cast<std::uint32_t>(w.size()));
  f.bytes(w.buffer());
  return std::move(f.buffer());
}

// Defined below (the receiver side uses it too).
Result<std::pair<frame::Type, std::vector<std::uint8_t>>> read_frame(Conn& conn);

int run(const Args& a) {
  auto ep = net::parse_endpoint(a.endpoint, false);
  if (!ep) return fail(ep.error());
  std::optional<tls::Context> ctx;
  if (a.tls) {
    tls::Options o;
    o.key_file = a.key_file;
    auto c = tls::Context::create(o, false);
    if (!c) return fail(c.error());
    ctx.emplace(std::move(*c));
  }
  auto open = [&]() -> Result<std::unique_ptr<Conn>> {
    auto fd = net::connect_tcp(*ep, a.timeout_ms);
    if (!fd) return fd.error();
    auto c = std::make_unique<Conn>(std::move(*fd), nullptr, a.timeout_ms);
    if (ctx) {
      auto ssl = ctx->wrap(c->fd(), ep->host);
      if (!ssl) return ssl.error();
      SESSCP_TRY(c->start_tls(std::move(*ssl), false));
      SESSCP_TRY(ctx->check_peer(c->ssl()));
    }
    return c;
  };
  auto first = open();
  if (!first) return fail(first.error());
  Conn& conn = **first;
  if (!a.stream_test.empty()) {
    frame::Hello hello;
    hello.identity = "testpeer";
    hello.features = frame::feature::with_streams(hello.features, 2);
    if (auto st = conn.send(frame::encode(hello)); !st) return fail(st.error());
    auto h = read_frame(conn);
    if (!h) return fail(h.error());
    if (h->first != frame::Type::accept) return fail(make_error(ErrorKind::protocol, "HELLO not accepted"));
    auto accept = frame::decode_accept(h->second);
    if (!accept) return fail(accept.error());
    if (!(accept->features & frame::feature::k_streams))
      return fail(make_error(ErrorKind::protocol, "the receiver did not accept streams"));
    std::fprintf(stderr, "testpeer: HELLO (2 streams) answered with ACCEPT and a cookie\n");
    std::vector<std::unique_ptr<Conn>> extra;
    int joins = a.stream_test == "twice" ? 2 : 1;
    for (int i = 0; i < joins; ++i) {
      auto c = open();
      if (!c) return fail(c.error());
      frame::Join join{accept->cookie, static_cast<std::uint16_t>(a.stream_test == "bad-index" ? 2 : 1)};
      if (auto st = (*c)->send(frame::encode(join)); !st) return fail(st.error());
      extra.push_back(std::move(*c));
    }
    Conn& s = *extra.back();
    if (joins == 2) {
      auto r0 = read_reply(*extra.front());
      if (!r0) return fail(r0.error());
      std::fprintf(stderr, "testpeer: first JOIN answered with %s\n", type_name(r0->type).c_str());
    }
    auto reply = read_reply(s);
    if (!reply) return fail(reply.error());
    if (a.stream_test == "frame" && reply->type == static_cast<std::uint8_t>(frame::Type::accept)) {
      std::fprintf(stderr, "testpeer: JOIN answered with ACCEPT\n");
      std::vector<std::uint8_t> out;
      for (const auto& f : a.frames) out.insert(out.end(), f.begin(), f.end());
      if (auto st = s.send(out); !st) std::fprintf(stderr, "testpeer: send: %s\n", st.error().message.c_str());
      reply = read_reply(s);
      if (!reply) return fail(reply.error());
    }
    std::printf("reply: %s reason=%u message=%s\n", type_name(reply->type).c_str(), unsigned{reply->reason},
                printable(reply->message).c_str());
    return k_exit_reply;
  }

  if (a.no_hello) {
    std::vector<std::uint8_t> out = a.raw ? *a.raw : std::vector<std::uint8_t>{};
    for (const auto& f : a.frames) out.insert(out.end(), f.begin(), f.end());
    if (auto st = conn.send(out); !st) std::fprintf(stderr, "testpeer: send: %s\n", st.error().message.c_str());
    auto reply = read_reply(conn);
    if (!reply) return fail(reply.error());
    std::printf("reply: %s reason=%u message=%s\n", type_name(reply->type).c_str(), unsigned{reply->reason},
                printable(reply->message).c_str());
    return k_exit_reply;
  }
  frame::Hello hello;
  hello.version = a.hello_version;
  hello.mode = static_cast<frame::DialogMode>(a.hello_mode);
  hello.identity = "testpeer";
  if (auto st = conn.send(frame::encode(hello)); !st) return fail(st.error());
  auto reply = read_reply(conn);
  if (!reply) return fail(reply.error());
  if (reply->type == static_cast<std::uint8_t>(frame::Type::accept)) {
    std::fprintf(stderr, "testpeer: HELLO answered with ACCEPT (%s)\n", printable(reply->message).c_str());
    std::vector<std::uint8_t> out;
    if (a.raw) {
      out = *a.raw;
    } else if (!a.frames.empty()) {
      for (const auto& f : a.frames) out.insert(out.end(), f.begin(), f.end());
    } else {
      out = offer_frame(a);
    }
    if (auto st = conn.send(out); !st) {
      // The receiver may already have answered and closed (e.g. an ABORT
      // for a bad header); its reply, if any, is still readable.
      std::fprintf(stderr, "testpeer: send: %s\n", st.error().message.c_str());
    }
    reply = read_reply(conn);
    if (!reply) return fail(reply.error());
    while (a.until_abort && reply->type != static_cast<std::uint8_t>(frame::Type::abort)) {
      std::fprintf(stderr, "testpeer: read %s, reading on\n", type_name(reply->type).c_str());
      reply = read_reply(conn);
      if (!reply) return fail(reply.error());
    }
  }
  std::printf("reply: %s reason=%u message=%s\n", type_name(reply->type).c_str(), unsigned{reply->reason},
              printable(reply->message).c_str());
  return k_exit_reply;
}

// Read one whole frame (header and payload) as the receiver would.
Result<std::pair<frame::Type, std::vector<std::uint8_t>>> read_frame(Conn& conn) {
  auto header = conn.read_header(frame::k_data_prefix + frame::k_max_chunk_size);
  if (!header) return header.error();
  std::vector<std::uint8_t> payload(header->length);
  SESSCP_TRY(conn.read_exact(payload));
  return std::make_pair(header->type, std::move(payload));
}

int serve(const Args& a) {
  auto ep = net::parse_endpoint(a.endpoint, true);
  if (!ep) return fail(ep.error());
  auto listener = net::listen_tcp(*ep);
  if (!listener) return fail(listener.error());
  std::fprintf(stderr, "testpeer: listening on %s\n", net::local_name(listener->get()).c_str());
  pollfd p{listener->get(), POLLIN, 0};
  if (poll(&p, 1, a.timeout_ms) <= 0) return fail(make_error(ErrorKind::timeout, "no connection"));
  Fd sock(accept4(listener->get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!sock) return fail(make_error(ErrorKind::io, "accept failed"));
  Conn conn(std::move(sock), nullptr, a.timeout_ms);
  auto hello = read_frame(conn);
  if (!hello) return fail(hello.error());
  if (hello->first != frame::Type::hello) return fail(make_error(ErrorKind::protocol, "expected HELLO"));
  auto hello_msg = frame::decode_hello(hello->second);
  if (!hello_msg) return fail(hello_msg.error());
  frame::Accept accept;
  accept.identity = "testpeer";
  accept.mode = hello_msg->mode;
  if (auto st = conn.send(frame::encode(accept)); !st) return fail(st.error());
  int releases = 0, offers = 0;
  for (;;) {
    auto f = read_frame(conn);
    if (!f) return fail(f.error());
    auto type = f->first;
    if (type == frame::Type::abort) {
      auto abort = frame::decode_abort(f->second);
      if (!abort) return fail(abort.error());
      std::printf("reply: ABORT reason=%u message=%s\n", unsigned(abort->reason), printable(abort->message).c_str());
      return k_exit_reply;
    }
    if (type == frame::Type::offer && a.serve == "data-from-receiver") {
      // DATA the wrong way: a simplex session carries data only from the initiator.
      std::vector<std::uint8_t> chunk = {1, 2, 3, 4};
      if (auto st = conn.send_data({0, xxh3_128(chunk)}, chunk); !st) return fail(st.error());
    } else if (type == frame::Type::offer) {
      frame::Resume done{frame::ResumeStatus::complete, frame::ResumeWhy::already_complete, 0, 0, 0, ""};
      if (auto st = conn.send(frame::encode(done)); !st) return fail(st.error());
      if (++offers == 1 && a.serve == "please-token")
        if (auto st = conn.send(frame::encode_empty(frame::Type::please_token)); !st) return fail(st.error());
    } else if (type == frame::Type::give_token && a.serve == "please-token") {
      auto give = frame::decode_give_token(f->second);
      if (!give) return fail(give.error());
      std::printf("token: GIVE_TOKEN after OFFERS=%d fetch=%zu\n", offers, give->fetch.size());
      std::fflush(stdout);
      if (auto st = conn.send(frame::encode(frame::GiveToken{})); !st) return fail(st.error());
    } else if (type == frame::Type::release && a.serve == "please-token") {
      if (auto st = conn.send(frame::encode_empty(frame::Type::release_ack)); !st) return fail(st.error());
      std::printf("reply: RELEASE_ACK releases=%d offers=%d\n", releases + 1, offers);
      return k_exit_reply;
    } else if (type == frame::Type::release && ++releases == 1) {
      if (auto st = conn.send(frame::encode(frame::NotFinished{"testpeer is not finished"})); !st) return fail(st.error());
    } else if (type == frame::Type::release) {
      if (auto st = conn.send(frame::encode_empty(frame::Type::release_ack)); !st) return fail(st.error());
      std::printf("reply: RELEASE_ACK releases=%d\n", releases);
      return k_exit_reply;
    }
  }
}

} // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);
  auto args = parse_args(argc, argv);
  if (!args.serve.empty()) return serve(args);
  return run(args);
}
