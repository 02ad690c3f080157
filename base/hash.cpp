#include "base/hash.h"

#include <xxhash.h>
#if defined(__x86_64__) && __has_include(<xxh_x86dispatch.h>)
// libxxhash's own CPU dispatch (SSE2, AVX2 or AVX-512, chosen at the first
// call): the same digests as the plain entry points, which Debian builds for
// SSE2 only (1.1 instructions per byte; docs/PERFORMANCE.md). The macros map
// XXH3_128bits, XXH3_64bits and their _update to the _dispatch functions.
#include <xxh_x86dispatch.h>
#endif

namespace sesscp {

Hash128 xxh3_128(std::span<const std::uint8_t> data) {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits(data.data(), data.size()));
  Hash128 out;
  static_assert(sizeof(c.digest) == 16);
  for (std::size_t i = 0; i < 16; ++i) out[i] = c.digest[i];
  return out;
}

std::uint64_t xxh3_64(std::span<const std::uint8_t> data) {
  return XXH3_64bits(data.data(), data.size());
}

Hash128 hash_list_root(std::span<const Hash128> hashes) {
  return xxh3_128({reinterpret_cast<const std::uint8_t*>(hashes.data()),
                   hashes.size() * sizeof(Hash128)});
}

RootBuilder::RootBuilder() : m_state(XXH3_createState()) {
  XXH3_128bits_reset(static_cast<XXH3_state_t*>(m_state));
}

RootBuilder::~RootBuilder() { XXH3_freeState(static_cast<XXH3_state_t*>(m_state)); }

void RootBuilder::add(const Hash128& hash) {
  XXH3_128bits_update(static_cast<XXH3_state_t*>(m_state), hash.data(), hash.size());
}

void RootBuilder::update(std::span<const std::uint8_t> bytes) {
  XXH3_128bits_update(static_cast<XXH3_state_t*>(m_state), bytes.data(), bytes.size());
}

Hash128 RootBuilder::digest() const {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits_digest(static_cast<XXH3_state_t*>(m_state)));
  Hash128 out;
  for (std::size_t i = 0; i < 16; ++i) out[i] = c.digest[i];
  return out;
}

std::string to_hex(std::span<const std::uint8_t> bytes) {
  static const char* k_digits = "0123456789abcdef";
  std::string s;
  s.reserve(bytes.size() * 2);
  for (auto b : bytes) {
    s.push_back(k_digits[b >> 4]);
    s.push_back(k_digits[b & 15]);
  }
  return s;
}

} // namespace sesscp
