// Conn::send_later: queued frames keep their order, leave with the next
// frame, and are flushed before this side waits for the peer (so a peer that
// waits for them is never stuck).
#include "core/conn.h"
#include "core/frame.h"
#include "base/hash.h"

#include <doctest/doctest.h>

#include <poll.h>
#include <sys/socket.h>

#include <optional>
#include <thread>
#include <vector>

using namespace sesscp;

namespace {

constexpr std::uint32_t k_max_data = frame::k_data_prefix + (1u << 20);

struct Pair {
  Pair() {
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    a.emplace(Fd(sv[0]), nullptr, 5000);
    b.emplace(Fd(sv[1]), nullptr, 5000);
  }
  std::optional<Conn> a, b;
};

bool readable(Conn& c) {
  pollfd p{c.fd(), POLLIN, 0};
  return poll(&p, 1, 0) == 1;
}

std::uint64_t read_checkpoint(Conn& c) {
  auto h = c.read_header(k_max_data);
  REQUIRE(h.ok());
  REQUIRE(h->type == frame::Type::checkpoint);
  auto p = c.read_control_payload(*h);
  REQUIRE(p.ok());
  auto cp = frame::decode_checkpoint(*p);
  REQUIRE(cp.ok());
  return cp->serial;
}

} // namespace

TEST_CASE("send_later: queued frames leave with the next frame, in order") {
  Pair p;
  REQUIRE(p.a->send_later(frame::encode(frame::Checkpoint{1, 1})).ok());
  REQUIRE(p.a->send_later(frame::encode(frame::Checkpoint{2, 2})).ok());
  CHECK_FALSE(readable(*p.b)); // held back
  std::vector<std::uint8_t> chunk(3000, 0x5a);
  REQUIRE(p.a->send_data_later({0, xxh3_128(chunk)}, chunk).ok());
  CHECK_FALSE(readable(*p.b));
  REQUIRE(p.a->send(frame::encode(frame::Checkpoint{3, 3})).ok());
  CHECK(read_checkpoint(*p.b) == 1);
  CHECK(read_checkpoint(*p.b) == 2);
  auto h = p.b->read_header(k_max_data);
  REQUIRE(h.ok());
  REQUIRE(h->type == frame::Type::data);
  std::uint8_t raw[frame::k_data_prefix];
  REQUIRE(p.b->read_exact(raw).ok());
  auto prefix = frame::decode_data_prefix(raw);
  REQUIRE(prefix.ok());
  std::vector<std::uint8_t> got(h->length - frame::k_data_prefix);
  REQUIRE(p.b->read_exact(got).ok());
  CHECK(got == chunk);
  CHECK(prefix->hash == xxh3_128(chunk));
  CHECK(read_checkpoint(*p.b) == 3);
}

TEST_CASE("send_later: flushed before waiting for the peer, not by a mere look") {
  Pair p;
  REQUIRE(p.a->send_later(frame::encode(frame::Checkpoint{7, 7})).ok());
  auto look = p.a->wait_readable(-1, 0); // a look, not a wait: nothing leaves
  CHECK((!look.ok() || !*look));
  CHECK_FALSE(readable(*p.b));
  auto waited = p.a->wait_readable(-1, 20); // a wait: the queue leaves first
  CHECK_FALSE(waited.ok());                  // nothing came back within 20 ms
  REQUIRE(readable(*p.b));
  CHECK(read_checkpoint(*p.b) == 7);
}

TEST_CASE("send_later: a read that must wait sends the queue first, so a peer waiting for it answers") {
  Pair p;
  // The peer answers only once it has our queued frame: without the flush
  // before waiting, both sides would wait until the timeout.
  std::thread peer([&] {
    auto serial = read_checkpoint(*p.b);
    (void)p.b->send(frame::encode(frame::Checkpoint{serial + 100, 0}));
  });
  REQUIRE(p.a->send_later(frame::encode(frame::Checkpoint{5, 5})).ok());
  auto answer = read_checkpoint(*p.a);
  peer.join();
  CHECK(answer == 105);
}

TEST_CASE("send_later: a full queue leaves by itself") {
  Pair p;
  std::vector<std::uint8_t> chunk(60 * 1024, 1);
  REQUIRE(p.a->send_data_later({0, xxh3_128(chunk)}, chunk).ok());
  CHECK_FALSE(readable(*p.b));
  REQUIRE(p.a->send_data_later({1, xxh3_128(chunk)}, chunk).ok());
  CHECK_FALSE(readable(*p.b)); // 120 KiB: still below the limit
  REQUIRE(p.a->send_data_later({2, xxh3_128(chunk)}, chunk).ok());
  CHECK(readable(*p.b)); // over it: sent
}

namespace {

std::vector<std::uint8_t> pattern(std::size_t n) {
  std::vector<std::uint8_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::uint8_t>((i * 2654435761u) >> 13);
  return v;
}

// Read one DATA frame; return its chunk (and check the prefix names `index`).
std::vector<std::uint8_t> read_data(Conn& c, std::uint64_t index) {
  auto h = c.read_header(k_max_data);
  REQUIRE(h.ok());
  REQUIRE(h->type == frame::Type::data);
  std::uint8_t raw[frame::k_data_prefix];
  REQUIRE(c.read_exact(raw).ok());
  auto prefix = frame::decode_data_prefix(raw);
  REQUIRE(prefix.ok());
  CHECK(prefix->chunk == index);
  std::vector<std::uint8_t> got(h->length - frame::k_data_prefix);
  REQUIRE(c.read_exact(got).ok());
  CHECK(prefix->hash == xxh3_128(got));
  return got;
}

} // namespace

TEST_CASE("read_exact: consecutive large DATA frames arrive whole, in order with the control frames") {
  Pair p;
  const auto bytes = pattern(3 * 512 * 1024);
  const std::size_t k = 512 * 1024;
  std::thread writer([&] {
    CHECK(p.a->send_later(frame::encode(frame::Checkpoint{1, 1})).ok());
    for (std::uint64_t i = 0; i < 3; ++i) {
      std::span<const std::uint8_t> chunk(bytes.data() + i * k, k);
      CHECK(p.a->send_data({i, xxh3_128(chunk)}, chunk).ok());
      if (i == 1) CHECK(p.a->send(frame::encode(frame::Checkpoint{2, 2})).ok());
    }
    CHECK(p.a->send(frame::encode(frame::Checkpoint{3, 3})).ok());
  });
  CHECK(read_checkpoint(*p.b) == 1);
  // After a large frame the reader's header fill is small; what it took of the
  // next frame and what it reads straight into the chunk must join up.
  for (std::uint64_t i = 0; i < 3; ++i) {
    CHECK(read_data(*p.b, i) == std::vector<std::uint8_t>(bytes.begin() + i * k, bytes.begin() + (i + 1) * k));
    if (i == 1) CHECK(read_checkpoint(*p.b) == 2);
  }
  CHECK(read_checkpoint(*p.b) == 3);
  writer.join();
}
