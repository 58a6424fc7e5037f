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

// Launches kernel<kChunks> with the dynamic shared memory it needs (opting in above 48 KiB).
template <typename Kernel, typename... Args>
void launch(Kernel kernel, dim3 grid, std::size_t smem, cudaStream_t stream, Args... args) {
  if (smem > 48 * 1024)
    LOOM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem)));
  kernel<<<grid, kThreads, smem, stream>>>(args...);
  LOOM_CUDA_CHECK_LAUNCH();
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

void attention_bwd(int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d,
                   const __nv_bfloat16* q, const __nv_bfloat16* k, const __nv_bfloat16* v,
                   const float* alibi_slopes, const __nv_bfloat16* out, const float* lse_bht,
                   const __nv_bfloat16* dout, __nv_bfloat16* dq, __nv_bfloat16* dk,
                   __nv_bfloat16* dv, void* workspace, cudaStream_t stream) {
  check_shape(b, t, hq, hkv, d);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const int di = static_cast<int>(d);
  float* delta = static_cast<float*>(workspace);
  const int64_t rows = b * t * hq;
  constexpr int kDeltaWarps = 8;
  attention_delta_kernel<<<static_cast<unsigned>((rows + kDeltaWarps - 1) / kDeltaWarps),
                           kDeltaWarps * 32, 0, stream>>>(rows, t, hq, di, out, dout, delta);
  LOOM_CUDA_CHECK_LAUNCH();

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

}  // namespace loom::kernels::cuda
