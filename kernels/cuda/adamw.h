// The optimizer step of the CUDA backend over flat fp32 buffers (params, grads and Adam moments
// are single allocations, tensors are views into them, as in llm.c): the global gradient L2 norm
// (deterministic two-stage reduction), the clip coefficient of the CPU trainer, and the AdamW
// element update of kernels/cpu/numerics.h that also writes the bf16 copy of each updated weight
// used by the GEMMs. Tested against the CPU arithmetic in tests/kernels/adamw_gpu_test.cc.
//
// Usage for one step (mirrors trainer/optimizer.cc and trainer.cc):
//   grad_norm(grads, count, partials, norm, s);              // norm = sqrt(sum g^2), double
//   clip_coefficient(norm, clip_grad, coef, s);              // float on the device, no host sync
//   for each contiguous range sharing a weight-decay setting (AdamW::ranges_ on the CPU):
//     adamw_update(end - begin, params + begin, m + begin, v + begin, grads + begin, coef, step,
//                  params_bf16 + begin, s);                  // step.weight_decay = wd or 0
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cpu/numerics.h"

namespace loom::kernels::cuda {

// The first stage always runs this many blocks of kGradNormThreads threads, whatever the device,
// so each partial covers the same elements in the same order and the norm is bit-identical from
// run to run and across GPUs. 1024 x 256 threads saturate an H200's 132 SMs (~8 blocks each).
inline constexpr int kGradNormBlocks = 1024;
inline constexpr int kGradNormThreads = 256;

// norm[0] = sqrt(sum_i grads[i]^2) over `count` fp32 gradients. Squares and sums are in double
// (the CPU trainer's AdamW::grad_norm also sums in double; the kernel is memory-bound, so fp64
// costs nothing), so the result differs from the CPU one only by summation order (~1e-15
// relative). partials: device scratch of kGradNormBlocks doubles, overwritten. norm: device
// pointer to one double, overwritten. count may be 0 (norm 0).
void grad_norm(const float* grads, int64_t count, double* partials, double* norm,
               cudaStream_t stream);

// coef[0] = clip / (norm + 1e-6) when clip > 0 and norm > clip, else 1 (Megatron-LM's
// clip_grad_norm_fp32, as trainer.cc computes it), evaluated in double and rounded to float as
// the CPU AdamW::update rounds its grad_scale. Reads norm[0] on the device: no host round trip.
void clip_coefficient(const double* norm, double clip, float* coef, cudaStream_t stream);

// For i < count: g = grads[i] * grad_scale[0] (fp32 product, as the CPU optimizer forms it),
// then kernels::adamw_update<float>(params[i], m[i], v[i], g, step) and, when params_bf16 is not
// null, params_bf16[i] = bf16(params[i]) rounded to nearest even. params, m, v are updated in
// place (fp32); grads are read only. grad_scale: device pointer to one float (the clip
// coefficient). step.weight_decay applies to the whole range: call once per contiguous range
// with the same decay setting (the CPU AdamW walks the same ranges).
void adamw_update(int64_t count, float* params, float* m, float* v, const float* grads,
                  const float* grad_scale, const AdamWStep& step, __nv_bfloat16* params_bf16,
                  cudaStream_t stream);

}  // namespace loom::kernels::cuda
