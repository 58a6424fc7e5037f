// Causal GQA attention on tensor cores, fused FlashAttention-2 style: see attention.h
// (attention_{fwd,bwd}_fused).
//
// Work decomposition. A block is 4 warps; each warp owns 16 rows of the block's 64 and computes
// its 16 x 64 (or 16 x 32) score tile with mma.sync m16n8k16 (bf16 in, fp32 accumulate), so the
// scores stay in registers: the accumulator layout of S (row g or g + 8, columns 2t, 2t + 1 of
// each 8-column block, g = lane / 4, t = lane % 4) is, after rounding to bf16, the A-operand
// layout of P for the next product (Dao 2023, section 3.3). Row statistics (max, sum) need only
// the 4 lanes of a quad (__shfl_xor_sync 1, 2). Tiles of the streamed operand live in shared
// memory with rows padded by 16 bytes, so that ldmatrix reads 8 rows without bank conflicts;
// B operands come from ldmatrix (.trans where the product needs the tile's columns as k). The
// streamed tiles are double-buffered: tile n + 1 is copied with cp.async while tile n is used.
//
//   forward: block = 64 queries of one (batch, query head); key tiles of 64 up to the diagonal;
//            O += P V with numerics.h's online softmax in base 2; out = O / l, lse = m + log l.
//   dq:      block = 64 queries; key tiles of 64: S, P = exp(S - lse), dP = dO V^T,
//            dS = P (dP - delta), dq += dS K.
//   dk, dv:  block = 64 keys of one (batch, kv head); every query head of the group, query tiles
//            of 32 from the diagonal on: S^T = K Q^T, P^T, dP^T = V dO^T, dS^T, dv += P^T dO,
//            dk += dS^T Q. Each gradient element is owned by one thread and summed in a fixed
//            order: deterministic, no atomics (7 products per tile pair instead of FlashAttention-2's
//            5, the price of not adding dq across key tiles with atomics).
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cpu/numerics.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"

namespace loom::kernels::cuda {

namespace {

using bf16 = __nv_bfloat16;

constexpr int kThreads = 128;      // 4 warps
constexpr int kBlockRows = 64;     // rows a block owns (16 per warp)
constexpr int kKeyTile = 64;       // keys per streamed tile (forward, dq)
constexpr int kQueryTile = 32;     // queries per streamed tile (dk, dv)
constexpr int kPad = 8;            // bf16 elements of padding per shared-memory row
constexpr unsigned kFullMask = 0xffffffffu;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Scores are kept in base-2 units (s log2 e), so that each probability is one exp2f (the
// MUFU.EX2 instruction and its denormal fix-up) rather than expf's range reduction around it,
// as FlashAttention does: p = 2^(s log2 e - m2) = e^(s - m). The online-softmax update of
// numerics.h in base 2: raises m2 to cover block_max, returns 2^(old - new), 0 when nothing
// was seen yet.
__device__ inline float online_softmax_rescale2(float& running_max, float block_max) {
  const float new_max = fmaxf(running_max, block_max);
  const float factor = running_max == negative_infinity<float>() ? 0.0f : exp2f(running_max - new_max);
  running_max = new_max;
  return factor;
}

__device__ inline uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Four 8 x 8 bf16 matrices from shared memory; lane l gives the address of row l % 8 of matrix
// l / 8. Without .trans lane (g, t) receives row g, columns 2t, 2t + 1 of matrix i in r[i]; with
// .trans it receives rows 2t, 2t + 1 of column g.
__device__ inline void ldsm_x4(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p)));
}

__device__ inline void ldsm_x4_trans(uint32_t (&r)[4], const bf16* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(p)));
}

