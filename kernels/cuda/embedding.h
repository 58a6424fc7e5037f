// Token embedding of the CUDA backend, the device twin of cpu::embedding_fwd / embedding_bwd
// (kernels/cpu/cpu_ops.cc). The backward is deterministic without float atomics and adds each
// token's gradient rows in token order n = 0..N-1, exactly as the CPU does, so with the same
// bf16-valued inputs dtable is bit-identical to the CPU backend's (tested in
// tests/kernels/embedding_gpu_test.cc).
//
// Shapes and dtypes:
//   tokens  [N] int32, each in [0, V) (not checked on the device).
//   table   [V, C] bf16, row-major (the bf16 copy of the weights).
//   out     [N, C] bf16, OVERWRITTEN: out[n, :] = table[tokens[n], :].
//   dout    [N, C] bf16, the gradient of out.
//   dtable  [V, C] fp32 (the master gradient), ACCUMULATED: dtable[t, :] += sum over the
//           positions n with tokens[n] == t, in increasing n, of dout[n, :].
//
// Backward algorithm: a stable radix sort of (token, position) pairs groups each token's
// positions in increasing order (cub::DeviceRadixSort); then one thread per (distinct token,
// column) reads dtable once, adds its dout rows in order in a register and writes once. The
// work is O(N C) whatever the repetition pattern, rows of one token stream independently.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace loom::kernels::cuda {

void embedding_fwd(int64_t n, int64_t c, const int32_t* tokens, const __nv_bfloat16* table,
                   __nv_bfloat16* out_nc, cudaStream_t stream);

// Device scratch that embedding_bwd needs for N tokens (sorted keys and positions, CUB's radix
// sort storage); allocate once for the largest N and reuse.
std::size_t embedding_bwd_workspace_bytes(int64_t n);

// workspace: device memory of at least embedding_bwd_workspace_bytes(n) bytes, 256-byte aligned
// (a cudaMalloc pointer is). N < 2^31.
void embedding_bwd(int64_t n, int64_t c, const int32_t* tokens, const __nv_bfloat16* dout_nc,
                   float* dtable, void* workspace, std::size_t workspace_bytes,
                   cudaStream_t stream);

}  // namespace loom::kernels::cuda
