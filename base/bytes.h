// Big-endian encoding of fixed-width integers and length-prefixed strings,
// with a bounds-checked reader for bytes that came from outside.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sesscp {

class ByteWriter {
public:
  void u8(std::uint8_t v) { m_buf.push_back(v); }
  void u16(std::uint16_t v) { put_be(v, 2); }
  void u32(std::uint32_t v) { put_be(v, 4); }
  void u64(std::uint64_t v) { put_be(v, 8); }
  void i64(std::int64_t v) { put_be(static_cast<std::uint64_t>(v), 8); }
  void bytes(std::span<const std::uint8_t> b) { m_buf.insert(m_buf.end(), b.begin(), b.end()); }
  // A string as u16 length + bytes; callers bound the length beforehand.
  void str16(std::string_view s) {
    u16(static_cast<std::uint16_t>(s.size()));
    m_buf.insert(m_buf.end(), s.begin(), s.end());
  }
  std::vector<std::uint8_t>& buffer() { return m_buf; }
  std::size_t size() const { return m_buf.size(); }

private:
  void put_be(std::uint64_t v, int n) {
    for (int i = n - 1; i >= 0; --i) m_buf.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  std::vector<std::uint8_t> m_buf;
};

// Reads from a span; every read checks bounds and sets a sticky failure flag
// instead of reading past the end.
class ByteReader {
public:
  explicit ByteReader(std::span<const std::uint8_t> data) : m_data(data) {}

  std::uint8_t u8() { return static_cast<std::uint8_t>(get_be(1)); }
  std::uint16_t u16() { return static_cast<std::uint16_t>(get_be(2)); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(get_be(4)); }
  std::uint64_t u64() { return get_be(8); }
  std::int64_t i64() { return static_cast<std::int64_t>(get_be(8)); }
  void bytes(std::span<std::uint8_t> out) {
    if (!need(out.size())) return;
    std::memcpy(out.data(), m_data.data() + m_pos, out.size());
    m_pos += out.size();
  }
  std::string str16() {
    std::size_t n = u16();
    if (!need(n)) return {};
    std::string s(reinterpret_cast<const char*>(m_data.data() + m_pos), n);
    m_pos += n;
    return s;
  }
  std::span<const std::uint8_t> rest() {
    auto r = m_data.subspan(m_pos);
    m_pos = m_data.size();
    return r;
  }
  bool failed() const { return m_failed; }
  std::size_t remaining() const { return m_data.size() - m_pos; }
  // True when every byte was consumed and no read overran.
  bool done() const { return !m_failed && m_pos == m_data.size(); }

private:
  bool need(std::size_t n) {
    if (m_failed || m_data.size() - m_pos < n) { m_failed = true; return false; }
    return true;
  }
  std::uint64_t get_be(int n) {
    if (!need(static_cast<std::size_t>(n))) return 0;
    std::uint64_t v = 0;
    for (int i = 0; i < n; ++i) v = (v << 8) | m_data[m_pos + i];
    m_pos += n;
    return v;
  }
  std::span<const std::uint8_t> m_data;
  std::size_t m_pos = 0;
  bool m_failed = false;
};

} // namespace sesscp