// c (16 x 8, fp32) += a (16 x 16, bf16, row) b (16 x 8, bf16, col).
__device__ inline void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The A operand (16 x 16) at rows m0, columns k0 of a row-major [m][k] tile with row stride ld.
__device__ inline void load_a(uint32_t (&a)[4], const bf16* s, int ld, int m0, int k0, int lane) {
  ldsm_x4(a, s + (m0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + k0 + (lane >> 4) * 8);
}

// B operands (16 x 8) of columns n0 and n0 + 8 at k-slab k0 when B = M^T and M is a row-major
// [n][k] tile (K for S = Q K^T): r[0], r[1] for n0; r[2], r[3] for n0 + 8.
__device__ inline void load_b_nk(uint32_t (&r)[4], const bf16* s, int ld, int n0, int k0, int lane) {
  ldsm_x4(r, s + (n0 + (lane >> 4) * 8 + (lane & 7)) * ld + k0 + ((lane >> 3) & 1) * 8);
}

// The same when B = M and M is a row-major [k][n] tile (V for O = P V): transposed reads.
__device__ inline void load_b_kn(uint32_t (&r)[4], const bf16* s, int ld, int k0, int n0, int lane) {
  ldsm_x4_trans(r, s + (k0 + ((lane >> 3) & 1) * 8 + (lane & 7)) * ld + n0 + (lane >> 4) * 8);
}

__device__ inline uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// The A operand of k-slab kk from accumulator tiles c[8-column block][4] (P or dS of a warp).
template <int kBlocks>
__device__ inline void accumulators_to_a(uint32_t (&a)[4], const float (&c)[kBlocks][4], int kk) {
  a[0] = pack_bf16(c[2 * kk][0], c[2 * kk][1]);
  a[1] = pack_bf16(c[2 * kk][2], c[2 * kk][3]);
  a[2] = pack_bf16(c[2 * kk + 1][0], c[2 * kk + 1][1]);
  a[3] = pack_bf16(c[2 * kk + 1][2], c[2 * kk + 1][3]);
}

// Asynchronous global -> shared copies (cp.async, sm_80+): `bytes` bytes, or zeros when !valid
// (the source is then not read). A group is what was issued since the last commit; wait<N>
// returns when at most the N most recent groups are still in flight.
__device__ inline void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_address(dst)), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}

__device__ inline void cp_async4(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_address(dst)), "l"(src),
               "r"(valid ? 4 : 0)
               : "memory");
}

__device__ inline void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

template <int N>
__device__ inline void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// Starts copying rows [row0, row0 + kRows) of one head of a [B, T, H, D] bf16 tensor into shared
// memory (row stride D + kPad) in 16-byte pieces; rows at or past T become zeros.
template <int D, int kRows>
__device__ inline void load_tile(bf16* dst, const bf16* __restrict__ src, int64_t b, int64_t t,
                                 int64_t heads, int64_t head, int64_t row0) {
  constexpr int kPieces = D / 8;
#pragma unroll
  for (int n = 0; n < (kRows * kPieces + kThreads - 1) / kThreads; ++n) {
    const int idx = threadIdx.x + n * kThreads;
    if ((kRows * kPieces) % kThreads != 0 && idx >= kRows * kPieces) break;
    const int r = idx / kPieces, c = idx % kPieces;
    const int64_t i = row0 + r;
    const bool valid = i < t;
    cp_async16(dst + r * (D + kPad) + c * 8,
               valid ? src + ((b * t + i) * heads + head) * D + c * 8 : src, valid);
  }
}

__device__ inline float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(kFullMask, x, 1));
  return fmaxf(x, __shfl_xor_sync(kFullMask, x, 2));
}

__device__ inline float quad_sum(float x) {
  x += __shfl_xor_sync(kFullMask, x, 1);
  return x + __shfl_xor_sync(kFullMask, x, 2);
}

