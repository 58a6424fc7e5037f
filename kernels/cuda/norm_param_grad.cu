// Deterministic dw/db of RMSNorm and LayerNorm: fixed-order partial sums over row chunks, then
// a fixed-order sum over chunks (see norm_param_grad.h). Each term is the expression of
// kernels/cpu/cpu_norms.cc in its operand order (dy * xc * rstd), so the backends differ only by
// the summation order (and where each compiler fuses the last multiply-add).
#include <algorithm>

#include "kernels/cuda/bf16_bits.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/norm_param_grad.h"

namespace loom::kernels::cuda::detail {
namespace {

constexpr int kWarpSize = 32;
constexpr int kWarps = 8;                 // 256 threads per block
constexpr int kTileCols = 2 * kWarpSize;  // each lane owns columns lane and lane + 32
constexpr int kRowsPerWarp = static_cast<int>(kNormParamGradRowsPerChunk) / kWarps;  // 16
constexpr int kMaxGridChunks = 65535;  // gridDim.y limit; larger N loops over chunks
static_assert(kNormParamGradRowsPerChunk % kWarps == 0);

// Block (tile, chunk): warp w sums rows chunk*128 + w + 8k, k = 0..15, in increasing k; the 8
// warp sums are then added in warp order through shared memory. A warp's 32 lanes read 32
// consecutive bf16 of a row per access (64 bytes, coalesced).
template <bool kWithBias>
__global__ void __launch_bounds__(kWarps* kWarpSize)
    norm_param_grad_partials(int64_t n, int64_t c, int64_t chunks, const __nv_bfloat16* dy_nc,
                             const __nv_bfloat16* x_nc, const float* mean_n, const float* rstd_n,
                             float* dw_partials, float* db_partials) {
  __shared__ float dw_smem[kWarps][kTileCols];
  __shared__ float db_smem[kWarps][kTileCols];
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const int64_t tile_col = static_cast<int64_t>(blockIdx.x) * kTileCols;
  for (int64_t chunk = blockIdx.y; chunk < chunks; chunk += gridDim.y) {
    float dw_acc[2] = {0.0f, 0.0f};
    float db_acc[2] = {0.0f, 0.0f};
    for (int k = 0; k < kRowsPerWarp; ++k) {
      const int64_t row = chunk * kNormParamGradRowsPerChunk + warp + int64_t{kWarps} * k;
      if (row >= n) break;
      const float rstd = rstd_n[row];
      const float mean = mean_n != nullptr ? mean_n[row] : 0.0f;
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int64_t col = tile_col + lane + half * kWarpSize;
        if (col >= c) continue;
        const float dy = load_bf16(dy_nc[row * c + col]);
        const float x = load_bf16(x_nc[row * c + col]);
        // cpu_norms.cc: dy * x * rstd (RMSNorm), dy * (x - mean) * rstd (LayerNorm).
        dw_acc[half] += mean_n != nullptr ? dy * (x - mean) * rstd : dy * x * rstd;
        if constexpr (kWithBias) db_acc[half] += dy;
      }
    }
    dw_smem[warp][lane] = dw_acc[0];
    dw_smem[warp][lane + kWarpSize] = dw_acc[1];
    if constexpr (kWithBias) {
      db_smem[warp][lane] = db_acc[0];
      db_smem[warp][lane + kWarpSize] = db_acc[1];
    }
    __syncthreads();
    if (threadIdx.x < kTileCols && tile_col + threadIdx.x < c) {
      const int j = static_cast<int>(threadIdx.x);
      float dw_sum = 0.0f;
      float db_sum = 0.0f;
      for (int w = 0; w < kWarps; ++w) {
        dw_sum += dw_smem[w][j];
        if constexpr (kWithBias) db_sum += db_smem[w][j];
      }
      dw_partials[chunk * c + tile_col + j] = dw_sum;
      if constexpr (kWithBias) db_partials[chunk * c + tile_col + j] = db_sum;
    }
    __syncthreads();  // the shared arrays are reused by the next chunk
  }
}

// out[j] += sum over chunks (in chunk order) of partials[chunk, j]. The total is formed first
// and added once, so a second backward pass over the same data adds exactly the same value.
__global__ void norm_param_grad_reduce(int64_t c, int64_t chunks, const float* partials,
                                       float* out) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= c) return;
  float sum = 0.0f;
  for (int64_t k = 0; k < chunks; ++k) sum += partials[k * c + j];
  out[j] += sum;
}

}  // namespace

void norm_param_grad_accumulate(int64_t n, int64_t c, const __nv_bfloat16* dy_nc,
                                const __nv_bfloat16* x_nc, const float* mean_n, const float* rstd_n,
                                float* partials, float* dw, float* db, cudaStream_t stream) {
  if (n <= 0 || c <= 0) return;
  const int64_t chunks = norm_param_grad_chunks(n);
  float* dw_partials = partials;
  float* db_partials = partials + chunks * c;
  const dim3 grid(static_cast<unsigned>((c + kTileCols - 1) / kTileCols),
                  static_cast<unsigned>(std::min<int64_t>(chunks, kMaxGridChunks)));
  const dim3 block(kWarps * kWarpSize);
  if (db != nullptr) {
    norm_param_grad_partials<true><<<grid, block, 0, stream>>>(n, c, chunks, dy_nc, x_nc, mean_n,
                                                               rstd_n, dw_partials, db_partials);
  } else {
    norm_param_grad_partials<false><<<grid, block, 0, stream>>>(n, c, chunks, dy_nc, x_nc, mean_n,
                                                                rstd_n, dw_partials, nullptr);
  }
  LOOM_CUDA_CHECK_LAUNCH();
  constexpr int kReduceThreads = 256;
  const unsigned reduce_blocks = static_cast<unsigned>((c + kReduceThreads - 1) / kReduceThreads);
  norm_param_grad_reduce<<<reduce_blocks, kReduceThreads, 0, stream>>>(c, chunks, dw_partials, dw);
  LOOM_CUDA_CHECK_LAUNCH();
  if (db != nullptr) {
    norm_param_grad_reduce<<<reduce_blocks, kReduceThreads, 0, stream>>>(c, chunks, db_partials,
                                                                         db);
    LOOM_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace loom::kernels::cuda::detail
