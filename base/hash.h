// Chunk hashing (XXH3-128) and the digests built from chunk hashes.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace sesscp {

// A 128-bit XXH3 digest in canonical (big-endian) byte order.
using Hash128 = std::array<std::uint8_t, 16>;

// Return XXH3-128 of `data`.
Hash128 xxh3_128(std::span<const std::uint8_t> data);

// Return XXH3-64 of `data` (used for journal record checksums).
std::uint64_t xxh3_64(std::span<const std::uint8_t> data);

// Return the digest over a list of chunk hashes: XXH3-128 of their
// concatenation in chunk order. This is the "file root" of docs/PROTOCOL.md.
Hash128 hash_list_root(std::span<const Hash128> hashes);

// Incremental hash_list_root: feed chunk hashes in chunk order.
class RootBuilder {
public:
  RootBuilder();
  ~RootBuilder();
  RootBuilder(const RootBuilder&) = delete;
  RootBuilder& operator=(const RootBuilder&) = delete;
  void add(const Hash128& hash);
  // Any bytes, for a digest over pieces that are not chunk hashes (the
  // source fingerprint streams its samples instead of copying them).
  void update(std::span<const std::uint8_t> bytes);
  Hash128 digest() const;

private:
  void* m_state; // XXH3_state_t, kept out of this header
};

// Lower-case hex of a digest.
std::string to_hex(std::span<const std::uint8_t> bytes);

} // namespace sesscp