// Stores a warp's 16 x D accumulator tile (times `scale`) as bf16 rows row_lo and row_lo + 8 of
// one head of a [B, T, H, D] tensor; rows at or past T are not written.
template <int D>
__device__ inline void store_rows(bf16* __restrict__ dst, const float (&acc)[D / 8][4], float scale_lo,
                                  float scale_hi, int64_t b, int64_t t, int64_t heads, int64_t head,
                                  int64_t row_lo, int lane) {
  const int col = 2 * (lane & 3);
  for (int half = 0; half < 2; ++half) {
    const int64_t i = row_lo + 8 * half;
    if (i >= t) continue;
    const float s = half == 0 ? scale_lo : scale_hi;
    bf16* row = dst + ((b * t + i) * heads + head) * D;
#pragma unroll
    for (int nd = 0; nd < D / 8; ++nd)
      *reinterpret_cast<uint32_t*>(row + nd * 8 + col) =
          pack_bf16(acc[nd][2 * half] * s, acc[nd][2 * half + 1] * s);
  }
}

// ---- forward ---------------------------------------------------------------------------------
template <int D>
__global__ void __launch_bounds__(kThreads)
    fused_fwd_kernel(int64_t t, int64_t hq, int64_t hkv, float scale, const bf16* __restrict__ q,
                     const bf16* __restrict__ k, const bf16* __restrict__ v,
                     const float* __restrict__ slopes, bf16* __restrict__ out,
                     float* __restrict__ lse) {
  constexpr int kLd = D + kPad, kSlabs = D / 16, kNd = D / 8, kNb = kKeyTile / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* qs = reinterpret_cast<bf16*>(smem_raw);
  bf16* kv = qs + kBlockRows * kLd;  // two buffers of [K tile; V tile]
  const int64_t b = blockIdx.y / hq, h = blockIdx.y % hq, g = h / (hq / hkv);
  const int64_t i0 = static_cast<int64_t>(gridDim.x - 1 - blockIdx.x) * kBlockRows;  // longest first
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, quad_col = 2 * (lane & 3);
  const float slope2 = (slopes != nullptr ? slopes[h] : 0.0f) * kLog2e, scale2 = scale * kLog2e;
  const int64_t row[2] = {i0 + warp * 16 + lane / 4, i0 + warp * 16 + lane / 4 + 8};
  const int64_t block_last = (i0 + kBlockRows < t ? i0 + kBlockRows : t) - 1;
  const int64_t warp_last = i0 + warp * 16 + 15;
  const int64_t tiles = block_last / kKeyTile + 1;
  auto fetch = [&](int64_t n) {  // key tile n into buffer n % 2
    bf16* dst = kv + (n & 1) * 2 * kKeyTile * kLd;
    load_tile<D, kKeyTile>(dst, k, b, t, hkv, g, n * kKeyTile);
    load_tile<D, kKeyTile>(dst + kKeyTile * kLd, v, b, t, hkv, g, n * kKeyTile);
  };

  load_tile<D, kBlockRows>(qs, q, b, t, hq, h, i0);
  cp_async_commit();
  fetch(0);
  cp_async_commit();
  cp_async_wait<1>();  // q is in
  __syncthreads();
  uint32_t qa[kSlabs][4];
#pragma unroll
  for (int s = 0; s < kSlabs; ++s) load_a(qa[s], qs, kLd, warp * 16, s * 16, lane);

  float m[2] = {negative_infinity<float>(), negative_infinity<float>()}, l[2] = {0.0f, 0.0f};
  float o[kNd][4];
#pragma unroll
  for (int nd = 0; nd < kNd; ++nd) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;

  for (int64_t n = 0; n < tiles; ++n) {
    const int64_t j0 = n * kKeyTile;
    const bf16* ks = kv + (n & 1) * 2 * kKeyTile * kLd;
    const bf16* vs = ks + kKeyTile * kLd;
    __syncthreads();  // tile n - 1 is consumed: its buffer may be refilled
    if (n + 1 < tiles) fetch(n + 1);
    cp_async_commit();
    cp_async_wait<1>();  // tile n is in
    __syncthreads();
    if (j0 > warp_last) continue;  // every key after every row of this warp (warp-uniform)

    float sc[kNb][4];
#pragma unroll
    for (int nb = 0; nb < kNb; ++nb) sc[nb][0] = sc[nb][1] = sc[nb][2] = sc[nb][3] = 0.0f;
#pragma unroll
    for (int s = 0; s < kSlabs; ++s) {
#pragma unroll
      for (int nb = 0; nb < kNb; nb += 2) {
        uint32_t bk[4];
        load_b_nk(bk, ks, kLd, nb * 8, s * 16, lane);
        mma(sc[nb], qa[s], bk[0], bk[1]);
        mma(sc[nb + 1], qa[s], bk[2], bk[3]);
      }
    }
    // Scale, ALiBi, causal mask; the tile's row maxima.
    float tile_max[2] = {negative_infinity<float>(), negative_infinity<float>()};
#pragma unroll
    for (int nb = 0; nb < kNb; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t i = row[e >> 1], j = j0 + nb * 8 + quad_col + (e & 1);
        const float x = j <= i ? fmaf(sc[nb][e], scale2, -slope2 * static_cast<float>(i - j))
                               : negative_infinity<float>();
        sc[nb][e] = x;
        tile_max[e >> 1] = fmaxf(tile_max[e >> 1], x);
      }
    }
    float factor[2], tile_sum[2] = {0.0f, 0.0f};
#pragma unroll
    for (int r = 0; r < 2; ++r) factor[r] = online_softmax_rescale2(m[r], quad_max(tile_max[r]));
#pragma unroll
    for (int nb = 0; nb < kNb; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = sc[nb][e] == negative_infinity<float>() ? 0.0f : exp2f(sc[nb][e] - m[e >> 1]);
        sc[nb][e] = p;
        tile_sum[e >> 1] += p;
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) l[r] = l[r] * factor[r] + tile_sum[r];
#pragma unroll
    for (int nd = 0; nd < kNd; ++nd) {
      o[nd][0] *= factor[0];
      o[nd][1] *= factor[0];
      o[nd][2] *= factor[1];
      o[nd][3] *= factor[1];
    }
    // O += P V (P rounded to bf16).
#pragma unroll
    for (int kk = 0; kk < kKeyTile / 16; ++kk) {
      uint32_t pa[4];
      accumulators_to_a(pa, sc, kk);
#pragma unroll
      for (int nd = 0; nd < kNd; nd += 2) {
        uint32_t bv[4];
        load_b_kn(bv, vs, kLd, kk * 16, nd * 8, lane);
        mma(o[nd], pa, bv[0], bv[1]);
        mma(o[nd + 1], pa, bv[2], bv[3]);
      }
    }
  }
  float sum[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) sum[r] = quad_sum(l[r]);  // the quad's lanes share m[r]
  store_rows<D>(out, o, 1.0f / sum[0], 1.0f / sum[1], b, t, hq, h, row[0], lane);
  if ((lane & 3) == 0) {
#pragma unroll
    for (int r = 0; r < 2; ++r)
      if (row[r] < t) lse[(b * hq + h) * t + row[r]] = m[r] * kLn2 + logf(sum[r]);
  }
}

