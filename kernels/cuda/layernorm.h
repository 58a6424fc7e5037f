// LayerNorm (Ba et al. 2016) on the device, forward fused with the residual add of a pre-norm
// block (as llm.c's fused_residual_forward): the mixed-precision counterpart of
// cpu::layernorm_fwd/bwd (kernels/cpu/cpu_ops.h), with the same formulas and operand order.
// Tested against the CPU backend in tests/kernels/layernorm_gpu_test.cc.
//
// Conventions: tensors are dense, row-major, contiguous; activations and their gradients are
// bf16; weight and bias (fp32 master copies, read as fp32), their gradients and the saved
// statistics are fp32; the mean, the variance (two passes: mean, then centred squares, as the
// CPU) and every per-element expression are evaluated in fp32, and each bf16 output is rounded
// once (nearest, ties to even). dw and db ACCUMULATE (+=); dx is OVERWRITTEN.
// Launches are asynchronous on `stream`; launch errors throw CudaError (cuda_check.h).
//
// Launch shape: one warp per row, 8 rows per 256-thread block; any C >= 1 (no upper bound: a
// lane strides over the row, which it reads three times, the later passes mostly from L1/L2).
// Rows are read as 16-byte vectors when C % 8 == 0 and every pointer is 16-byte aligned
// (cudaMalloc gives 256); otherwise element by element, with the same results.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace loom::kernels::cuda {

// sum = x + residual (rounded to bf16; only when residual is non-null), then
// y = (sum - mean) * rstd * w + b, with the statistics of the bf16-rounded sum (the tensor the
// backward reads).
//   x_nc, residual_nc: [N, C] bf16 (residual_nc may be null: the norm then reads x_nc);
//   w, b: [C] fp32; sum_nc: [N, C] bf16 output, required when residual_nc is non-null (may
//   alias x_nc or residual_nc: each element is read before it is written, by the same thread);
//   y_nc: [N, C] bf16 output; mean_n: [N] fp32 output; rstd_n: [N] fp32 output,
//   1 / sqrt(mean((sum - mean)^2) + eps).
void layernorm_fwd(int64_t n, int64_t c, const __nv_bfloat16* x_nc,
                   const __nv_bfloat16* residual_nc, const float* w, const float* b, double eps,
                   __nv_bfloat16* sum_nc, __nv_bfloat16* y_nc, float* mean_n, float* rstd_n,
                   cudaStream_t stream);

// Scratch bytes that layernorm_bwd needs for N rows of C: 2 * C * ceil(N / 128) floats.
std::size_t layernorm_bwd_workspace_bytes(int64_t n, int64_t c);

// With xhat = (x - mean) r, g = dy * w (cpu_norms.cc; the layernorm_backward of llm.c):
//   dx_j = r (g_j - mean_k g_k - xhat_j mean_k(g_k xhat_k)) [+ dresidual_j] (bf16, overwritten);
//   dw_j += sum_n dy_nj xhat_nj;  db_j += sum_n dy_nj                         (fp32, accumulated).
//   dy_nc: [N, C] bf16; x_nc: [N, C] bf16, the normalised input (sum_nc of the forward);
//   w: [C] fp32; mean_n, rstd_n: [N] fp32 from the forward; dresidual_nc: [N, C] bf16 or null,
//   the gradient that reaches the residual stream from above, added to dx in fp32 before the
//   one rounding (dx_nc may alias it: the update is then in place); dx_nc: [N, C] bf16;
//   dw, db: [C] fp32; workspace: layernorm_bwd_workspace_bytes(n, c) bytes of device memory.
// dw and db are reduced without atomics in a fixed order (norm_param_grad.h): bit-reproducible.
void layernorm_bwd(int64_t n, int64_t c, const __nv_bfloat16* dy_nc, const __nv_bfloat16* x_nc,
                   const float* w, const float* mean_n, const float* rstd_n,
                   const __nv_bfloat16* dresidual_nc, __nv_bfloat16* dx_nc, float* dw, float* db,
                   void* workspace, cudaStream_t stream);

}  // namespace loom::kernels::cuda
