// Causal GQA attention, forward and backward: see attention.h.
//
// Work decomposition (all kernels): a block of 4 warps owns 16 rows (query rows in the forward
// and dq kernels, key rows in the dk/dv kernel), 4 per warp, and streams 32-row tiles of the
// other operand through shared memory. Within a tile, lane l takes row l of the tile for the
// dot products (q.k, dout.v): each lane reads its own row (stride D + 1 floats, so the 32 lanes
// hit 32 different banks) against a row broadcast to the warp; then the 32 per-lane
// probabilities are broadcast back with __shfl_sync and each lane accumulates the output
// elements d = lane + 32 c it owns. The per-element softmax arithmetic is numerics.h's.
#include "kernels/cuda/attention.h"

#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cpu/numerics.h"
#include "kernels/cuda/bf16_bits.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/gemm.h"

namespace loom::kernels::cuda {

namespace {

constexpr int kTile = 32;        // rows of the streamed operand per tile (one per lane)
constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 4;
constexpr int kBlockRows = kWarps * kRowsPerWarp;  // owned rows per block
constexpr int kThreads = kWarps * 32;
constexpr unsigned kFullMask = 0xffffffffu;

__device__ inline float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(kFullMask, x, o));
  return x;
}

__device__ inline float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(kFullMask, x, o);
  return x;
}

// a . b over D floats (a broadcast to the warp, b this lane's own row).
__device__ inline float dot_row(const float* a, const float* b, int d) {
  float s = 0.0f;
  for (int k = 0; k < d; ++k) s = fmaf(a[k], b[k], s);
  return s;
}

// Copies rows [row0, row0 + rows) of one head of a [B, T, H, D] bf16 tensor into shared memory
// with row stride `stride` floats; rows at or past T read as zero.
__device__ inline void load_rows(float* dst, int stride, const __nv_bfloat16* src, int64_t b,
                                 int64_t t, int64_t heads, int64_t head, int d, int64_t row0,
                                 int rows) {
  for (int idx = threadIdx.x; idx < rows * d; idx += blockDim.x) {
    const int r = idx / d, k = idx % d;
    const int64_t i = row0 + r;
    dst[r * stride + k] = i < t ? load_bf16(src[((b * t + i) * heads + head) * d + k]) : 0.0f;
  }
}

// ---- forward ---------------------------------------------------------------------------------
template <int kChunks>
__global__ void __launch_bounds__(kThreads)
    attention_fwd_kernel(int64_t t, int64_t hq, int64_t hkv, int d, float scale,
                         const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                         const __nv_bfloat16* __restrict__ v, const float* __restrict__ slopes,
                         __nv_bfloat16* __restrict__ out, float* __restrict__ lse) {
  extern __shared__ float smem[];
  float* qs = smem;                       // [kBlockRows][d]
  float* ks = qs + kBlockRows * d;        // [kTile][d + 1]
  float* vs = ks + kTile * (d + 1);       // [kTile][d]
  const int64_t b = blockIdx.y / hq, h = blockIdx.y % hq, g = h / (hq / hkv);
  const int64_t i_base = static_cast<int64_t>(blockIdx.x) * kBlockRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float slope = slopes != nullptr ? slopes[h] : 0.0f;

  load_rows(qs, d, q, b, t, hq, h, d, i_base, kBlockRows);
  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][kChunks];
  for (int r = 0; r < kRowsPerWarp; ++r) {
    m[r] = negative_infinity<float>();
    l[r] = 0.0f;  // this lane's share of the row sum (all shares use the same running max)
    for (int c = 0; c < kChunks; ++c) acc[r][c] = 0.0f;
  }
  const int64_t i_last = (i_base + kBlockRows < t ? i_base + kBlockRows : t) - 1;
  for (int64_t j0 = 0; j0 <= i_last; j0 += kTile) {
    __syncthreads();  // the previous tile is consumed (and, first time, q is loaded)
    load_rows(ks, d + 1, k, b, t, hkv, g, d, j0, kTile);
    load_rows(vs, d, v, b, t, hkv, g, d, j0, kTile);
    __syncthreads();
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int row = warp * kRowsPerWarp + r;
      const int64_t i = i_base + row;
      if (i >= t || j0 > i) continue;  // uniform across the warp
      const int64_t j = j0 + lane;
      float s = negative_infinity<float>();
      if (j <= i) s = dot_row(qs + row * d, ks + lane * (d + 1), d) * scale - slope * float(i - j);
      const float tile_max = warp_max(s);  // key j0 <= i is unmasked: finite
      const float factor = online_softmax_rescale(m[r], tile_max);
      const float p = j <= i ? expf(s - m[r]) : 0.0f;
      l[r] = l[r] * factor + p;
      for (int c = 0; c < kChunks; ++c) acc[r][c] *= factor;
      for (int jj = 0; jj < kTile; ++jj) {
        const float pj = __shfl_sync(kFullMask, p, jj);
        for (int c = 0; c < kChunks; ++c) {
          const int dd = lane + 32 * c;
          if (dd < d) acc[r][c] = fmaf(pj, vs[jj * d + dd], acc[r][c]);
        }
      }
    }
  }
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t i = i_base + warp * kRowsPerWarp + r;
    if (i >= t) continue;
    const float sum = warp_sum(l[r]);
    const float inv = 1.0f / sum;
    for (int c = 0; c < kChunks; ++c) {
      const int dd = lane + 32 * c;
      if (dd < d) out[((b * t + i) * hq + h) * d + dd] = make_bf16(acc[r][c] * inv);
    }
    if (lane == 0) lse[(b * hq + h) * t + i] = m[r] + logf(sum);
  }
}

