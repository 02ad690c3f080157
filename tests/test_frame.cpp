#include "core/frame.h"

#include <doctest/doctest.h>

#include <array>
#include <span>
#include <vector>

using namespace sesscp;
using namespace sesscp::frame;

namespace {

constexpr std::uint32_t k_max_data = k_data_prefix + (1u << 20);

// Split an encoded frame into its checked header and payload.
std::pair<Header, std::vector<std::uint8_t>> split(const std::vector<std::uint8_t>& f) {
  REQUIRE(f.size() >= k_header_size);
  auto h = decode_header(std::span<const std::uint8_t, k_header_size>(f.data(), k_header_size), k_max_data);
  REQUIRE(h.ok());
  REQUIRE(h->length == f.size() - k_header_size);
  return {*h, std::vector<std::uint8_t>(f.begin() + k_header_size, f.end())};
}

Hash128 pattern_hash(std::uint8_t seed) {
  Hash128 h;
  for (std::size_t i = 0; i < h.size(); ++i) h[i] = static_cast<std::uint8_t>(seed + i);
  return h;
}

// Every strict prefix and every one-byte extension of a valid payload must be rejected.
template <typename Decode> void check_length_strict(const std::vector<std::uint8_t>& payload, Decode decode) {
  for (std::size_t n = 0; n < payload.size(); ++n) {
    CAPTURE(n);
    auto r = decode(std::span<const std::uint8_t>(payload.data(), n));
    CHECK_FALSE(r.ok());
    if (!r.ok()) CHECK(r.error().kind == ErrorKind::protocol);
  }
  auto longer = payload;
  longer.push_back(0);
  CHECK_FALSE(decode(std::span<const std::uint8_t>(longer)).ok());
}

} // namespace

