// Deterministic weight/bias gradients of RMSNorm and LayerNorm on the device (used by
// rmsnorm.cu and layernorm.cu, not by the trainer directly). No float atomics: the rows are cut
// into fixed chunks of kNormParamGradRowsPerChunk; one block sums a [chunk, 64-column] tile in a
// fixed order into fp32 partials[chunk, C], and a second kernel adds the chunk partials in
// chunk order to dw/db (+=). The grouping depends only on N and C, never on the device, so
// two runs (and two GPUs of the same kind) give bit-identical sums. Tested through
// tests/kernels/rmsnorm_gpu_test.cc and layernorm_gpu_test.cc.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace loom::kernels::cuda::detail {

// Rows per partial sum. 128 rows bound each partial to 128 fp32 additions and keep the
// scratch at C * ceil(N / 128) floats (1 MiB for N = 16384 tokens, C = 2048).
inline constexpr int64_t kNormParamGradRowsPerChunk = 128;

inline int64_t norm_param_grad_chunks(int64_t n) {
  return (n + kNormParamGradRowsPerChunk - 1) / kNormParamGradRowsPerChunk;
}

// Bytes of scratch for one [chunks, C] fp32 partial-sum array.
inline std::size_t norm_param_grad_partial_bytes(int64_t n, int64_t c) {
  return static_cast<std::size_t>(norm_param_grad_chunks(n) * c) * sizeof(float);
}

// dw[j] += sum_n dy[n, j] * xc[n, j] * rstd[n], with xc = x - mean[n] when mean is non-null
// (LayerNorm) and xc = x otherwise (RMSNorm); when db is non-null also db[j] += sum_n dy[n, j].
// dy, x: [N, C] bf16; mean, rstd: [N] fp32; dw, db: [C] fp32. partials: scratch of
// norm_param_grad_partial_bytes(n, c) bytes, twice that when db is non-null.
void norm_param_grad_accumulate(int64_t n, int64_t c, const __nv_bfloat16* dy_nc,
                                const __nv_bfloat16* x_nc, const float* mean_n, const float* rstd_n,
                                float* partials, float* dw, float* db, cudaStream_t stream);

}  // namespace loom::kernels::cuda::detail