// ---- backward: delta_i = dout_i . out_i ------------------------------------------------------
__global__ void attention_delta_kernel(int64_t rows, int64_t t, int64_t hq, int d,
                                       const __nv_bfloat16* __restrict__ out,
                                       const __nv_bfloat16* __restrict__ dout,
                                       float* __restrict__ delta) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;  // uniform across the warp
  // row indexes [B, T, Hq] (the layout of out); delta is stored [B, Hq, T] like lse.
  const int64_t h = row % hq, i = (row / hq) % t, b = row / (hq * t);
  float s = 0.0f;
  for (int k = lane; k < d; k += 32) s = fmaf(load_bf16(out[row * d + k]), load_bf16(dout[row * d + k]), s);
  s = warp_sum(s);
  if (lane == 0) delta[(b * hq + h) * t + i] = s;
}

// ---- backward: dq (query rows owned, key tiles streamed) --------------------------------------
template <int kChunks>
__global__ void __launch_bounds__(kThreads)
    attention_dq_kernel(int64_t t, int64_t hq, int64_t hkv, int d, float scale,
                        const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                        const __nv_bfloat16* __restrict__ v, const float* __restrict__ slopes,
                        const float* __restrict__ lse, const float* __restrict__ delta,
                        const __nv_bfloat16* __restrict__ dout, __nv_bfloat16* __restrict__ dq) {
  extern __shared__ float smem[];
  float* qs = smem;                        // [kBlockRows][d]
  float* dos = qs + kBlockRows * d;        // [kBlockRows][d]
  float* ks = dos + kBlockRows * d;        // [kTile][d + 1]
  float* vs = ks + kTile * (d + 1);        // [kTile][d + 1]
  const int64_t b = blockIdx.y / hq, h = blockIdx.y % hq, g = h / (hq / hkv);
  const int64_t i_base = static_cast<int64_t>(blockIdx.x) * kBlockRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float slope = slopes != nullptr ? slopes[h] : 0.0f;

  load_rows(qs, d, q, b, t, hq, h, d, i_base, kBlockRows);
  load_rows(dos, d, dout, b, t, hq, h, d, i_base, kBlockRows);
  float row_lse[kRowsPerWarp], row_delta[kRowsPerWarp], acc[kRowsPerWarp][kChunks];
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t i = i_base + warp * kRowsPerWarp + r;
    row_lse[r] = i < t ? lse[(b * hq + h) * t + i] : 0.0f;
    row_delta[r] = i < t ? delta[(b * hq + h) * t + i] : 0.0f;
    for (int c = 0; c < kChunks; ++c) acc[r][c] = 0.0f;
  }
  const int64_t i_last = (i_base + kBlockRows < t ? i_base + kBlockRows : t) - 1;
  for (int64_t j0 = 0; j0 <= i_last; j0 += kTile) {
    __syncthreads();
    load_rows(ks, d + 1, k, b, t, hkv, g, d, j0, kTile);
    load_rows(vs, d + 1, v, b, t, hkv, g, d, j0, kTile);
    __syncthreads();
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int row = warp * kRowsPerWarp + r;
      const int64_t i = i_base + row;
      if (i >= t || j0 > i) continue;
      const int64_t j = j0 + lane;
      float ds = 0.0f;
      if (j <= i) {
        const float s = dot_row(qs + row * d, ks + lane * (d + 1), d) * scale - slope * float(i - j);
        const float p = expf(s - row_lse[r]);
        const float dp = dot_row(dos + row * d, vs + lane * (d + 1), d);
        ds = p * (dp - row_delta[r]);
      }
      for (int jj = 0; jj < kTile; ++jj) {
        const float dsj = __shfl_sync(kFullMask, ds, jj);
        for (int c = 0; c < kChunks; ++c) {
          const int dd = lane + 32 * c;
          if (dd < d) acc[r][c] = fmaf(dsj, ks[jj * (d + 1) + dd], acc[r][c]);
        }
      }
    }
  }
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t i = i_base + warp * kRowsPerWarp + r;
    if (i >= t) continue;
    for (int c = 0; c < kChunks; ++c) {
      const int dd = lane + 32 * c;
      if (dd < d) dq[((b * t + i) * hq + h) * d + dd] = make_bf16(acc[r][c] * scale);
    }
  }
}