TEST_SUITE("frame") {

TEST_CASE("header round trip and validation") {
  std::uint8_t raw[k_header_size];
  encode_header(Type::data, 123456, raw);
  auto h = decode_header(std::span<const std::uint8_t, k_header_size>(raw), k_max_data);
  REQUIRE(h.ok());
  CHECK(h->type == Type::data);
  CHECK(h->length == 123456);

  SUBCASE("unknown type") {
    raw[0] = 0x55;
    CHECK_FALSE(decode_header(std::span<const std::uint8_t, k_header_size>(raw), k_max_data).ok());
  }
  SUBCASE("nonzero flags or reserved") {
    for (int i = 1; i <= 3; ++i) {
      encode_header(Type::sync, 16, raw);
      raw[i] = 1;
      CHECK_FALSE(decode_header(std::span<const std::uint8_t, k_header_size>(raw), k_max_data).ok());
    }
  }
  SUBCASE("control frame longer than the control limit") {
    encode_header(Type::offer, k_max_control_payload + 1, raw);
    CHECK_FALSE(decode_header(std::span<const std::uint8_t, k_header_size>(raw), k_max_data).ok());
    encode_header(Type::offer, k_max_control_payload, raw);
    CHECK(decode_header(std::span<const std::uint8_t, k_header_size>(raw), k_max_data).ok());
  }
  SUBCASE("data frame longer than the negotiated chunk") {
    encode_header(Type::data, k_max_data + 1, raw);
    CHECK_FALSE(decode_header(std::span<const std::uint8_t, k_header_size>(raw), k_max_data).ok());
    encode_header(Type::data, 0xFFFFFFFFu, raw);
    CHECK_FALSE(decode_header(std::span<const std::uint8_t, k_header_size>(raw), k_max_data).ok());
  }
  SUBCASE("data before a file is open is refused by a zero data limit") {
    encode_header(Type::data, 1, raw);
    CHECK_FALSE(decode_header(std::span<const std::uint8_t, k_header_size>(raw), 0).ok());
  }
}

TEST_CASE("HELLO round trip, bad magic, other version") {
  Hello m;
  m.identity = "sesscp/test host";
  m.features = feature::k_minor_sync | feature::k_major_sync;
  auto [h, p] = split(encode(m));
  CHECK(h.type == Type::hello);
  auto d = decode_hello(p);
  REQUIRE(d.ok());
  CHECK(d->version == k_protocol_version);
  CHECK(d->features == m.features);
  CHECK(d->identity == m.identity);
  CHECK(d->max_payload == m.max_payload);
  check_length_strict(p, decode_hello);

  auto bad = p;
  bad[0] = 'X';
  CHECK_FALSE(decode_hello(bad).ok());

  // A future version's HELLO is understood far enough to refuse it precisely.
  auto future = p;
  future[8] = 0;
  future[9] = 99;
  future.resize(10);
  auto f = decode_hello(future);
  REQUIRE(f.ok());
  CHECK(f->version == 99);
}

TEST_CASE("ACCEPT, REFUSE, ABORT round trips") {
  Accept a;
  a.identity = "receiver";
  auto [ha, pa] = split(encode(a));
  CHECK(ha.type == Type::accept);
  auto da = decode_accept(pa);
  REQUIRE(da.ok());
  CHECK(da->identity == "receiver");
  check_length_strict(pa, decode_accept);

  auto [hr, pr] = split(encode(Refuse{Reason::busy, 1, "too many sessions"}));
  CHECK(hr.type == Type::refuse);
  auto dr = decode_refuse(pr);
  REQUIRE(dr.ok());
  CHECK(dr->reason == Reason::busy);
  CHECK(dr->message == "too many sessions");
  check_length_strict(pr, decode_refuse);

  auto [hb, pb] = split(encode(Abort{Reason::no_space, "disk full"}));
  CHECK(hb.type == Type::abort);
  auto db = decode_abort(pb);
  REQUIRE(db.ok());
  CHECK(db->reason == Reason::no_space);
  CHECK(db->message == "disk full");
  check_length_strict(pb, decode_abort);
}

TEST_CASE("OFFER round trip and invalid chunk sizes") {
  Offer m{"disk.img", (5ull << 30) + 7, 1700000000123456789, 1u << 20, 0640, pattern_hash(3)};
  auto [h, p] = split(encode(m));
  CHECK(h.type == Type::offer);
  auto d = decode_offer(p);
  REQUIRE(d.ok());
  CHECK(d->name == m.name);
  CHECK(d->size == m.size); // > 4 GiB survives
  CHECK(d->mtime_ns == m.mtime_ns);
  CHECK(d->chunk_size == m.chunk_size);
  CHECK(d->mode_bits == 0640u);
  CHECK(d->fingerprint == m.fingerprint);
  check_length_strict(p, decode_offer);

  // Found by fuzz_frame: a name the encoder would clip must not decode.
  {
    ByteWriter w;
    w.str16(std::string(1100, 'n'));
    w.u64(100);
    w.i64(0);
    w.u32(4096);
    w.u32(0644);
    w.bytes(Hash128{});
    CHECK_FALSE(decode_offer(w.buffer()).ok());
  }

  for (std::uint32_t cs : {0u, 4095u, 4097u, k_max_chunk_size + 4096u}) {
    CAPTURE(cs);
    m.chunk_size = cs;
    CHECK_FALSE(decode_offer(split(encode(m)).second).ok());
  }
}

TEST_CASE("RESUME round trip and invalid values") {
  Resume m{ResumeStatus::transfer, ResumeWhy::journal, 1u << 20, 4242, 17, "journal confirms 4242 chunks"};
  auto [h, p] = split(encode(m));
  CHECK(h.type == Type::resume);
  auto d = decode_resume(p);
  REQUIRE(d.ok());
  CHECK(d->status == ResumeStatus::transfer);
  CHECK(d->why == ResumeWhy::journal);
  CHECK(d->next_chunk == 4242);
  CHECK(d->next_serial == 17);
  CHECK(d->message == m.message);
  check_length_strict(p, decode_resume);
  auto bad = p;
  bad[0] = 9; // status
  CHECK_FALSE(decode_resume(bad).ok());
  // Found by fuzz_frame: a message the encoder would clip must not decode.
  ByteWriter w;
  w.u8(0);
  w.u8(1);
  w.u32(4096);
  w.u64(0);
  w.u64(1);
  w.str16(std::string(1100, 'm'));
  CHECK_FALSE(decode_resume(w.buffer()).ok());
}

TEST_CASE("DATA prefix round trip") {
  std::uint8_t raw[k_header_size + k_data_prefix];
  DataPrefix m{(6ull << 30) / 4096, pattern_hash(9)};
  encode_data_prefix(m, 4096, raw);
  auto h = decode_header(std::span<const std::uint8_t, k_header_size>(raw, k_header_size), k_max_data);
  REQUIRE(h.ok());
  CHECK(h->type == Type::data);
  CHECK(h->length == k_data_prefix + 4096);
  auto d = decode_data_prefix(std::span<const std::uint8_t>(raw + k_header_size, k_data_prefix));
  REQUIRE(d.ok());
  CHECK(d->chunk == m.chunk);
  CHECK(d->hash == m.hash);
  CHECK_FALSE(decode_data_prefix(std::span<const std::uint8_t>(raw + k_header_size, k_data_prefix - 1)).ok());
}

TEST_CASE("sync, checkpoint, resend, file end, file done round trips") {
  auto [hs, ps] = split(encode(Sync{5, 40}));
  CHECK(hs.type == Type::sync);
  CHECK(decode_sync(ps)->end_chunk == 40);
  check_length_strict(ps, decode_sync);

  auto [hc, pc] = split(encode(Checkpoint{5, 40}));
  CHECK(hc.type == Type::checkpoint);
  CHECK(decode_checkpoint(pc)->serial == 5);
  check_length_strict(pc, decode_checkpoint);

  auto [hr, pr] = split(encode(Resend{77}));
  CHECK(decode_resend(pr)->chunk == 77);
  check_length_strict(pr, decode_resend);

  auto [he, pe] = split(encode(FileEnd{3, 10, pattern_hash(1)}));
  auto de = decode_file_end(pe);
  REQUIRE(de.ok());
  CHECK(de->first_chunk == 3);
  CHECK(de->chunk_count == 10);
  CHECK(de->session_root == pattern_hash(1));
  check_length_strict(pe, decode_file_end);
  CHECK_FALSE(decode_file_end(split(encode(FileEnd{11, 10, {}})).second).ok());

  auto [hd, pd] = split(encode(FileDone{12345, pattern_hash(2)}));
  CHECK(decode_file_done(pd)->file_root == pattern_hash(2));
  check_length_strict(pd, decode_file_done);

  auto [hx, px] = split(encode_empty(Type::release));
  CHECK(hx.type == Type::release);
  CHECK(decode_empty(px).ok());
  CHECK_FALSE(decode_empty(std::vector<std::uint8_t>{0}).ok());
}

TEST_CASE("names from the wire stay inside the directory") {
  CHECK(check_name("disk.img").empty());
  CHECK(check_name("a b-c_d.tar.gz").empty());
  for (const char* bad : {"", ".", "..", "../etc/passwd", "/etc/passwd", "a/b", "x.sesscp.part",
                          "x.sesscp.journal"}) {
    CAPTURE(bad);
    CHECK_FALSE(check_name(bad).empty());
  }
  CHECK_FALSE(check_name(std::string("a\nb")).empty());
  CHECK_FALSE(check_name(std::string("a\0b", 3)).empty());
  CHECK_FALSE(check_name(std::string(256, 'a')).empty());
  // NAME.sesscp.journal must fit in NAME_MAX (255): names stop at 240 bytes.
  CHECK_FALSE(check_name(std::string(241, 'a')).empty());
  CHECK(check_name(std::string(240, 'a')).empty());
}

TEST_CASE("relative paths: '/'-separated components, each a safe name") {
  for (const char* good : {"a", "a/b", "dir/sub/file.txt", "a b/c d", "..x/y..", ".hidden/x"}) {
    CAPTURE(good);
    CHECK(check_path(good).empty());
  }
  for (const char* bad : {"", "/", "/etc/passwd", "a/", "a//b", "/a", "./a", "a/.", "a/../b", "..", "a/..",
                          "x.sesscp.part/y", "a/x.sesscp.journal", "a/x.sesscp.publish"}) {
    CAPTURE(bad);
    CHECK_FALSE(check_path(bad).empty());
  }
  CHECK_FALSE(check_path(std::string("a/\nb")).empty());
  CHECK_FALSE(check_path(std::string("a/b\0c", 5)).empty());
  CHECK_FALSE(check_path(std::string(241, 'a') + "/b").empty());
  CHECK(check_path(std::string(240, 'a') + "/" + std::string(240, 'b')).empty());
  // The whole path fits the wire's text limit.
  std::string longest;
  while (longest.size() + 11 <= k_max_text) longest += "abcdefghij/";
  longest += "z";
  CHECK(check_path(longest).empty());
  CHECK_FALSE(check_path(longest + "/" + std::string(k_max_text, 'a')).empty());
}

TEST_CASE("MKDIR, SYMLINK and NOT_FINISHED round-trip and reject bad lengths") {
  Mkdir mk{"a/b", 0750, -5};
  auto [hm, pm] = split(encode(mk));
  CHECK(hm.type == Type::mkdir);
  auto m = decode_mkdir(pm);
  REQUIRE(m.ok());
  CHECK(m->path == "a/b");
  CHECK(m->mode_bits == 0750);
  CHECK(m->mtime_ns == -5);
  check_length_strict(pm, decode_mkdir);

  Symlink sl{"a/link", "../../etc/passwd", 123};
  auto [hs, ps] = split(encode(sl));
  CHECK(hs.type == Type::symlink);
  auto l = decode_symlink(ps);
  REQUIRE(l.ok());
  CHECK(l->target == "../../etc/passwd");
  CHECK(l->mtime_ns == 123);
  check_length_strict(ps, decode_symlink);
  // An empty target is malformed; a NUL would cut it short.
  CHECK_FALSE(decode_symlink(std::get<1>(split(encode(Symlink{"x", "", 0})))).ok());
  CHECK_FALSE(decode_symlink(std::get<1>(split(encode(Symlink{"x", std::string("a\0b", 3), 0})))).ok());

  auto [hn, pn] = split(encode(NotFinished{"2 files outstanding"}));
  CHECK(hn.type == Type::not_finished);
  auto n = decode_not_finished(pn);
  REQUIRE(n.ok());
  CHECK(n->message == "2 files outstanding");
  check_length_strict(pn, decode_not_finished);
  for (auto t : {Type::mkdir, Type::symlink, Type::not_finished}) CHECK(is_known(static_cast<std::uint8_t>(t)));
}

TEST_CASE("HELLO carries the dialog mode; an unknown mode is malformed") {
  Hello h;
  h.mode = DialogMode::half_duplex;
  auto [hh, ph] = split(encode(h));
  auto d = decode_hello(ph);
  REQUIRE(d.ok());
  CHECK(d->mode == DialogMode::half_duplex);
  auto bad = ph;
  bad[8 + 2 + 8] = 3; // magic, version, features, then the mode byte
  CHECK_FALSE(decode_hello(bad).ok());
}

TEST_CASE("FETCH (full-duplex) round-trips and rejects bad payloads") {
  Fetch f{{{"reports", true}, {"a/b.txt", false}}};
  auto [h, p] = split(encode(f));
  CHECK(h.type == Type::fetch);
  CHECK(static_cast<std::uint8_t>(h.type) == 0x1E);
  CHECK(std::string(to_string(Type::fetch)) == "FETCH");
  CHECK(is_known(0x1E));
  auto d = decode_fetch(p);
  REQUIRE(d.ok());
  CHECK(d->paths == f.paths);
  check_length_strict(p, decode_fetch);
  auto bad = p;
  bad[2] = 2; // contents flag
  auto e = decode_fetch(bad);
  REQUIRE_FALSE(e.ok());
  CHECK(e.error().message.find("FETCH") != std::string::npos);
}

TEST_CASE("GIVE_TOKEN and PLEASE_TOKEN (half-duplex) round-trip and reject bad payloads") {
  GiveToken g{{{"reports", true}, {"a/b.txt", false}}};
  auto [hg, pg] = split(encode(g));
  CHECK(hg.type == Type::give_token);
  CHECK(static_cast<std::uint8_t>(hg.type) == 0x1A);
  auto d = decode_give_token(pg);
  REQUIRE(d.ok());
  CHECK(d->fetch == g.fetch);
  check_length_strict(pg, decode_give_token);
  // No request: the token goes back.
  auto [he, pe] = split(encode(GiveToken{}));
  auto e = decode_give_token(pe);
  REQUIRE(e.ok());
  CHECK(e->fetch.empty());
  CHECK(pe.size() == 2);
  // A contents flag other than 0 or 1 is malformed.
  auto bad = pg;
  bad[2] = 2;
  CHECK_FALSE(decode_give_token(bad).ok());
  // More than 256 paths is malformed.
  std::vector<std::uint8_t> many = {0x01, 0x01};
  for (int i = 0; i < 257; ++i) many.insert(many.end(), {0, 0, 1, 'x'});
  CHECK_FALSE(decode_give_token(many).ok());

  auto [hp, pp] = split(encode_empty(Type::please_token));
  CHECK(hp.type == Type::please_token);
  CHECK(static_cast<std::uint8_t>(hp.type) == 0x1B);
  CHECK(pp.empty());
  CHECK(decode_empty(pp).ok());
  CHECK(std::string(to_string(Type::give_token)) == "GIVE_TOKEN");
  CHECK(std::string(to_string(Type::please_token)) == "PLEASE_TOKEN");
  for (auto t : {Type::give_token, Type::please_token}) CHECK(is_known(static_cast<std::uint8_t>(t)));
  // Numbers not assigned stay unknown (0x1C, 0x1D and 0x1F are REPAIR,
  // VERIFIED and SOURCE_HASHES since verified resume).
  for (int t : {0x05, 0x23, 0x30}) CHECK_FALSE(is_known(static_cast<std::uint8_t>(t)));
}

TEST_CASE("REPAIR, VERIFIED and SOURCE_HASHES round-trip and reject bad payloads") {
  auto [hr, pr] = split(encode(Repair{12345}));
  CHECK(static_cast<std::uint8_t>(hr.type) == 0x1C);
  CHECK(decode_repair(pr)->chunk == 12345);
  check_length_strict(pr, decode_repair);

  auto [hv, pv] = split(encode(Verified{40, 100, 3}));
  CHECK(static_cast<std::uint8_t>(hv.type) == 0x1D);
  auto v = decode_verified(pv);
  REQUIRE(v.ok());
  CHECK((v->checked == 40 && v->total == 100 && v->damaged == 3));
  check_length_strict(pv, decode_verified);
  CHECK_FALSE(decode_verified(split(encode(Verified{101, 100, 0})).second).ok()); // checked > total
  CHECK_FALSE(decode_verified(split(encode(Verified{10, 100, 11})).second).ok()); // damaged > checked

  SourceHashes sh{7, {pattern_hash(1), pattern_hash(2)}};
  auto [hs, ps] = split(encode(sh));
  CHECK(static_cast<std::uint8_t>(hs.type) == 0x1F);
  auto back = decode_source_hashes(ps);
  REQUIRE(back.ok());
  CHECK(back->first_chunk == 7);
  CHECK(back->hashes == sh.hashes);
  check_length_strict(ps, decode_source_hashes);
  CHECK_FALSE(decode_source_hashes(split(encode(SourceHashes{0, {}})).second).ok()); // count 0
  for (auto t : {Type::repair, Type::verified, Type::source_hashes}) CHECK(is_known(static_cast<std::uint8_t>(t)));
}

TEST_CASE("hash list root is order sensitive and incremental") {
  std::vector<Hash128> hs = {pattern_hash(1), pattern_hash(2), pattern_hash(3)};
  RootBuilder b;
  for (auto& h : hs) b.add(h);
  CHECK(b.digest() == hash_list_root(hs));
  std::swap(hs[0], hs[1]);
  CHECK(b.digest() != hash_list_root(hs));
}

} // TEST_SUITE

