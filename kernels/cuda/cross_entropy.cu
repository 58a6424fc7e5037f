// Fused softmax cross-entropy, one block per row (cross_entropy.h). Pass 1: each thread folds
// its strided columns j = t, t + T, ... (< V) into an online-softmax state (max, sum exp(x -
// max)) with numerics.h's online_softmax_update; the block merges the 1024 states in a fixed
// tree, giving the row's max and log-sum, hence the loss. Pass 2 (fwd_bwd) rereads the logits
// and overwrites them with grad_scale * (exp((x - max) - log_sum) - [j == target]), the CPU
// backend's expressions in the same order. Tested in tests/kernels/cross_entropy_gpu_test.cc.
#include <fmt/format.h>

#include <cmath>

#include "kernels/cuda/bf16_bits.cuh"
#include "kernels/cuda/cross_entropy.h"
#include "kernels/cuda/cuda_check.h"

namespace loom::kernels::cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kWarps = kCrossEntropyThreads / kWarp;
static_assert(kCrossEntropyThreads % kWarp == 0 && kWarps <= kWarp,
              "the block merge reduces one state per warp inside a single warp");

// (max, sum) with sum = sum_j exp(x_j - max); (-inf, 0) is the empty state.
struct SoftmaxState {
  float max;
  float sum;
};

// Merges two states over disjoint column sets: both sums are brought to the larger maximum.
// online_softmax_rescale returns 0 for an empty `a`, so no -inf - -inf appears.
__device__ SoftmaxState merge(SoftmaxState a, SoftmaxState b) {
  if (b.max == negative_infinity<float>()) return a;
  const float factor_a = online_softmax_rescale(a.max, b.max);
  a.sum = a.sum * factor_a + b.sum * expf(b.max - a.max);
  return a;
}

// Fixed-order tree (shuffle-down within each warp, then warp 0 over the per-warp states):
// deterministic for a given block size. Every thread gets the block's state.
__device__ SoftmaxState block_merge(SoftmaxState s, SoftmaxState* shared) {
  const int lane = threadIdx.x % kWarp;
  const int warp = threadIdx.x / kWarp;
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    SoftmaxState other;
    other.max = __shfl_down_sync(0xffffffffu, s.max, offset);
    other.sum = __shfl_down_sync(0xffffffffu, s.sum, offset);
    s = merge(s, other);
  }
  if (lane == 0) shared[warp] = s;
  __syncthreads();
  if (warp == 0) {
    s = lane < kWarps ? shared[lane] : SoftmaxState{negative_infinity<float>(), 0.0f};
    for (int offset = kWarp / 2; offset > 0; offset /= 2) {
      SoftmaxState other;
      other.max = __shfl_down_sync(0xffffffffu, s.max, offset);
      other.sum = __shfl_down_sync(0xffffffffu, s.sum, offset);
      s = merge(s, other);
    }
    if (lane == 0) shared[kWarps] = s;
  }
  __syncthreads();
  return shared[kWarps];
}

template <bool kBackward>
__global__ void __launch_bounds__(kCrossEntropyThreads)
    cross_entropy_kernel(int64_t vp, int64_t v, const int32_t* targets, __nv_bfloat16* logits,
                         float grad_scale, float* loss_n) {
  __shared__ SoftmaxState shared[kWarps + 1];
  const int64_t row = blockIdx.x;
  __nv_bfloat16* x = logits + row * vp;
  const int32_t target = targets[row];
  if (target < 0) {  // ignored row (the whole block takes this branch): no loss, no gradient
    if constexpr (kBackward) {
      for (int64_t j = threadIdx.x; j < vp; j += kCrossEntropyThreads) x[j] = make_bf16(0.0f);
    }
    if (threadIdx.x == 0 && loss_n != nullptr) loss_n[row] = 0.0f;
    return;
  }
  SoftmaxState s{negative_infinity<float>(), 0.0f};
  for (int64_t j = threadIdx.x; j < v; j += kCrossEntropyThreads) {
    online_softmax_update(s.max, s.sum, load_bf16(x[j]));
  }
  // Read before the merge's barriers, i.e. before pass 2 overwrites the row.
  const float target_logit = threadIdx.x == 0 && target < v ? load_bf16(x[target]) : 0.0f;
  s = block_merge(s, shared);
  const float max = s.max;
  const float log_sum = logf(s.sum);
  if (threadIdx.x == 0 && loss_n != nullptr) {
    // cpu_cross_entropy.cc: loss = log_sum - (x[target] - max); NaN flags a target >= V.
    loss_n[row] = target < v ? log_sum - (target_logit - max) : __int_as_float(0x7fc00000);
  }
  if constexpr (kBackward) {
    for (int64_t j = threadIdx.x; j < vp; j += kCrossEntropyThreads) {
      float grad = 0.0f;  // padding columns j >= V
      if (j < v) {
        grad = expf((load_bf16(x[j]) - max) - log_sum) * grad_scale;
        if (j == target) grad -= grad_scale;
      }
      x[j] = make_bf16(grad);
    }
  }
}

void check_shape(const char* name, int64_t n, int64_t vp, int64_t v) {
  if (n < 0 || v < 1 || v > vp || n > INT32_MAX) {
    throw CudaError(fmt::format("{}: need 0 <= N < 2^31 and 1 <= V <= Vp, got N={} Vp={} V={}",
                                name, n, vp, v));
  }
}

}  // namespace

void cross_entropy_fwd_bwd(int64_t n, int64_t vp, int64_t v, const int32_t* targets,
                           __nv_bfloat16* logits, float grad_scale, float* loss_n,
                           cudaStream_t stream) {
  check_shape("cross_entropy_fwd_bwd", n, vp, v);
  if (n == 0) return;
  cross_entropy_kernel<true><<<static_cast<unsigned>(n), kCrossEntropyThreads, 0, stream>>>(
      vp, v, targets, logits, grad_scale, loss_n);
  LOOM_CUDA_CHECK_LAUNCH();
}

void cross_entropy_fwd(int64_t n, int64_t vp, int64_t v, const int32_t* targets,
                       const __nv_bfloat16* logits, float* loss_n, cudaStream_t stream) {
  check_shape("cross_entropy_fwd", n, vp, v);
  if (n == 0) return;
  // The forward kernel never writes through the pointer (kBackward = false).
  cross_entropy_kernel<false><<<static_cast<unsigned>(n), kCrossEntropyThreads, 0, stream>>>(
      vp, v, targets, const_cast<__nv_bfloat16*>(logits), 0.0f, loss_n);
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace loom::kernels::cuda