// ---- backward: dk, dv (key rows owned, query tiles of every head of the group streamed) ------
template <int kChunks>
__global__ void __launch_bounds__(kThreads)
    attention_dkv_kernel(int64_t t, int64_t hq, int64_t hkv, int d, float scale,
                         const __nv_bfloat16* __restrict__ q, const __nv_bfloat16* __restrict__ k,
                         const __nv_bfloat16* __restrict__ v, const float* __restrict__ slopes,
                         const float* __restrict__ lse, const float* __restrict__ delta,
                         const __nv_bfloat16* __restrict__ dout, __nv_bfloat16* __restrict__ dk,
                         __nv_bfloat16* __restrict__ dv) {
  extern __shared__ float smem[];
  float* ksh = smem;                        // [kBlockRows][d]   owned key rows
  float* vsh = ksh + kBlockRows * d;        // [kBlockRows][d]
  float* qt = vsh + kBlockRows * d;         // [kTile][d + 1]    streamed query rows
  float* dot = qt + kTile * (d + 1);        // [kTile][d + 1]    their output gradients
  float* lse_t = dot + kTile * (d + 1);     // [kTile]
  float* delta_t = lse_t + kTile;           // [kTile]
  const int64_t b = blockIdx.y / hkv, g = blockIdx.y % hkv;
  const int64_t group = hq / hkv;
  const int64_t j_base = static_cast<int64_t>(blockIdx.x) * kBlockRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  load_rows(ksh, d, k, b, t, hkv, g, d, j_base, kBlockRows);
  load_rows(vsh, d, v, b, t, hkv, g, d, j_base, kBlockRows);
  float dk_acc[kRowsPerWarp][kChunks], dv_acc[kRowsPerWarp][kChunks];
  for (int r = 0; r < kRowsPerWarp; ++r)
    for (int c = 0; c < kChunks; ++c) dk_acc[r][c] = dv_acc[r][c] = 0.0f;

  for (int64_t hh = 0; hh < group; ++hh) {
    const int64_t h = g * group + hh;
    const float slope = slopes != nullptr ? slopes[h] : 0.0f;
    // Query tiles from the one holding j_base (earlier queries see none of these keys).
    for (int64_t i0 = (j_base / kTile) * kTile; i0 < t; i0 += kTile) {
      __syncthreads();
      load_rows(qt, d + 1, q, b, t, hq, h, d, i0, kTile);
      load_rows(dot, d + 1, dout, b, t, hq, h, d, i0, kTile);
      if (threadIdx.x < kTile) {
        const int64_t i = i0 + threadIdx.x;
        lse_t[threadIdx.x] = i < t ? lse[(b * hq + h) * t + i] : 0.0f;
        delta_t[threadIdx.x] = i < t ? delta[(b * hq + h) * t + i] : 0.0f;
      }
      __syncthreads();
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const int row = warp * kRowsPerWarp + r;
        const int64_t j = j_base + row;
        if (j >= t || i0 + kTile - 1 < j) continue;  // uniform: no query of the tile sees key j
        const int64_t i = i0 + lane;
        float p = 0.0f, ds = 0.0f;
        if (i < t && i >= j) {
          const float s = dot_row(ksh + row * d, qt + lane * (d + 1), d) * scale - slope * float(i - j);
          p = expf(s - lse_t[lane]);
          const float dp = dot_row(vsh + row * d, dot + lane * (d + 1), d);
          ds = p * (dp - delta_t[lane]);
        }
        for (int ii = 0; ii < kTile; ++ii) {
          const float pi = __shfl_sync(kFullMask, p, ii);
          const float dsi = __shfl_sync(kFullMask, ds, ii);
          for (int c = 0; c < kChunks; ++c) {
            const int dd = lane + 32 * c;
            if (dd < d) {
              dv_acc[r][c] = fmaf(pi, dot[ii * (d + 1) + dd], dv_acc[r][c]);
              dk_acc[r][c] = fmaf(dsi, qt[ii * (d + 1) + dd], dk_acc[r][c]);
            }
          }
        }
      }
    }
  }
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int64_t j = j_base + warp * kRowsPerWarp + r;
    if (j >= t) continue;
    for (int c = 0; c < kChunks; ++c) {
      const int dd = lane + 32 * c;
      if (dd < d) {
        const int64_t at = ((b * t + j) * hkv + g) * d + dd;
        dk[at] = make_bf16(dk_acc[r][c] * scale);
        dv[at] = make_bf16(dv_acc[r][c]);
      }
    }
  }
}

