// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum the checkpoint manifest
// stores for every file so that a flipped or truncated byte is caught before a resume.
// Table-driven (one 256-entry table, byte at a time); tested against the standard check value
// crc32c("123456789") = 0xE3069283 (RFC 3720, Appendix B.4) in tests/checkpoint/crc32c_test.cc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace loom::ckpt {

// Continues a running CRC: crc32c_update(crc32c_update(0, a), b) == crc32c(a + b).
uint32_t crc32c_update(uint32_t crc, const void* data, size_t size);

inline uint32_t crc32c(const void* data, size_t size) { return crc32c_update(0, data, size); }
inline uint32_t crc32c(std::string_view s) { return crc32c(s.data(), s.size()); }

}  // namespace loom::ckpt
