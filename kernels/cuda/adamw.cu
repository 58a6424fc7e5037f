// Gradient norm, clip coefficient and fused AdamW + bf16 weight copy; see adamw.h. The element
// update is kernels/cpu/numerics.h's adamw_update, the very function the CPU optimizer calls;
// results can still differ from the CPU by an ulp because nvcc contracts a*b+c into FMAs where
// the host compiler (ISO C++, -ffp-contract=off) does not. Tested in
// tests/kernels/adamw_gpu_test.cc.
#include <algorithm>

#include "kernels/cuda/adamw.h"
#include "kernels/cuda/bf16_bits.cuh"
#include "kernels/cuda/cuda_check.h"

namespace loom::kernels::cuda {
namespace {

// Threads per block of the element-wise update, and the grid cap beyond which blocks stride
// (65536 x 256 = 16.8M threads, over 100 waves of an H200; more blocks add only launch cost).
constexpr int kUpdateThreads = 256;
constexpr int64_t kUpdateMaxBlocks = 65536;

// Shared-memory tree over blockDim.x (a power of two) doubles; the order of additions is fixed
// by the thread index, so the result is deterministic. Returns the sum in thread 0.
template <int kThreads>
__device__ double block_sum(double x, double* shared) {
  static_assert((kThreads & (kThreads - 1)) == 0, "block_sum needs a power-of-two block");
  shared[threadIdx.x] = x;
  __syncthreads();
  for (int half = kThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) shared[threadIdx.x] += shared[threadIdx.x + half];
    __syncthreads();
  }
  return shared[0];
}

// Stage 1: block b sums the squares of elements i = b*T + t + j*(B*T), j = 0, 1, ... (grid
// stride over a grid of fixed size B = kGradNormBlocks), then reduces its T threads.
__global__ void grad_norm_partials_kernel(const float* grads, int64_t count, double* partials) {
  __shared__ double shared[kGradNormThreads];
  const int64_t stride = int64_t{kGradNormBlocks} * kGradNormThreads;
  double acc = 0.0;
  for (int64_t i = int64_t{blockIdx.x} * kGradNormThreads + threadIdx.x; i < count; i += stride) {
    const double g = grads[i];
    acc += g * g;
  }
  const double total = block_sum<kGradNormThreads>(acc, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

// Stage 2: one block of kGradNormBlocks threads reduces the partials in a fixed tree.
__global__ void grad_norm_final_kernel(const double* partials, double* norm) {
  __shared__ double shared[kGradNormBlocks];
  const double total = block_sum<kGradNormBlocks>(partials[threadIdx.x], shared);
  if (threadIdx.x == 0) norm[0] = sqrt(total);
}

__global__ void clip_coefficient_kernel(const double* norm, double clip, float* coef) {
  const double n = norm[0];
  // trainer.cc: clip > 0 && gnorm > clip ? clip / (gnorm + 1e-6) : 1 (Megatron-LM's epsilon).
  coef[0] = static_cast<float>(clip > 0.0 && n > clip ? clip / (n + 1e-6) : 1.0);
}

__global__ void adamw_update_kernel(int64_t count, float* params, float* m, float* v,
                                    const float* grads, const float* grad_scale, AdamWStep step,
                                    __nv_bfloat16* params_bf16) {
  const float scale = grad_scale[0];
  const int64_t stride = int64_t{gridDim.x} * blockDim.x;
  for (int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x; i < count; i += stride) {
    float p = params[i];
    float mi = m[i];
    float vi = v[i];
    kernels::adamw_update<float>(p, mi, vi, grads[i] * scale, step);  // numerics.h, as the CPU
    params[i] = p;
    m[i] = mi;
    v[i] = vi;
    if (params_bf16 != nullptr) params_bf16[i] = make_bf16(p);
  }
}

}  // namespace

void grad_norm(const float* grads, int64_t count, double* partials, double* norm,
               cudaStream_t stream) {
  grad_norm_partials_kernel<<<kGradNormBlocks, kGradNormThreads, 0, stream>>>(grads, count,
                                                                              partials);
  LOOM_CUDA_CHECK_LAUNCH();
  grad_norm_final_kernel<<<1, kGradNormBlocks, 0, stream>>>(partials, norm);
  LOOM_CUDA_CHECK_LAUNCH();
}

void clip_coefficient(const double* norm, double clip, float* coef, cudaStream_t stream) {
  clip_coefficient_kernel<<<1, 1, 0, stream>>>(norm, clip, coef);
  LOOM_CUDA_CHECK_LAUNCH();
}

void adamw_update(int64_t count, float* params, float* m, float* v, const float* grads,
                  const float* grad_scale, const AdamWStep& step, __nv_bfloat16* params_bf16,
                  cudaStream_t stream) {
  if (count <= 0) return;
  const int64_t blocks = std::min((count + kUpdateThreads - 1) / kUpdateThreads, kUpdateMaxBlocks);
  adamw_update_kernel<<<static_cast<unsigned>(blocks), kUpdateThreads, 0, stream>>>(
      count, params, m, v, grads, grad_scale, step, params_bf16);
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace loom::kernels::cuda
