// GeLU-tanh forward and backward on the device: numerics.h's gelu_tanh / gelu_tanh_grad per
// element in fp32, the operand order of cpu_pointwise.cc, one bf16 rounding per output. Tested
// in tests/kernels/pointwise_gpu_test.cc.
#include "kernels/cpu/numerics.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gelu.h"
#include "kernels/cuda/vec_io.cuh"

namespace loom::kernels::cuda {
namespace {

using detail::load_bf16;
using detail::store_bf16;

constexpr int kThreads = 256;

// Thread work item v covers elements [v * kVec, v * kVec + kVec).
template <int kVec>
__global__ void __launch_bounds__(kThreads)
    gelu_fwd_elementwise(int64_t vectors, const __nv_bfloat16* x, __nv_bfloat16* y) {
  for (int64_t v = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; v < vectors;
       v += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float a[kVec];
    load_bf16<kVec>(x + v * kVec, a);
#pragma unroll
    for (int k = 0; k < kVec; ++k) a[k] = gelu_tanh(a[k]);
    store_bf16<kVec>(y + v * kVec, a);
  }
}

template <int kVec>
__global__ void __launch_bounds__(kThreads)
    gelu_bwd_elementwise(int64_t vectors, const __nv_bfloat16* dy, const __nv_bfloat16* x,
                         __nv_bfloat16* dx) {
  for (int64_t v = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; v < vectors;
       v += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float d[kVec], a[kVec];
    load_bf16<kVec>(dy + v * kVec, d);
    load_bf16<kVec>(x + v * kVec, a);
#pragma unroll
    for (int k = 0; k < kVec; ++k) d[k] = d[k] * gelu_tanh_grad(a[k]);
    store_bf16<kVec>(dx + v * kVec, d);
  }
}

}  // namespace

void gelu_fwd(int64_t count, const __nv_bfloat16* x, __nv_bfloat16* y, cudaStream_t stream) {
  if (count <= 0) return;
  if (detail::vectorisable(count, {x, y})) {
    constexpr int kVec = detail::kBf16PerVector;
    const int64_t vectors = count / kVec;
    gelu_fwd_elementwise<kVec>
        <<<detail::grid_stride_blocks(vectors, kThreads), kThreads, 0, stream>>>(vectors, x, y);
  } else {
    gelu_fwd_elementwise<1>
        <<<detail::grid_stride_blocks(count, kThreads), kThreads, 0, stream>>>(count, x, y);
  }
  LOOM_CUDA_CHECK_LAUNCH();
}

void gelu_bwd(int64_t count, const __nv_bfloat16* dy, const __nv_bfloat16* x, __nv_bfloat16* dx,
              cudaStream_t stream) {
  if (count <= 0) return;
  if (detail::vectorisable(count, {dy, x, dx})) {
    constexpr int kVec = detail::kBf16PerVector;
    const int64_t vectors = count / kVec;
    gelu_bwd_elementwise<kVec>
        <<<detail::grid_stride_blocks(vectors, kThreads), kThreads, 0, stream>>>(vectors, dy, x,
                                                                                 dx);
  } else {
    gelu_bwd_elementwise<1>
        <<<detail::grid_stride_blocks(count, kThreads), kThreads, 0, stream>>>(count, dy, x, dx);
  }
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace loom::kernels::cuda