// ---- backward: dq ----------------------------------------------------------------------------
template <int D>
__global__ void __launch_bounds__(kThreads)
    fused_dq_kernel(int64_t t, int64_t hq, int64_t hkv, float scale, const bf16* __restrict__ q,
                    const bf16* __restrict__ k, const bf16* __restrict__ v,
                    const float* __restrict__ slopes, const float* __restrict__ lse,
                    const float* __restrict__ delta, const bf16* __restrict__ dout,
                    bf16* __restrict__ dq) {
  constexpr int kLd = D + kPad, kSlabs = D / 16, kNd = D / 8, kNb = kKeyTile / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* qs = reinterpret_cast<bf16*>(smem_raw);
  bf16* dos = qs + kBlockRows * kLd;
  bf16* kv = dos + kBlockRows * kLd;  // two buffers of [K tile; V tile]
  const int64_t b = blockIdx.y / hq, h = blockIdx.y % hq, g = h / (hq / hkv);
  const int64_t i0 = static_cast<int64_t>(gridDim.x - 1 - blockIdx.x) * kBlockRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, quad_col = 2 * (lane & 3);
  const float slope2 = (slopes != nullptr ? slopes[h] : 0.0f) * kLog2e, scale2 = scale * kLog2e;
  const int64_t row[2] = {i0 + warp * 16 + lane / 4, i0 + warp * 16 + lane / 4 + 8};
  float row_lse2[2], row_delta[2];  // lse in base-2 units
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    row_lse2[r] = row[r] < t ? lse[(b * hq + h) * t + row[r]] * kLog2e : 0.0f;
    row_delta[r] = row[r] < t ? delta[(b * hq + h) * t + row[r]] : 0.0f;
  }

  const int64_t block_last = (i0 + kBlockRows < t ? i0 + kBlockRows : t) - 1;
  const int64_t warp_last = i0 + warp * 16 + 15;
  const int64_t tiles = block_last / kKeyTile + 1;
  auto fetch = [&](int64_t n) {  // key tile n into buffer n % 2
    bf16* dst = kv + (n & 1) * 2 * kKeyTile * kLd;
    load_tile<D, kKeyTile>(dst, k, b, t, hkv, g, n * kKeyTile);
    load_tile<D, kKeyTile>(dst + kKeyTile * kLd, v, b, t, hkv, g, n * kKeyTile);
  };
  load_tile<D, kBlockRows>(qs, q, b, t, hq, h, i0);
  load_tile<D, kBlockRows>(dos, dout, b, t, hq, h, i0);
  cp_async_commit();
  fetch(0);
  cp_async_commit();
  cp_async_wait<1>();  // q and dout are in
  __syncthreads();
  uint32_t qa[kSlabs][4];
