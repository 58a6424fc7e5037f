// LayerNorm forward (fused residual add) and backward on the device, one warp per row; the
// formulas and their operand order are those of kernels/cpu/cpu_norms.cc (two-pass variance:
// no cancellation when |mean| >> std), so in fp32 the two backends differ only by the order of
// the row sums. dw/db go through the fixed-order reduction of norm_param_grad.h. Tested in
// tests/kernels/layernorm_gpu_test.cc.
#include <stdexcept>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/layernorm.h"
#include "kernels/cuda/norm_param_grad.h"
#include "kernels/cuda/vec_io.cuh"

namespace loom::kernels::cuda {
namespace {

using detail::load_bf16;
using detail::load_f32;
using detail::store_bf16;
using detail::warp_sum;

constexpr int kWarpSize = 32;
constexpr int kRowsPerBlock = 8;  // 8 warps = 256 threads

// Pass 1: sum = bf16(x + residual) (stored when fused) and its row sum -> mean. Pass 2: the
// centred squares -> rstd. Pass 3: y = (sum - mean) * rstd * w + b. Passes 2 and 3 read the
// normalised input back (the thread's own stores when fused).
template <int kVec>
__global__ void __launch_bounds__(kRowsPerBlock* kWarpSize)
    layernorm_fwd_warp_per_row(int64_t n, int64_t c, const __nv_bfloat16* x_nc,
                               const __nv_bfloat16* residual_nc, const float* w, const float* b,
                               float eps, __nv_bfloat16* sum_nc, __nv_bfloat16* y_nc, float* mean_n,
                               float* rstd_n) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= n) return;
  const int64_t offset = row * c;
  const __nv_bfloat16* in = residual_nc != nullptr ? sum_nc + offset : x_nc + offset;
  const int64_t first = int64_t{lane} * kVec;
  const int64_t stride = int64_t{kWarpSize} * kVec;

  float sum = 0.0f;
  for (int64_t j = first; j < c; j += stride) {
    float v[kVec];
    load_bf16<kVec>(x_nc + offset + j, v);
    if (residual_nc != nullptr) {
      float r[kVec];
      load_bf16<kVec>(residual_nc + offset + j, r);
#pragma unroll
      for (int k = 0; k < kVec; ++k) v[k] = bf16_round(v[k] + r[k]);
      store_bf16<kVec>(sum_nc + offset + j, v);
    }
#pragma unroll
    for (int k = 0; k < kVec; ++k) sum += v[k];
  }
  const float mean = warp_sum(sum) / static_cast<float>(c);

  float sum_sq = 0.0f;
  for (int64_t j = first; j < c; j += stride) {
    float v[kVec];
    load_bf16<kVec>(in + j, v);
#pragma unroll
    for (int k = 0; k < kVec; ++k) sum_sq += (v[k] - mean) * (v[k] - mean);
  }
  // 1 / sqrt rather than rsqrtf: IEEE-rounded as in cpu::layernorm_fwd (rsqrtf is 2 ulp).
  const float rstd = 1.0f / sqrtf(warp_sum(sum_sq) / static_cast<float>(c) + eps);

  for (int64_t j = first; j < c; j += stride) {
    float v[kVec], wv[kVec], bv[kVec];
    load_bf16<kVec>(in + j, v);
    load_f32<kVec>(w + j, wv);
    load_f32<kVec>(b + j, bv);
#pragma unroll
    for (int k = 0; k < kVec; ++k) v[k] = (v[k] - mean) * rstd * wv[k] + bv[k];
    store_bf16<kVec>(y_nc + offset + j, v);
  }
  if (lane == 0) {
    mean_n[row] = mean;
    rstd_n[row] = rstd;
  }
}

