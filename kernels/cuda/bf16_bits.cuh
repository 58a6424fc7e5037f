// Device-side bridges between __nv_bfloat16 storage and the bit-level bf16 conversions of
// kernels/cpu/numerics.h (float_to_bf16 / bf16_to_float, round to nearest even), so that the
// CUDA kernels of cuda/ round exactly as the CPU backend does. Device code only (include from .cu).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "kernels/cpu/numerics.h"

namespace loom::kernels::cuda {

__device__ inline float load_bf16(const __nv_bfloat16& x) {
  return bf16_to_float(static_cast<__nv_bfloat16_raw>(x).x);
}

__device__ inline __nv_bfloat16 make_bf16(float f) {
  __nv_bfloat16_raw raw;
  raw.x = float_to_bf16(f);
  return __nv_bfloat16(raw);
}

}  // namespace loom::kernels::cuda
