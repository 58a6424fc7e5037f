// Rotary position embedding (Su et al. 2021, Hugging Face "rotate half" convention) on the
// device, in place on bf16 q/k: the mixed-precision counterpart of cpu::rope_fwd/rope_bwd
// (kernels/cpu/cpu_ops.h), with the same per-element expressions. The cos/sin tables are the
// fp32 ones of cpu::rope_tables, copied to the device once. Tested against the CPU backend in
// tests/kernels/rope_gpu_test.cc.
//
// Conventions: x_bthd / dx_bthd: [B, T, H, D] bf16, dense, row-major, contiguous (q with
// H = Hq, k with H = Hkv); cos_tr, sin_tr: [T, rot_dim / 2] fp32 device tables, row t for
// position t of every sequence of the batch. rot_dim must be even and <= D (GPT-NeoX rotary_pct:
// only the first rot_dim dims of a head rotate; the rest are not touched). Each element is
// rotated in fp32 and rounded once to bf16 (nearest, ties to even). Launches are asynchronous on
// `stream`; bad arguments throw std::invalid_argument, launch errors CudaError.
//
// Launch shape: one thread per rotated pair (x[i], x[i + rot_dim/2]), 256 threads per block,
// grid-stride over B*T*H*rot_dim/2 pairs (no size limit, no alignment requirement).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace loom::kernels::cuda {

// x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin on the halves x1 = x[:rot_dim/2],
// x2 = x[rot_dim/2:rot_dim] of every head.
void rope_fwd(int64_t b, int64_t t, int64_t h, int64_t d, int64_t rot_dim, const float* cos_tr,
              const float* sin_tr, __nv_bfloat16* x_bthd, cudaStream_t stream);

// The transpose of the rotation (rotation by -angle), in place on the gradient.
void rope_bwd(int64_t b, int64_t t, int64_t h, int64_t d, int64_t rot_dim, const float* cos_tr,
              const float* sin_tr, __nv_bfloat16* dx_bthd, cudaStream_t stream);

}  // namespace loom::kernels::cuda