// dx_j = r (dy_j w_j - mean_g - xhat_j mean_gx) (cpu::layernorm_bwd) plus the incoming
// residual gradient, rounded once.
template <int kVec>
__global__ void __launch_bounds__(kRowsPerBlock* kWarpSize)
    layernorm_bwd_dx_warp_per_row(int64_t n, int64_t c, const __nv_bfloat16* dy_nc,
                                  const __nv_bfloat16* x_nc, const float* w, const float* mean_n,
                                  const float* rstd_n, const __nv_bfloat16* dresidual_nc,
                                  __nv_bfloat16* dx_nc) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= n) return;
  const int64_t offset = row * c;
  const int64_t first = int64_t{lane} * kVec;
  const int64_t stride = int64_t{kWarpSize} * kVec;
  const float mean = mean_n[row];
  const float r = rstd_n[row];

  float sum_g = 0.0f;
  float sum_gx = 0.0f;
  for (int64_t j = first; j < c; j += stride) {
    float dy[kVec], x[kVec], wv[kVec];
    load_bf16<kVec>(dy_nc + offset + j, dy);
    load_bf16<kVec>(x_nc + offset + j, x);
    load_f32<kVec>(w + j, wv);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const float g = dy[k] * wv[k];
      sum_g += g;
      sum_gx += g * (x[k] - mean) * r;
    }
  }
  const float mean_g = warp_sum(sum_g) / static_cast<float>(c);
  const float mean_gx = warp_sum(sum_gx) / static_cast<float>(c);

  for (int64_t j = first; j < c; j += stride) {
    float dy[kVec], x[kVec], wv[kVec], dx[kVec];
    load_bf16<kVec>(dy_nc + offset + j, dy);
    load_bf16<kVec>(x_nc + offset + j, x);
    load_f32<kVec>(w + j, wv);
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const float xhat = (x[k] - mean) * r;
      dx[k] = r * (dy[k] * wv[k] - mean_g - xhat * mean_gx);
    }
    if (dresidual_nc != nullptr) {
      float dres[kVec];
      load_bf16<kVec>(dresidual_nc + offset + j, dres);
#pragma unroll
      for (int k = 0; k < kVec; ++k) dx[k] += dres[k];
    }
    store_bf16<kVec>(dx_nc + offset + j, dx);
  }
}

unsigned row_blocks(int64_t n) {
  return static_cast<unsigned>((n + kRowsPerBlock - 1) / kRowsPerBlock);
}

}  // namespace

void layernorm_fwd(int64_t n, int64_t c, const __nv_bfloat16* x_nc,
                   const __nv_bfloat16* residual_nc, const float* w, const float* b, double eps,
                   __nv_bfloat16* sum_nc, __nv_bfloat16* y_nc, float* mean_n, float* rstd_n,
                   cudaStream_t stream) {
  if (n <= 0 || c <= 0) return;
  if (residual_nc != nullptr && sum_nc == nullptr)
    throw std::invalid_argument("layernorm_fwd: residual_nc is given but sum_nc is null");
  const auto e = static_cast<float>(eps);
  if (detail::vectorisable(c, {x_nc, residual_nc, w, b, sum_nc, y_nc})) {
    layernorm_fwd_warp_per_row<detail::kBf16PerVector>
        <<<row_blocks(n), kRowsPerBlock * kWarpSize, 0, stream>>>(n, c, x_nc, residual_nc, w, b, e,
                                                                  sum_nc, y_nc, mean_n, rstd_n);
  } else {
    layernorm_fwd_warp_per_row<1><<<row_blocks(n), kRowsPerBlock * kWarpSize, 0, stream>>>(
        n, c, x_nc, residual_nc, w, b, e, sum_nc, y_nc, mean_n, rstd_n);
  }
  LOOM_CUDA_CHECK_LAUNCH();
}

std::size_t layernorm_bwd_workspace_bytes(int64_t n, int64_t c) {
  return 2 * detail::norm_param_grad_partial_bytes(n, c);
}

void layernorm_bwd(int64_t n, int64_t c, const __nv_bfloat16* dy_nc, const __nv_bfloat16* x_nc,
                   const float* w, const float* mean_n, const float* rstd_n,
                   const __nv_bfloat16* dresidual_nc, __nv_bfloat16* dx_nc, float* dw, float* db,
                   void* workspace, cudaStream_t stream) {
  if (n <= 0 || c <= 0) return;
  if (detail::vectorisable(c, {dy_nc, x_nc, w, dresidual_nc, dx_nc})) {
    layernorm_bwd_dx_warp_per_row<detail::kBf16PerVector>
        <<<row_blocks(n), kRowsPerBlock * kWarpSize, 0, stream>>>(n, c, dy_nc, x_nc, w, mean_n,
                                                                  rstd_n, dresidual_nc, dx_nc);
  } else {
    layernorm_bwd_dx_warp_per_row<1><<<row_blocks(n), kRowsPerBlock * kWarpSize, 0, stream>>>(
        n, c, dy_nc, x_nc, w, mean_n, rstd_n, dresidual_nc, dx_nc);
  }
  LOOM_CUDA_CHECK_LAUNCH();
  detail::norm_param_grad_accumulate(n, c, dy_nc, x_nc, mean_n, rstd_n,
                                     static_cast<float*>(workspace), dw, db, stream);
}

}  // namespace loom::kernels::cuda
