// Linear-layer biases, learned position embeddings and the fp32 -> bf16 weight copy on the
// device: the counterparts of cpu::bias_add / bias_bwd / add_inplace (kernels/cpu/cpu_ops.h) as
// the CUDA model uses them. Biases and position tables are fp32 master parameters (read as
// fp32, like the norm weights); activations are bf16 and rounded once.
// Tested against the CPU backend in tests/kernels/bias_gpu_test.cc.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace loom::kernels::cuda {

// y[n, c] = bf16(y[n, c] + bias[c]) for n < N (rows of C). With C = s * h and N = b this also
// adds a [s, h] position table to every sequence of a [b, s, h] activation.
void bias_add(int64_t n, int64_t c, const float* bias, __nv_bfloat16* y_nc, cudaStream_t stream);

// Scratch bytes bias_bwd needs for N rows of C.
std::size_t bias_bwd_workspace_bytes(int64_t n, int64_t c);

// dbias[c] += sum_n dy[n, c] (fp32). Deterministic: rows are summed in fixed chunks of 128, in
// order, then the chunk sums in order (no atomics). workspace: bias_bwd_workspace_bytes(n, c).
void bias_bwd(int64_t n, int64_t c, const __nv_bfloat16* dy_nc, float* dbias, void* workspace,
              cudaStream_t stream);

// dst[i] = bf16(src[i]), round to nearest even (numerics.h float_to_bf16).
void convert_to_bf16(int64_t count, const float* src, __nv_bfloat16* dst, cudaStream_t stream);

}  // namespace loom::kernels::cuda