#pragma unroll
  for (int s = 0; s < kSlabs; ++s) load_a(qa[s], qs, kLd, warp * 16, s * 16, lane);
  float acc[kNd][4];
#pragma unroll
  for (int nd = 0; nd < kNd; ++nd) acc[nd][0] = acc[nd][1] = acc[nd][2] = acc[nd][3] = 0.0f;

  for (int64_t n = 0; n < tiles; ++n) {
    const int64_t j0 = n * kKeyTile;
    const bf16* ks = kv + (n & 1) * 2 * kKeyTile * kLd;
    const bf16* vs = ks + kKeyTile * kLd;
    __syncthreads();  // tile n - 1 is consumed
    if (n + 1 < tiles) fetch(n + 1);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if (j0 > warp_last) continue;

    float sc[kNb][4], dp[kNb][4];
#pragma unroll
    for (int nb = 0; nb < kNb; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) sc[nb][e] = dp[nb][e] = 0.0f;
#pragma unroll
    for (int s = 0; s < kSlabs; ++s) {
      uint32_t da[4];
      load_a(da, dos, kLd, warp * 16, s * 16, lane);
#pragma unroll
      for (int nb = 0; nb < kNb; nb += 2) {
        uint32_t bk[4], bv[4];
        load_b_nk(bk, ks, kLd, nb * 8, s * 16, lane);
        mma(sc[nb], qa[s], bk[0], bk[1]);
        mma(sc[nb + 1], qa[s], bk[2], bk[3]);
        load_b_nk(bv, vs, kLd, nb * 8, s * 16, lane);
        mma(dp[nb], da, bv[0], bv[1]);
        mma(dp[nb + 1], da, bv[2], bv[3]);
      }
    }
    // dS = P (dP - delta), P = exp(score - lse); masked entries are 0.
#pragma unroll
    for (int nb = 0; nb < kNb; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        const int64_t i = row[r], j = j0 + nb * 8 + quad_col + (e & 1);
        const float p =
            j <= i ? exp2f(fmaf(sc[nb][e], scale2, -fmaf(slope2, static_cast<float>(i - j), row_lse2[r])))
                   : 0.0f;
        sc[nb][e] = p * (dp[nb][e] - row_delta[r]);
      }
    }
    // dq += dS K (dS rounded to bf16; the 1/sqrt(D) at the end).
