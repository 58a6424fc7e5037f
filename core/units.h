// Unit constants. Names carry their unit (_bytes, _gib, _s); these are the only
// conversions Loom uses, so GB (1e9, vendors' marketing) and GiB (2^30, allocators) never mix.
#pragma once

#include <cstdint>

namespace loom::core {

inline constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;  // bytes
inline constexpr double kMiB = 1024.0 * 1024.0;           // bytes
inline constexpr double kTiB = kGiB * 1024.0;             // bytes
inline constexpr double kGB = 1e9;                        // bytes (decimal, as vendors print)
inline constexpr double kTB = 1e12;                       // bytes

inline double bytes_to_gib(double bytes) { return bytes / kGiB; }
inline double gib_to_bytes(double gib) { return gib * kGiB; }

// Integer ceil(a / b) for positive b.
inline constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline constexpr int64_t round_up(int64_t a, int64_t multiple) {
  return ceil_div(a, multiple) * multiple;
}

}  // namespace loom::core
