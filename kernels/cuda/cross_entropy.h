// Fused LM-head softmax cross-entropy of the CUDA backend, the device twin of
// cpu::cross_entropy_fwd_bwd / cross_entropy_fwd (kernels/cpu/cpu_cross_entropy.cc): per-row
// loss in fp32 and, in place of the bf16 logits, the bf16 gradient grad_scale * (softmax -
// onehot). No probability tensor is ever written. Tested against the CPU backend in
// tests/kernels/cross_entropy_gpu_test.cc (GPT-2's 50257 vocabulary padded to 50304, BLOOM's
// 250880).
//
// Shapes and dtypes:
//   logits   [N, Vp] bf16, row-major; columns >= V are vocabulary padding (excluded from the
//            softmax, gradient 0). fwd_bwd OVERWRITES it with the gradient; fwd leaves it.
//   targets  [N] int32; target < 0 ignores the row (loss 0, gradient 0). A target >= V is a
//            caller bug: its loss is NaN, so it shows up in the logged loss.
//   loss_n   [N] fp32, OVERWRITTEN with logsumexp(logits[n, :V]) - logits[n, target[n]]
//            (0 for ignored rows); may be null in fwd_bwd when only the gradient is wanted.
//            The sum over rows is left to the caller (no host synchronisation here).
// One block of kCrossEntropyThreads threads per row loops over the vocabulary with the online
// softmax of numerics.h, so any V up to 2^31 - 1 works (BLOOM's 250880 included); N up to
// 2^31 - 1 rows (grid x limit).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace loom::kernels::cuda {

// 32 warps per row: 50304 / 1024 = 49 columns per thread for GPT-2, 245 for BLOOM.
inline constexpr int kCrossEntropyThreads = 1024;

void cross_entropy_fwd_bwd(int64_t n, int64_t vp, int64_t v, const int32_t* targets,
                           __nv_bfloat16* logits, float grad_scale, float* loss_n,
                           cudaStream_t stream);

void cross_entropy_fwd(int64_t n, int64_t vp, int64_t v, const int32_t* targets,
                       const __nv_bfloat16* logits, float* loss_n, cudaStream_t stream);

}  // namespace loom::kernels::cuda
