// Causal grouped-query self-attention on the device, FlashAttention-style (Dao et al. 2022,
// Algorithms 1 and 2): online softmax over 32-key tiles, keeping only the output and the
// log-sum-exp; the backward recomputes the probabilities from q, k and the log-sum-exp. The
// mixed-precision counterpart of cpu::attention_fwd/bwd (kernels/cpu/cpu_ops.h), with the same
// conventions, and the reference the faster paths below are checked against. It runs on the CUDA
// cores (no tensor cores): correct for any shape, not the fast path for large models.
// Tested against the CPU backend in tests/kernels/attention_gpu_test.cc.
//
// Shapes (row-major, contiguous): q [B, T, Hq, D], k and v [B, T, Hkv, D] with Hq % Hkv == 0
// (query head h reads kv head h / (Hq / Hkv)), out and dout [B, T, Hq, D], lse [B, Hq, T].
// scores = q.k / sqrt(D) - slope_h (i - j) (ALiBi when alibi_slopes, [Hq] fp32 on the device,
// is non-null), causal (key j <= query i). q, k, v, out and their gradients are bf16; lse and
// every sum are fp32; each bf16 output is rounded once. D <= 256.
//
// Determinism: every output element is summed by one thread in a fixed order (dk and dv of a
// kv head sum its query heads and queries in order): results do not vary between runs.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace loom::kernels::cuda {

constexpr int64_t kAttentionMaxHeadDim = 256;

// out, lse: overwritten.
void attention_fwd(int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d,
                   const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                   const float* alibi_slopes, __nv_bfloat16* out, float* lse_bht,
                   cudaStream_t stream);

// Scratch bytes that attention_bwd needs: B * Hq * T floats (delta_i = dout_i . out_i).
std::size_t attention_bwd_workspace_bytes(int64_t b, int64_t t, int64_t hq);

// delta [B, Hq, T] (fp32, overwritten) = the row dot products dout_i . out_i that every
// attention backward needs (the D_i of FlashAttention-2, Algorithm 2 line 4).
void attention_delta(int64_t b, int64_t t, int64_t hq, int64_t d, const __nv_bfloat16* out,
                     const __nv_bfloat16* dout, float* delta, cudaStream_t stream);

// dq, dk, dv: overwritten. workspace: attention_bwd_workspace_bytes() bytes on the device.
void attention_bwd(int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d,
                   const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                   const float* alibi_slopes, const __nv_bfloat16* out, const float* lse_bht,
                   const __nv_bfloat16* dout, __nv_bfloat16* dq, __nv_bfloat16* dk,
                   __nv_bfloat16* dv, void* workspace, cudaStream_t stream);

// ---- the fused tensor-core path (attention_fused.cu) -----------------------------------------
// The same attention (shapes, conventions, outputs) as one FlashAttention-2 kernel per pass on
// tensor cores (mma.sync m16n8k16, bf16 in, fp32 accumulate; Dao 2023): the scores never leave
// registers, only the log-sum-exp is kept. Forward: 64 queries per block, 64-key tiles, the
// online softmax of numerics.h in base 2 (one exp2f per probability, as FlashAttention does).
// Tiles stream through shared memory double-buffered with cp.async. Backward: delta, then one kernel for dq (query blocks over key
// tiles) and one for dk, dv (key blocks over the query tiles of every query head of the GQA
// group), so that each gradient element is summed by one thread in a fixed order: deterministic,
// no atomics. P and dS are rounded to bf16 before their products, as in the GEMM path; dk and dv
// sum a GQA group's heads in fp32. D must be 16, 32, 64 or 128 (attention_fused_supported) and
// every tensor 16-byte aligned; B * Hq <= 65535. The backward's workspace is
// attention_bwd_workspace_bytes() (delta).
bool attention_fused_supported(int64_t d);

void attention_fwd_fused(int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d,
                         const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                         const float* alibi_slopes, __nv_bfloat16* out, float* lse_bht,
                         cudaStream_t stream);

void attention_bwd_fused(int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d,
                         const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                         const float* alibi_slopes, const __nv_bfloat16* out, const float* lse_bht,
                         const __nv_bfloat16* dout, __nv_bfloat16* dq, __nv_bfloat16* dk,
                         __nv_bfloat16* dv, void* workspace, cudaStream_t stream);

// ---- the tensor-core path: attention through batched cuBLASLt GEMMs ---------------------------
// The same attention (same shapes, conventions, outputs) with the score matrix materialised one
// sequence at a time, as Megatron-LM computed it before fused kernels: S = q k^T (fp32 out),
// a row softmax with the causal mask, scale and ALiBi writing P (bf16) and the log-sum-exp, then
// out = P v; the backward recomputes S and P from the log-sum-exp, dP = dout v^T, dS =
// P (dP - delta) (bf16), dv = P^T dout, dq = dS k / sqrt(D), dk = dS^T q / sqrt(D). GEMMs run on
// tensor cores; the masked half of S is computed and discarded. P and dS are rounded to bf16
// before their GEMMs (as FlashAttention rounds P), and dk, dv of a GQA group accumulate over its
// query heads in bf16. Deterministic.
class Gemm;

// Scratch bytes for attention_{fwd,bwd}_gemm: one sequence's fp32 S and dP and bf16 P and dS
// for every kv head, plus the backward's delta for the whole batch.
std::size_t attention_gemm_workspace_bytes(int64_t b, int64_t t, int64_t hq, int64_t hkv);

void attention_fwd_gemm(Gemm& gemm, int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d,
                        const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                        const float* alibi_slopes, __nv_bfloat16* out, float* lse_bht,
                        void* workspace, cudaStream_t stream);

void attention_bwd_gemm(Gemm& gemm, int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d,
                        const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                        const float* alibi_slopes, const __nv_bfloat16* out, const float* lse_bht,
                        const __nv_bfloat16* dout, __nv_bfloat16* dq, __nv_bfloat16* dk,
                        __nv_bfloat16* dv, void* workspace, cudaStream_t stream);

}  // namespace loom::kernels::cuda
