// Device-side helpers of the normalisation and point-wise kernels: loads and stores of kVec
// consecutive elements (kVec = 8: one 16-byte transaction of bf16, two of fp32; kVec = 1: plain
// scalar accesses), converted to and from fp32 registers with the bf16 rounding of
// kernels/cpu/numerics.h, a grid-size rule for grid-stride loops, and a warp sum whose order is
// fixed by the butterfly (so results do not vary between runs). Included only by .cu files; tested
// through every op that uses it.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <initializer_list>

#include "kernels/cpu/numerics.h"
#include "kernels/cuda/bf16_bits.cuh"

namespace loom::kernels::cuda::detail {

// The vector width of the vectorised paths: 8 bf16 = 16 bytes, the widest global load.
inline constexpr int kBf16PerVector = 8;

// True when p can be read as 16-byte vectors.
inline bool is_aligned_16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// True when rows of `c` elements can take the kVec = 8 path: c % 8 == 0 (every row then starts
// 16 bytes after a 16-byte-aligned base) and each non-null base is 16-byte aligned.
inline bool vectorisable(int64_t c, std::initializer_list<const void*> pointers) {
  if (c % kBf16PerVector != 0) return false;
  for (const void* p : pointers)
    if (p != nullptr && !is_aligned_16(p)) return false;
  return true;
}

// Blocks for a grid-stride loop over `items` work items: one item per thread up to 65536 blocks
// (132 SMs x 8 resident 256-thread blocks on an H100/H200 is ~1k; 64k fills any current GPU
// many times over), beyond which threads loop.
inline unsigned grid_stride_blocks(int64_t items, int threads_per_block) {
  const int64_t blocks = (items + threads_per_block - 1) / threads_per_block;
  return static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
}

// Loads p[0..kVec) (bf16) as fp32. kVec = 8 needs p 16-byte aligned.
template <int kVec>
__device__ __forceinline__ void load_bf16(const __nv_bfloat16* p, float (&out)[kVec]) {
  static_assert(kVec == 1 || kVec == kBf16PerVector, "kVec is 1 or 8");
  if constexpr (kVec == 1) {
    out[0] = cuda::load_bf16(*p);
  } else {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      // Little-endian: the lower half-word is the element at the lower address.
      out[2 * k] = bf16_to_float(static_cast<uint16_t>(words[k] & 0xFFFFu));
      out[2 * k + 1] = bf16_to_float(static_cast<uint16_t>(words[k] >> 16));
    }
  }
}

// Rounds v[0..kVec) to bf16 (nearest, ties to even) and stores them at p.
template <int kVec>
__device__ __forceinline__ void store_bf16(__nv_bfloat16* p, const float (&v)[kVec]) {
  static_assert(kVec == 1 || kVec == kBf16PerVector, "kVec is 1 or 8");
  if constexpr (kVec == 1) {
    *p = cuda::make_bf16(v[0]);
  } else {
    uint32_t words[4];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      words[k] = static_cast<uint32_t>(float_to_bf16(v[2 * k])) |
                 (static_cast<uint32_t>(float_to_bf16(v[2 * k + 1])) << 16);
    }
    *reinterpret_cast<uint4*>(p) = make_uint4(words[0], words[1], words[2], words[3]);
  }
}

// Loads p[0..kVec) (fp32). kVec = 8 needs p 16-byte aligned.
template <int kVec>
__device__ __forceinline__ void load_f32(const float* p, float (&out)[kVec]) {
  static_assert(kVec == 1 || kVec == kBf16PerVector, "kVec is 1 or 8");
  if constexpr (kVec == 1) {
    out[0] = *p;
  } else {
    const float4 lo = *reinterpret_cast<const float4*>(p);
    const float4 hi = *reinterpret_cast<const float4*>(p + 4);
    out[0] = lo.x, out[1] = lo.y, out[2] = lo.z, out[3] = lo.w;
    out[4] = hi.x, out[5] = hi.y, out[6] = hi.z, out[7] = hi.w;
  }
}

// Sum over the 32 lanes of a warp; every lane gets the result. The butterfly pairs lanes in
// the same order on every call, so the sum is bit-reproducible.
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xFFFFFFFFu, v, offset);
  return v;
}

}  // namespace loom::kernels::cuda::detail