void check_shape(int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d) {
  if (b <= 0 || t <= 0 || hq <= 0 || hkv <= 0 || d <= 0 || hq % hkv != 0 ||
      d > kAttentionMaxHeadDim || b * hq > 2147483647LL || (t + kBlockRows - 1) / kBlockRows > 2147483647LL)
    throw std::invalid_argument("cuda::attention: bad shape B=" + std::to_string(b) +
                                " T=" + std::to_string(t) + " Hq=" + std::to_string(hq) +
                                " Hkv=" + std::to_string(hkv) + " D=" + std::to_string(d) +
                                " (need Hq % Hkv == 0, 0 < D <= 256)");
}

template <typename Kernel, typename... Args>
void launch(Kernel kernel, dim3 grid, std::size_t smem, cudaStream_t stream, Args... args) {
  launch_with_smem(kernel, grid, kThreads, smem, stream, args...);
}

// Calls f(std::integral_constant<int, C>) with C = ceil(d / 32) in 1..8.
template <typename F>
void dispatch_chunks(int64_t d, F&& f) {
  switch ((d + 31) / 32) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 5: f(std::integral_constant<int, 5>{}); break;
    case 6: f(std::integral_constant<int, 6>{}); break;
    case 7: f(std::integral_constant<int, 7>{}); break;
    default: f(std::integral_constant<int, 8>{}); break;
  }
}

}  // namespace

void attention_fwd(int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d,
                   const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                   const float* alibi_slopes, __nv_bfloat16* out, float* lse_bht,
                   cudaStream_t stream) {
  check_shape(b, t, hq, hkv, d);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const dim3 grid(static_cast<unsigned>((t + kBlockRows - 1) / kBlockRows), static_cast<unsigned>(b * hq));
  const std::size_t smem = sizeof(float) * (kBlockRows * d + kTile * (d + 1) + kTile * d);
  const int di = static_cast<int>(d);
  dispatch_chunks(d, [&](auto chunks) {
    launch(attention_fwd_kernel<decltype(chunks)::value>, grid, smem, stream, t, hq, hkv, di,
           scale, q, k, v, alibi_slopes, out, lse_bht);
  });
}

std::size_t attention_bwd_workspace_bytes(int64_t b, int64_t t, int64_t hq) {
  return sizeof(float) * static_cast<std::size_t>(b * hq * t);
}