TEST_CASE("--streams: HELLO feature bits, ACCEPT cookie, JOIN") {
  using namespace feature;
  // One stream is the version-1 HELLO: no bit, no count.
  CHECK(with_streams(k_all, 1) == k_all);
  CHECK(streams_of(k_all) == 1);
  auto f4 = with_streams(k_all, 4);
  CHECK((f4 & k_streams) != 0);
  CHECK(streams_of(f4) == 4);
  CHECK(streams_of(with_streams(k_all, 64)) == 64);
  CHECK((f4 & k_all) == k_all);

  Hello h;
  h.features = f4;
  auto [hh, ph] = split(encode(h));
  auto dh = decode_hello(ph);
  REQUIRE(dh.ok());
  CHECK(streams_of(dh->features) == 4);

  // ACCEPT carries the cookie only with the streams bit; without it the
  // payload is the version-1 one, byte for byte.
  Accept plain;
  plain.identity = "r";
  auto [hp, pp] = split(encode(plain));
  Accept with = plain;
  with.features |= k_streams;
  for (std::size_t i = 0; i < with.cookie.size(); ++i) with.cookie[i] = static_cast<std::uint8_t>(i + 1);
  auto [hw, pw] = split(encode(with));
  CHECK(pw.size() == pp.size() + 16);
  auto dw = decode_accept(pw);
  REQUIRE(dw.ok());
  CHECK(dw->cookie == with.cookie);
  auto dp = decode_accept(pp);
  REQUIRE(dp.ok());
  CHECK(dp->cookie == Cookie{});
  // The bit without the cookie (or the cookie without the bit) is a bad length.
  auto cut = pw;
  cut.resize(cut.size() - 16);
  CHECK_FALSE(decode_accept(cut).ok());
  auto extra = pp;
  extra.resize(extra.size() + 16);
  CHECK_FALSE(decode_accept(extra).ok());

  Join j;
  j.cookie = with.cookie;
  j.index = 3;
  auto [hj, pj] = split(encode(j));
  CHECK(static_cast<std::uint8_t>(hj.type) == 0x04);
  CHECK(is_known(0x04));
  CHECK(std::string(to_string(Type::join)) == "JOIN");
  CHECK(pj.size() == 18);
  auto dj = decode_join(pj);
  REQUIRE(dj.ok());
  CHECK(dj->cookie == j.cookie);
  CHECK(dj->index == 3);
  pj.push_back(0);
  CHECK_FALSE(decode_join(pj).ok());
  CHECK(error_kind_for(Reason::unknown_session) == ErrorKind::interrupted);
  CHECK(std::string(to_string(Reason::unknown_session)) == "unknown session");
}
