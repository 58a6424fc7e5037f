// CRC-32C, table-driven (one byte per step through a 256-entry table): see crc32c.h.
// Checked against RFC 3720's test vectors in tests/checkpoint/crc32c_test.cc.
#include "checkpoint/crc32c.h"

#include <array>

namespace loom::ckpt {

namespace {

// Reflected Castagnoli polynomial (iSCSI, RFC 3720 section 12.1).
constexpr uint32_t kPolyReflected = 0x82F63B78u;

constexpr std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ kPolyReflected : c >> 1;
    table[i] = c;
  }
  return table;
}

constexpr std::array<uint32_t, 256> kTable = make_table();

}  // namespace

uint32_t crc32c_update(uint32_t crc, const void* data, size_t size) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~crc;  // pre- and post-inversion as the standard defines (init 0xFFFFFFFF)
  for (size_t i = 0; i < size; ++i) c = kTable[(c ^ p[i]) & 0xFFu] ^ (c >> 8);
  return ~c;
}

}  // namespace loom::ckpt
