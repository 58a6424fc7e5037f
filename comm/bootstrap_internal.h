// Shared by bootstrap.cc and bootstrap_tcp.cc (not a public header): the big-endian fixed-width
// fields of the bootstrap's file header and TCP messages (so a file written on one machine reads
// on any other), the blob size guard and errno text.
#pragma once

#include <cstdint>
#include <string>
#include <system_error>
#include <vector>

namespace loom::comm::bootstrap_detail {

// A guard against garbage lengths (a foreign file, a stray peer), not a format limit: an NCCL
// unique id is 128 bytes.
constexpr uint32_t kMaxBlobBytes = 64u << 20;

inline void put_u32(std::vector<uint8_t>* out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<uint8_t>(v >> shift));
}

inline uint32_t get_u32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// strerror's text, thread-safe (the TCP test runs four ranks as threads).
inline std::string errno_text(int error) { return std::system_category().message(error); }

}  // namespace loom::comm::bootstrap_detail