void attention_delta(int64_t b, int64_t t, int64_t hq, int64_t d, const __nv_bfloat16* out,
                     const __nv_bfloat16* dout, float* delta, cudaStream_t stream) {
  const int64_t rows = b * t * hq;
  constexpr int kDeltaWarps = 8;
  attention_delta_kernel<<<static_cast<unsigned>((rows + kDeltaWarps - 1) / kDeltaWarps),
                           kDeltaWarps * 32, 0, stream>>>(rows, t, hq, static_cast<int>(d), out,
                                                          dout, delta);
  LOOM_CUDA_CHECK_LAUNCH();
}

void attention_bwd(int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d,
                   const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                   const float* alibi_slopes, const __nv_bfloat16* out, const float* lse_bht,
                   const __nv_bfloat16* dout, __nv_bfloat16* dq, __nv_bfloat16* dk,
                   __nv_bfloat16* dv, void* workspace, cudaStream_t stream) {
  check_shape(b, t, hq, hkv, d);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int di = static_cast<int>(d);
  float* delta = static_cast<float*>(workspace);
  attention_delta(b, t, hq, d, out, dout, delta, stream);

  const dim3 grid_q(static_cast<unsigned>((t + kBlockRows - 1) / kBlockRows), static_cast<unsigned>(b * hq));
  const std::size_t smem_q = sizeof(float) * (2 * kBlockRows * d + 2 * kTile * (d + 1));
  const dim3 grid_kv(static_cast<unsigned>((t + kBlockRows - 1) / kBlockRows), static_cast<unsigned>(b * hkv));
  const std::size_t smem_kv = sizeof(float) * (2 * kBlockRows * d + 2 * kTile * (d + 1) + 2 * kTile);
  dispatch_chunks(d, [&](auto chunks) {
    constexpr int C = decltype(chunks)::value;
    launch(attention_dq_kernel<C>, grid_q, smem_q, stream, t, hq, hkv, di, scale, q, k, v,
           alibi_slopes, lse_bht, static_cast<const float*>(delta), dout, dq);
    launch(attention_dkv_kernel<C>, grid_kv, smem_kv, stream, t, hq, hkv, di, scale, q, k, v,
           alibi_slopes, lse_bht, static_cast<const float*>(delta), dout, dk, dv);
  });
}

// ---- the tensor-core (GEMM) path -----------------------------------------------------------------

namespace {

constexpr int kRowThreads = 256;

__device__ inline float block_reduce(float x, bool is_max, float* shared) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  x = is_max ? warp_max(x) : warp_sum(x);
  if (lane == 0) shared[warp] = x;
  __syncthreads();
  if (warp == 0) {
    float y = lane < static_cast<int>(blockDim.x / 32) ? shared[lane]
                                                       : (is_max ? negative_infinity<float>() : 0.f);
    y = is_max ? warp_max(y) : warp_sum(y);
    if (lane == 0) shared[0] = y;
  }
  __syncthreads();
  const float r = shared[0];
  __syncthreads();
  return r;
}

// One block per score row (kv head g of this call, query i): s_j = S_ij / sqrt(D) - slope (i - j)
// for j <= i; lse_i = log sum_j exp(s_j); P_ij = exp(s_j - lse_i) (0 above the diagonal).
// Query head h = g * group + r; lse is stored [B, Hq, T].
__global__ void __launch_bounds__(kRowThreads)
    softmax_rows_kernel(int64_t t, int64_t hq, int64_t group, int64_t r, int64_t bi, float scale,
                        const float* __restrict__ slopes, const float* __restrict__ s,
                        __nv_bfloat16* __restrict__ p, float* __restrict__ lse) {
  __shared__ float red[32];
  const int64_t row = blockIdx.x;  // g * t + i
  const int64_t g = row / t, i = row % t, h = g * group + r;
  const float slope = slopes != nullptr ? slopes[h] : 0.0f;
  const float* srow = s + row * t;
  float mx = negative_infinity<float>();
  for (int64_t j = threadIdx.x; j <= i; j += blockDim.x)
    mx = fmaxf(mx, srow[j] * scale - slope * float(i - j));
  mx = block_reduce(mx, true, red);
  float sum = 0.0f;
  for (int64_t j = threadIdx.x; j <= i; j += blockDim.x)
    sum += expf(srow[j] * scale - slope * float(i - j) - mx);
  sum = block_reduce(sum, false, red);
  const float l = mx + logf(sum);
  __nv_bfloat16* prow = p + row * t;
  for (int64_t j = threadIdx.x; j < t; j += blockDim.x)
    prow[j] = make_bf16(j <= i ? expf(srow[j] * scale - slope * float(i - j) - l) : 0.0f);
  if (threadIdx.x == 0) lse[(bi * hq + h) * t + i] = l;
}