#pragma unroll
    for (int kk = 0; kk < kKeyTile / 16; ++kk) {
      uint32_t dsa[4];
      accumulators_to_a(dsa, sc, kk);
#pragma unroll
      for (int nd = 0; nd < kNd; nd += 2) {
        uint32_t bk[4];
        load_b_kn(bk, ks, kLd, kk * 16, nd * 8, lane);
        mma(acc[nd], dsa, bk[0], bk[1]);
        mma(acc[nd + 1], dsa, bk[2], bk[3]);
      }
    }
  }
  store_rows<D>(dq, acc, scale, scale, b, t, hq, h, row[0], lane);
}

// ---- backward: dk, dv ------------------------------------------------------------------------
template <int D>
__global__ void __launch_bounds__(kThreads)
    fused_dkv_kernel(int64_t t, int64_t hq, int64_t hkv, float scale, const bf16* __restrict__ q,
                     const bf16* __restrict__ k, const bf16* __restrict__ v,
                     const float* __restrict__ slopes, const float* __restrict__ lse,
                     const float* __restrict__ delta, const bf16* __restrict__ dout,
                     bf16* __restrict__ dk, bf16* __restrict__ dv) {
  constexpr int kLd = D + kPad, kSlabs = D / 16, kNd = D / 8, kNb = kQueryTile / 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* ks = reinterpret_cast<bf16*>(smem_raw);
  bf16* vs = ks + kBlockRows * kLd;
  // Two buffers of [Q tile; dO tile; lse (kQueryTile floats); delta (kQueryTile floats)].
  constexpr int kBufferElems = 2 * kQueryTile * kLd + 4 * kQueryTile;
  bf16* qbuf = vs + kBlockRows * kLd;
  const int64_t b = blockIdx.y / hkv, g = blockIdx.y % hkv, group = hq / hkv;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kBlockRows;  // the longest first
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, quad_col = 2 * (lane & 3);
  const int64_t key[2] = {j0 + warp * 16 + lane / 4, j0 + warp * 16 + lane / 4 + 8};
  const int64_t warp_first = j0 + warp * 16;
  // The query tiles: for each query head of the group, rows j0, j0 + kQueryTile, ... < T.
  const int64_t per_head = (t - j0 + kQueryTile - 1) / kQueryTile, tiles = group * per_head;
  auto fetch = [&](int64_t n) {  // query tile n into buffer n % 2
    const int64_t h = g * group + n / per_head, i0 = j0 + (n % per_head) * kQueryTile;
    bf16* dst = qbuf + (n & 1) * kBufferElems;
    load_tile<D, kQueryTile>(dst, q, b, t, hq, h, i0);
    load_tile<D, kQueryTile>(dst + kQueryTile * kLd, dout, b, t, hq, h, i0);
    float* stats = reinterpret_cast<float*>(dst + 2 * kQueryTile * kLd);
    if (threadIdx.x < 2 * kQueryTile) {
      const int c = threadIdx.x % kQueryTile;
      const int64_t i = i0 + c;
      const float* src = threadIdx.x < kQueryTile ? lse : delta;
      cp_async4(stats + threadIdx.x, i < t ? src + (b * hq + h) * t + i : src, i < t);
    }
  };

  load_tile<D, kBlockRows>(ks, k, b, t, hkv, g, j0);
  load_tile<D, kBlockRows>(vs, v, b, t, hkv, g, j0);
  cp_async_commit();
  fetch(0);
  cp_async_commit();
  float dk_acc[kNd][4], dv_acc[kNd][4];
#pragma unroll
  for (int nd = 0; nd < kNd; ++nd)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk_acc[nd][e] = dv_acc[nd][e] = 0.0f;

  {
    for (int64_t n = 0; n < tiles; ++n) {
      const int64_t h = g * group + n / per_head, i0 = j0 + (n % per_head) * kQueryTile;
      const float slope2 = (slopes != nullptr ? slopes[h] : 0.0f) * kLog2e, scale2 = scale * kLog2e;
      const bf16* qs = qbuf + (n & 1) * kBufferElems;
      const bf16* dos = qs + kQueryTile * kLd;
      const float* lse_s = reinterpret_cast<const float*>(dos + kQueryTile * kLd);
      const float* delta_s = lse_s + kQueryTile;
      __syncthreads();  // tile n - 1 is consumed: its buffer may be refilled
      if (n + 1 < tiles) fetch(n + 1);
      cp_async_commit();
      cp_async_wait<1>();  // k, v and tile n are in
      __syncthreads();
      if (i0 + kQueryTile - 1 < warp_first) continue;  // every query before every key of the warp

      float sc[kNb][4], dp[kNb][4];
#pragma unroll
      for (int nb = 0; nb < kNb; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) sc[nb][e] = dp[nb][e] = 0.0f;
#pragma unroll
      for (int s = 0; s < kSlabs; ++s) {
        uint32_t ka[4], va[4];
        load_a(ka, ks, kLd, warp * 16, s * 16, lane);
        load_a(va, vs, kLd, warp * 16, s * 16, lane);
#pragma unroll
        for (int nb = 0; nb < kNb; nb += 2) {
          uint32_t bq[4], bd[4];
          load_b_nk(bq, qs, kLd, nb * 8, s * 16, lane);
          mma(sc[nb], ka, bq[0], bq[1]);
          mma(sc[nb + 1], ka, bq[2], bq[3]);
          load_b_nk(bd, dos, kLd, nb * 8, s * 16, lane);
          mma(dp[nb], va, bd[0], bd[1]);
          mma(dp[nb + 1], va, bd[2], bd[3]);
        }
      }
      // P^T and dS^T; rows are keys, columns queries.
#pragma unroll
      for (int nb = 0; nb < kNb; ++nb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int c = nb * 8 + quad_col + (e & 1);
          const int64_t j = key[e >> 1], i = i0 + c;
          const float p = j <= i && i < t
                              ? exp2f(fmaf(sc[nb][e], scale2,
                                           -fmaf(slope2, static_cast<float>(i - j), lse_s[c] * kLog2e)))
                              : 0.0f;
          sc[nb][e] = p;
          dp[nb][e] = p * (dp[nb][e] - delta_s[c]);
        }
      }
      // dv += P^T dO, dk += dS^T Q (both rounded to bf16; dk's 1/sqrt(D) at the end).
#pragma unroll
      for (int kk = 0; kk < kQueryTile / 16; ++kk) {
        uint32_t pa[4], dsa[4];
        accumulators_to_a(pa, sc, kk);
        accumulators_to_a(dsa, dp, kk);
#pragma unroll
        for (int nd = 0; nd < kNd; nd += 2) {
          uint32_t bd[4], bq[4];
          load_b_kn(bd, dos, kLd, kk * 16, nd * 8, lane);
          mma(dv_acc[nd], pa, bd[0], bd[1]);
          mma(dv_acc[nd + 1], pa, bd[2], bd[3]);
          load_b_kn(bq, qs, kLd, kk * 16, nd * 8, lane);
          mma(dk_acc[nd], dsa, bq[0], bq[1]);
          mma(dk_acc[nd + 1], dsa, bq[2], bq[3]);
        }
      }
    }
  }
  store_rows<D>(dk, dk_acc, scale, scale, b, t, hkv, g, key[0], lane);
  store_rows<D>(dv, dv_acc, 1.0f, 1.0f, b, t, hkv, g, key[0], lane);
}

