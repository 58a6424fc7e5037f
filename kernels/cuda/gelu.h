// GeLU, tanh approximation (Hendrycks & Gimpel 2016; GPT-2's gelu_new, BLOOM's bloom_gelu) on
// the device: the mixed-precision counterpart of cpu::gelu_fwd/bwd (kernels/cpu/cpu_ops.h). The
// per-element math is numerics.h's gelu_tanh / gelu_tanh_grad in fp32, shared with the CPU
// backend. Tested against the CPU backend in tests/kernels/pointwise_gpu_test.cc.
//
// Conventions: all tensors are dense bf16 arrays of `count` elements (e.g. [N, 4C] row-major);
// each output is computed in fp32 from the bf16 inputs and rounded once (nearest, ties to even).
// dx is OVERWRITTEN. Launches are asynchronous on `stream`; launch errors throw CudaError.
//
// Launch shape: grid-stride, 256 threads per block; 8 elements (16-byte vectors) per thread when
// count % 8 == 0 and every pointer is 16-byte aligned, else one element per thread.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace loom::kernels::cuda {

// y[i] = gelu_tanh(x[i]).  x, y: [count] bf16 (y may alias x: in place).
void gelu_fwd(int64_t count, const __nv_bfloat16* x, __nv_bfloat16* y, cudaStream_t stream);

// dx[i] = dy[i] * gelu_tanh'(x[i]).  dy, x, dx: [count] bf16 (dx may alias dy or x).
void gelu_bwd(int64_t count, const __nv_bfloat16* dy, const __nv_bfloat16* x, __nv_bfloat16* dx,
              cudaStream_t stream);

}  // namespace loom::kernels::cuda
