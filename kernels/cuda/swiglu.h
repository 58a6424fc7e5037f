// SwiGLU (Shazeer 2020) on the device: out = silu(gate) * up and its backward, the
// mixed-precision counterpart of cpu::swiglu_fwd/bwd (kernels/cpu/cpu_ops.h). The per-element
// math is numerics.h's silu / silu_grad in fp32, shared with the CPU backend. Tested against the
// CPU backend in tests/kernels/pointwise_gpu_test.cc.
//
// Conventions: as on the CPU, gate and up are two separate dense tensors of `count` = N * F
// elements ([N, F] row-major each, the outputs of the gate and up projections), not one fused
// [N, 2F] buffer. All tensors are bf16; each output is computed in fp32 from the bf16 inputs and
// rounded once (nearest, ties to even). Activation gradients are OVERWRITTEN. Launches are
// asynchronous on `stream`; launch errors throw CudaError (cuda_check.h).
//
// Launch shape: grid-stride, 256 threads per block; 8 elements (16-byte vectors) per thread when
// count % 8 == 0 and every pointer is 16-byte aligned, else one element per thread.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace loom::kernels::cuda {

// out[i] = silu(gate[i]) * up[i].  gate, up, out: [count] bf16.
void swiglu_fwd(int64_t count, const __nv_bfloat16* gate, const __nv_bfloat16* up,
                __nv_bfloat16* out, cudaStream_t stream);

// dgate[i] = dout[i] * up[i] * silu'(gate[i]); dup[i] = dout[i] * silu(gate[i]).
// dout, gate, up, dgate, dup: [count] bf16. dgate may alias gate and dup may alias up (each
// thread reads its elements of both inputs before writing), as on the CPU.
void swiglu_bwd(int64_t count, const __nv_bfloat16* dout, const __nv_bfloat16* gate,
                const __nv_bfloat16* up, __nv_bfloat16* dgate, __nv_bfloat16* dup,
                cudaStream_t stream);

}  // namespace loom::kernels::cuda