// One block per score row (kv head g, query i), as softmax_rows_kernel: P = exp(s - lse_i)
// (recomputed in fp32 from S), dS = P (dP - delta_i); both rounded to bf16 for the GEMMs that
// follow; 0 above the diagonal.
__global__ void __launch_bounds__(kRowThreads)
    attention_grad_rows_kernel(int64_t t, int64_t hq, int64_t group, int64_t r, int64_t bi,
                               float scale, const float* __restrict__ slopes,
                               const float* __restrict__ s, const float* __restrict__ dp,
                               const float* __restrict__ lse, const float* __restrict__ delta,
                               __nv_bfloat16* __restrict__ p, __nv_bfloat16* __restrict__ ds) {
  const int64_t row = blockIdx.x;  // g * t + i
  const int64_t g = row / t, i = row % t, h = g * group + r;
  const float slope = slopes != nullptr ? slopes[h] : 0.0f;
  const int64_t at = (bi * hq + h) * t + i;
  const float l = lse[at], dl = delta[at];
  const float* srow = s + row * t;
  const float* dprow = dp + row * t;
  __nv_bfloat16* prow = p + row * t;
  __nv_bfloat16* dsrow = ds + row * t;
  for (int64_t j = threadIdx.x; j < t; j += blockDim.x) {
    float pv = 0.0f, dsv = 0.0f;
    if (j <= i) {
      pv = expf(srow[j] * scale - slope * float(i - j) - l);
      dsv = pv * (dprow[j] - dl);
    }
    prow[j] = make_bf16(pv);
    dsrow[j] = make_bf16(dsv);
  }
}

struct GemmScratch {
  float* s;
  float* dp;
  __nv_bfloat16* p;
  __nv_bfloat16* ds;
  float* delta;
};

std::size_t align256(std::size_t bytes) { return (bytes + 255) / 256 * 256; }

// The buffers of attention_gemm_workspace_bytes(), in its order.
GemmScratch carve(void* workspace, int64_t t, int64_t hkv) {
  char* base = static_cast<char*>(workspace);
  const std::size_t scores = static_cast<std::size_t>(hkv * t * t);
  GemmScratch w;
  w.s = reinterpret_cast<float*>(base);
  base += align256(scores * 4);
  w.dp = reinterpret_cast<float*>(base);
  base += align256(scores * 4);
  w.p = reinterpret_cast<__nv_bfloat16*>(base);
  base += align256(scores * 2);
  w.ds = reinterpret_cast<__nv_bfloat16*>(base);
  base += align256(scores * 2);
  w.delta = reinterpret_cast<float*>(base);
  return w;
}

}  // namespace

std::size_t attention_gemm_workspace_bytes(int64_t b, int64_t t, int64_t hq, int64_t hkv) {
  const std::size_t scores = static_cast<std::size_t>(hkv * t * t);
  return 2 * align256(scores * 4) + 2 * align256(scores * 2) +
         align256(static_cast<std::size_t>(b * hq * t) * 4);
}

