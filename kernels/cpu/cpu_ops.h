// The trainer's operator set on the CPU: every forward and backward op of a decoder-only
// transformer (GEMMs through Eigen, norms, RoPE, ALiBi attention, SwiGLU/GeLU, embedding,
// fused cross-entropy), templated on the scalar so that gradient checks run in double and
// training runs in float. The model code (trainer/) calls only these functions; the CUDA
// backend of a later issue implements the same set on the device. Each op is checked against
// central finite differences in tests/kernels_cpu/ (one test file per op family).
//
// Conventions: all tensors are dense, row-major, contiguous. Shapes are given in the names
// (x_nc: [N, C]; q_bthd: [B, T, H, D]). A linear layer's weight is [out, in] (the Hugging Face
// and PyTorch layout): y = x W^T. Backward functions ACCUMULATE (+=) into parameter gradients
// (dw, db, dtable) so that micro-batches sum in place, and OVERWRITE activation gradients (dx)
// unless the argument says `accumulate`.
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

// ---- GEMMs (Eigen, multi-threaded through OpenMP) --------------------------------------------
// C[M,N] = beta * C + A[M,K] * B[N,K]^T     (linear forward: y = x W^T)
template <typename T>
void matmul_nt(int64_t m, int64_t n, int64_t k, const T* a, const T* b, T* c, T beta);
// C[M,N] = beta * C + A[M,K] * B[K,N]       (linear input gradient: dx = dy W)
template <typename T>
void matmul_nn(int64_t m, int64_t n, int64_t k, const T* a, const T* b, T* c, T beta);
// C[M,N] = beta * C + A[K,M]^T * B[K,N]     (linear weight gradient: dW += dy^T x, beta = 1)
template <typename T>
void matmul_tn(int64_t m, int64_t n, int64_t k, const T* a, const T* b, T* c, T beta);

// ---- element-wise and reductions ------------------------------------------------------------
// y[n, c] += bias[c]
template <typename T>
void bias_add(int64_t n, int64_t c, const T* bias, T* y_nc);
// dbias[c] += sum_n dy[n, c]
template <typename T>
void bias_bwd(int64_t n, int64_t c, const T* dy_nc, T* dbias);
// y[i] += x[i]
template <typename T>
void add_inplace(int64_t count, const T* x, T* y);

// ---- normalisation (statistics in the scalar type; T = float gives fp32 statistics) ----------
// RMSNorm (Zhang & Sennrich 2019): y = x / sqrt(mean(x^2) + eps) * w. rstd_n: [N] saved.
template <typename T>
void rmsnorm_fwd(int64_t n, int64_t c, const T* x_nc, const T* w, double eps, T* y_nc, T* rstd_n);
template <typename T>
void rmsnorm_bwd(int64_t n, int64_t c, const T* dy_nc, const T* x_nc, const T* w, const T* rstd_n,
                 T* dx_nc, T* dw);
// LayerNorm (Ba et al. 2016): y = (x - mean) * rstd * w + b. mean_n, rstd_n: [N] saved.
template <typename T>
void layernorm_fwd(int64_t n, int64_t c, const T* x_nc, const T* w, const T* b, double eps,
                   T* y_nc, T* mean_n, T* rstd_n);
template <typename T>
void layernorm_bwd(int64_t n, int64_t c, const T* dy_nc, const T* x_nc, const T* w,
                   const T* mean_n, const T* rstd_n, T* dx_nc, T* dw, T* db);

// ---- rotary position embedding (Su et al. 2021), Hugging Face "rotate half" convention -------
// Tables: inv_freq[i] = theta^(-2i/rot_dim) for i < rot_dim/2, computed in fp32 (as Qwen and
// transformers do); cos/sin_tr[t, i] = cos/sin(t * inv_freq[i]) for t < T. rot_dim <= D is the
// rotated leading part of each head (GPT-NeoX rotary_pct); the rest passes through.
void rope_tables(int64_t t, int64_t rot_dim, double theta, float* cos_tr, float* sin_tr);
// In place on x[B, T, H, D]: x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin (halves of rot_dim).
template <typename T>
void rope_fwd(int64_t b, int64_t t, int64_t h, int64_t d, int64_t rot_dim, const float* cos_tr,
              const float* sin_tr, T* x_bthd);