void check_fused_shape(int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d, const void* const* ptrs,
                       int n_ptrs) {
  bool aligned = true;
  for (int i = 0; i < n_ptrs; ++i) aligned = aligned && reinterpret_cast<uintptr_t>(ptrs[i]) % 16 == 0;
  if (b <= 0 || t <= 0 || hq <= 0 || hkv <= 0 || hq % hkv != 0 || !attention_fused_supported(d) ||
      b * hq > 65535 || (t + kBlockRows - 1) / kBlockRows > 2147483647LL || !aligned)
    throw std::invalid_argument("cuda::attention_*_fused: bad shape B=" + std::to_string(b) +
                                " T=" + std::to_string(t) + " Hq=" + std::to_string(hq) +
                                " Hkv=" + std::to_string(hkv) + " D=" + std::to_string(d) +
                                (aligned ? "" : " (a tensor is not 16-byte aligned)") +
                                " (need Hq % Hkv == 0, B * Hq <= 65535, D in {16, 32, 64, 128}, "
                                "16-byte aligned tensors)");
}

template <typename Kernel, typename... Args>
void launch(Kernel kernel, dim3 grid, std::size_t smem, cudaStream_t stream, Args... args) {
  launch_with_smem(kernel, grid, kThreads, smem, stream, args...);
}