void attention_fwd_gemm(Gemm& gemm, int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d,
                        const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                        const float* alibi_slopes, __nv_bfloat16* out, float* lse_bht,
                        void* workspace, cudaStream_t stream) {
  check_shape(b, t, hq, hkv, d);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int64_t group = hq / hkv;
  const GemmScratch w = carve(workspace, t, hkv);
  for (int64_t bi = 0; bi < b; ++bi) {
    for (int64_t r = 0; r < group; ++r) {
      // Query heads r, r + group, ... against kv heads 0, 1, ...: one batch over kv heads.
      const __nv_bfloat16* qb = q + (bi * t * hq + r) * d;
      const __nv_bfloat16* kb = k + bi * t * hkv * d;
      const __nv_bfloat16* vb = v + bi * t * hkv * d;
      gemm.run_batched(GemmOp::kNT, t, t, d, hkv, qb, hq * d, group * d, kb, hkv * d, d, w.s,
                       CUDA_R_32F, t, t * t, 1.0f, 0.0f, stream);
      softmax_rows_kernel<<<static_cast<unsigned>(hkv * t), kRowThreads, 0, stream>>>(
          t, hq, group, r, bi, scale, alibi_slopes, w.s, w.p, lse_bht);
      LOOM_CUDA_CHECK_LAUNCH();
      gemm.run_batched(GemmOp::kNN, t, d, t, hkv, w.p, t, t * t, vb, hkv * d, d,
                       out + (bi * t * hq + r) * d, CUDA_R_16BF, hq * d, group * d, 1.0f, 0.0f,
                       stream);
    }
  }
}

void attention_bwd_gemm(Gemm& gemm, int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d,
                        const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                        const float* alibi_slopes, const __nv_bfloat16* out, const float* lse_bht,
                        const __nv_bfloat16* dout, __nv_bfloat16* dq, __nv_bfloat16* dk,
                        __nv_bfloat16* dv, void* workspace, cudaStream_t stream) {
  check_shape(b, t, hq, hkv, d);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int64_t group = hq / hkv;
  const GemmScratch w = carve(workspace, t, hkv);
  attention_delta(b, t, hq, d, out, dout, w.delta, stream);
  for (int64_t bi = 0; bi < b; ++bi) {
    const __nv_bfloat16* kb = k + bi * t * hkv * d;
    const __nv_bfloat16* vb = v + bi * t * hkv * d;
    __nv_bfloat16* dkb = dk + bi * t * hkv * d;
    __nv_bfloat16* dvb = dv + bi * t * hkv * d;
    for (int64_t r = 0; r < group; ++r) {
      const __nv_bfloat16* qb = q + (bi * t * hq + r) * d;
      const __nv_bfloat16* dob = dout + (bi * t * hq + r) * d;
      const float beta = r == 0 ? 0.0f : 1.0f;  // dk, dv sum the group's query heads
      gemm.run_batched(GemmOp::kNT, t, t, d, hkv, qb, hq * d, group * d, kb, hkv * d, d, w.s,
                       CUDA_R_32F, t, t * t, 1.0f, 0.0f, stream);
      gemm.run_batched(GemmOp::kNT, t, t, d, hkv, dob, hq * d, group * d, vb, hkv * d, d, w.dp,
                       CUDA_R_32F, t, t * t, 1.0f, 0.0f, stream);
      attention_grad_rows_kernel<<<static_cast<unsigned>(hkv * t), kRowThreads, 0, stream>>>(
          t, hq, group, r, bi, scale, alibi_slopes, w.s, w.dp, lse_bht, w.delta, w.p, w.ds);
      LOOM_CUDA_CHECK_LAUNCH();
      // dv[j] (+)= sum_i P_ij dout_i: P^T [Tk, Tq] dout [Tq, D].
      gemm.run_batched(GemmOp::kTN, t, d, t, hkv, w.p, t, t * t, dob, hq * d, group * d, dvb,
                       CUDA_R_16BF, hkv * d, d, 1.0f, beta, stream);
      // dq_i = sum_j dS_ij k_j / sqrt(D).
      gemm.run_batched(GemmOp::kNN, t, d, t, hkv, w.ds, t, t * t, kb, hkv * d, d,
                       dq + (bi * t * hq + r) * d, CUDA_R_16BF, hq * d, group * d, scale, 0.0f,
                       stream);
      // dk_j (+)= sum_i dS_ij q_i / sqrt(D).
      gemm.run_batched(GemmOp::kTN, t, d, t, hkv, w.ds, t, t * t, qb, hq * d, group * d, dkb,
                       CUDA_R_16BF, hkv * d, d, scale, beta, stream);
    }
  }
}

}  // namespace loom::kernels::cuda