// In place on dx[B, T, H, D]: the transpose of the rotation (rotation by -angle).
template <typename T>
void rope_bwd(int64_t b, int64_t t, int64_t h, int64_t d, int64_t rot_dim, const float* cos_tr,
              const float* sin_tr, T* dx_bthd);

// ---- MLP activations ---------------------------------------------------------------------------
// SwiGLU (Shazeer 2020): out = silu(gate) * up, all [N, F].
template <typename T>
void swiglu_fwd(int64_t count, const T* gate, const T* up, T* out);
template <typename T>
void swiglu_bwd(int64_t count, const T* dout, const T* gate, const T* up, T* dgate, T* dup);
// GeLU, tanh approximation (GPT-2 "gelu_new", BLOOM's bloom_gelu).
template <typename T>
void gelu_fwd(int64_t count, const T* x, T* y);
template <typename T>
void gelu_bwd(int64_t count, const T* dy, const T* x, T* dx);

// ---- causal self-attention, grouped-query, flash-style (keeps only the log-sum-exp) -----------
// q: [B, T, Hq, D]; k, v: [B, T, Hkv, D] with Hq % Hkv == 0 (query head h reads kv head
// h / (Hq / Hkv)). scores = q.k / sqrt(D) + alibi; causal (key j <= query i). alibi_slopes: [Hq]
// or nullptr; ALiBi (Press et al. 2022) adds -slope * (i - j). out: [B, T, Hq, D];
// lse_bht: [B, Hq, T] log-sum-exp of each score row, saved for the backward.
template <typename T>
void attention_fwd(int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d, const T* q,
                   const T* k, const T* v, const float* alibi_slopes, T* out, T* lse_bht);
// Recomputes the probabilities from q, k and lse (no T x T tensor is kept between passes).
// dq, dk, dv are overwritten.
template <typename T>
void attention_bwd(int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d, const T* q,
                   const T* k, const T* v, const float* alibi_slopes, const T* out,
                   const T* lse_bht, const T* dout, T* dq, T* dk, T* dv);
// ALiBi slopes for H heads (Press et al. 2022; the non-power-of-two rule of their code and of
// Hugging Face's build_alibi_tensor).
void alibi_slopes(int64_t h, float* slopes);

// ---- embedding --------------------------------------------------------------------------------
// out[n, :] = table[tokens[n], :]  (table [V, C])
template <typename T>
void embedding_fwd(int64_t n, int64_t c, const int32_t* tokens, const T* table, T* out_nc);
// dtable[tokens[n], :] += dout[n, :], rows in order n = 0..N-1 (deterministic).
template <typename T>
void embedding_bwd(int64_t n, int64_t c, const int32_t* tokens, const T* dout_nc, T* dtable);

// ---- fused cross-entropy ------------------------------------------------------------------------
// For each row n of logits[N, Vp]: loss_n = logsumexp(logits[n, :V]) - logits[n, target[n]],
// where columns >= V (vocabulary padding) are excluded. Overwrites logits in place with
// grad_scale * d loss_n / d logits (softmax - onehot; 0 in padded columns): the probabilities
// are never stored as a separate tensor. Rows with target < 0 are ignored (loss 0, gradient 0).
// Returns sum of loss_n over rows (not scaled).
template <typename T>
double cross_entropy_fwd_bwd(int64_t n, int64_t vp, int64_t v, const int32_t* targets, T* logits,
                             T grad_scale, T* loss_n);
// The same without gradients (evaluation); logits are left unchanged.
template <typename T>
double cross_entropy_fwd(int64_t n, int64_t vp, int64_t v, const int32_t* targets,
                         const T* logits, T* loss_n);

}  // namespace loom::kernels::cpu