// Calls f(std::integral_constant<int, D>) for the supported head dimensions.
template <typename F>
void dispatch_head_dim(int64_t d, F&& f) {
  switch (d) {
    case 16: f(std::integral_constant<int, 16>{}); break;
    case 32: f(std::integral_constant<int, 32>{}); break;
    case 64: f(std::integral_constant<int, 64>{}); break;
    default: f(std::integral_constant<int, 128>{}); break;
  }
}

std::size_t tile_bytes(int rows, int64_t d) { return sizeof(bf16) * static_cast<std::size_t>(rows * (d + kPad)); }

}  // namespace

bool attention_fused_supported(int64_t d) { return d == 16 || d == 32 || d == 64 || d == 128; }

void attention_fwd_fused(int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d, const bf16* q,
                         const bf16* k, const bf16* v, const float* alibi_slopes, bf16* out,
                         float* lse_bht, cudaStream_t stream) {
  const void* ptrs[] = {q, k, v, out};
  check_fused_shape(b, t, hq, hkv, d, ptrs, 4);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const dim3 grid(static_cast<unsigned>((t + kBlockRows - 1) / kBlockRows), static_cast<unsigned>(b * hq));
  const std::size_t smem = tile_bytes(kBlockRows, d) + 4 * tile_bytes(kKeyTile, d);  // q; 2 x (k, v)
  dispatch_head_dim(d, [&](auto dim) {
    launch(fused_fwd_kernel<decltype(dim)::value>, grid, smem, stream, t, hq, hkv, scale, q, k, v,
           alibi_slopes, out, lse_bht);
  });
}

void attention_bwd_fused(int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d, const bf16* q,
                         const bf16* k, const bf16* v, const float* alibi_slopes, const bf16* out,
                         const float* lse_bht, const bf16* dout, bf16* dq, bf16* dk, bf16* dv,
                         void* workspace, cudaStream_t stream) {
  const void* ptrs[] = {q, k, v, out, dout, dq, dk, dv};
  check_fused_shape(b, t, hq, hkv, d, ptrs, 8);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  float* delta = static_cast<float*>(workspace);
  attention_delta(b, t, hq, d, out, dout, delta, stream);
  const unsigned tiles = static_cast<unsigned>((t + kBlockRows - 1) / kBlockRows);
  // dq: q, dout; 2 x (k, v). dk, dv: k, v; 2 x (q, dout, lse, delta).
  const std::size_t smem_q = 2 * tile_bytes(kBlockRows, d) + 4 * tile_bytes(kKeyTile, d);
  const std::size_t smem_kv = 2 * tile_bytes(kBlockRows, d) +
                              2 * (2 * tile_bytes(kQueryTile, d) + 2 * kQueryTile * sizeof(float));
  dispatch_head_dim(d, [&](auto dim) {
    constexpr int D = decltype(dim)::value;
    launch(fused_dq_kernel<D>, dim3(tiles, static_cast<unsigned>(b * hq)), smem_q, stream, t, hq,
           hkv, scale, q, k, v, alibi_slopes, lse_bht, static_cast<const float*>(delta), dout, dq);
    launch(fused_dkv_kernel<D>, dim3(tiles, static_cast<unsigned>(b * hkv)), smem_kv, stream, t,
           hq, hkv, scale, q, k, v, alibi_slopes, lse_bht, static_cast<const float*>(delta), dout,
           dk, dv);
  });
}

}  // namespace loom::kernels::cuda
