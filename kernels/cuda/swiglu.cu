// SwiGLU forward and backward on the device: numerics.h's silu / silu_grad per element in fp32,
// the operand order of cpu_pointwise.cc, one bf16 rounding per output. Tested in
// tests/kernels/pointwise_gpu_test.cc.
#include "kernels/cpu/numerics.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/swiglu.h"
#include "kernels/cuda/vec_io.cuh"

namespace loom::kernels::cuda {
namespace {

using detail::load_bf16;
using detail::store_bf16;

constexpr int kThreads = 256;

// Thread work item v covers elements [v * kVec, v * kVec + kVec).
template <int kVec>
__global__ void __launch_bounds__(kThreads)
    swiglu_fwd_elementwise(int64_t vectors, const __nv_bfloat16* gate, const __nv_bfloat16* up,
                           __nv_bfloat16* out) {
  for (int64_t v = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; v < vectors;
       v += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float g[kVec], u[kVec];
    load_bf16<kVec>(gate + v * kVec, g);
    load_bf16<kVec>(up + v * kVec, u);
#pragma unroll
    for (int k = 0; k < kVec; ++k) g[k] = silu(g[k]) * u[k];
    store_bf16<kVec>(out + v * kVec, g);
  }
}

template <int kVec>
__global__ void __launch_bounds__(kThreads)
    swiglu_bwd_elementwise(int64_t vectors, const __nv_bfloat16* dout, const __nv_bfloat16* gate,
                           const __nv_bfloat16* up, __nv_bfloat16* dgate, __nv_bfloat16* dup) {
  for (int64_t v = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; v < vectors;
       v += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float d[kVec], g[kVec], u[kVec], dg[kVec], du[kVec];
    load_bf16<kVec>(dout + v * kVec, d);
    load_bf16<kVec>(gate + v * kVec, g);
    load_bf16<kVec>(up + v * kVec, u);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      du[k] = d[k] * silu(g[k]);
      dg[k] = d[k] * u[k] * silu_grad(g[k]);
    }
    store_bf16<kVec>(dup + v * kVec, du);
    store_bf16<kVec>(dgate + v * kVec, dg);
  }
}

}  // namespace

void swiglu_fwd(int64_t count, const __nv_bfloat16* gate, const __nv_bfloat16* up,
                __nv_bfloat16* out, cudaStream_t stream) {
  if (count <= 0) return;
  if (detail::vectorisable(count, {gate, up, out})) {
    constexpr int kVec = detail::kBf16PerVector;
    const int64_t vectors = count / kVec;
    swiglu_fwd_elementwise<kVec>
        <<<detail::grid_stride_blocks(vectors, kThreads), kThreads, 0, stream>>>(vectors, gate, up,
                                                                                 out);
  } else {
    swiglu_fwd_elementwise<1><<<detail::grid_stride_blocks(count, kThreads), kThreads, 0, stream>>>(
        count, gate, up, out);
  }
  LOOM_CUDA_CHECK_LAUNCH();
}

void swiglu_bwd(int64_t count, const __nv_bfloat16* dout, const __nv_bfloat16* gate,
                const __nv_bfloat16* up, __nv_bfloat16* dgate, __nv_bfloat16* dup,
                cudaStream_t stream) {
  if (count <= 0) return;
  if (detail::vectorisable(count, {dout, gate, up, dgate, dup})) {
    constexpr int kVec = detail::kBf16PerVector;
    const int64_t vectors = count / kVec;
    swiglu_bwd_elementwise<kVec>
        <<<detail::grid_stride_blocks(vectors, kThreads), kThreads, 0, stream>>>(
            vectors, dout, gate, up, dgate, dup);
  } else {
    swiglu_bwd_elementwise<1><<<detail::grid_stride_blocks(count, kThreads), kThreads, 0, stream>>>(
        count, dout, gate, up, dgate, dup);
  }
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace loom::kernels::cuda
