// RMSNorm forward (fused residual add) and backward on the device, one warp per row; the
// formulas and their operand order are those of kernels/cpu/cpu_norms.cc, so in fp32 the two
// backends differ only by the order of the row sums. dw goes through the fixed-order
// reduction of norm_param_grad.h. Tested in tests/kernels/rmsnorm_gpu_test.cc.
#include <stdexcept>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/norm_param_grad.h"
#include "kernels/cuda/rmsnorm.h"
#include "kernels/cuda/vec_io.cuh"

namespace loom::kernels::cuda {
namespace {

using detail::load_bf16;
using detail::load_f32;
using detail::store_bf16;
using detail::warp_sum;

constexpr int kWarpSize = 32;
constexpr int kRowsPerBlock = 8;  // 8 warps = 256 threads

// Pass 1 forms sum = bf16(x + residual), stores it and accumulates sum^2 from the rounded
// values; pass 2 reads the normalised input back (the same thread's own stores when fused) and
// writes y = sum * rstd * w, the product order of cpu::rmsnorm_fwd.
template <int kVec>
__global__ void __launch_bounds__(kRowsPerBlock* kWarpSize)
    rmsnorm_fwd_warp_per_row(int64_t n, int64_t c, const __nv_bfloat16* x_nc,
                             const __nv_bfloat16* residual_nc, const float* w, float eps,
                             __nv_bfloat16* sum_nc, __nv_bfloat16* y_nc, float* rstd_n) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= n) return;
  const int64_t offset = row * c;
  const __nv_bfloat16* in = residual_nc != nullptr ? sum_nc + offset : x_nc + offset;
  float sum_sq = 0.0f;
  for (int64_t j = int64_t{lane} * kVec; j < c; j += int64_t{kWarpSize} * kVec) {
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
    for (int k = 0; k < kVec; ++k) sum_sq += v[k] * v[k];
  }
  sum_sq = warp_sum(sum_sq);
  // 1 / sqrt rather than rsqrtf: IEEE-rounded as in cpu::rmsnorm_fwd (rsqrtf is 2 ulp).
  const float rstd = 1.0f / sqrtf(sum_sq / static_cast<float>(c) + eps);
  for (int64_t j = int64_t{lane} * kVec; j < c; j += int64_t{kWarpSize} * kVec) {
    float v[kVec];
    float wv[kVec];
    load_bf16<kVec>(in + j, v);
    load_f32<kVec>(w + j, wv);
#pragma unroll
    for (int k = 0; k < kVec; ++k) v[k] = v[k] * rstd * wv[k];
    store_bf16<kVec>(y_nc + offset + j, v);
  }
  if (lane == 0) rstd_n[row] = rstd;
}

// dx_j = r dy_j w_j - coef x_j with coef = r^3 sum_k(dy_k w_k x_k) / C (cpu::rmsnorm_bwd),
// plus the incoming residual gradient, rounded once.
template <int kVec>
__global__ void __launch_bounds__(kRowsPerBlock* kWarpSize)
    rmsnorm_bwd_dx_warp_per_row(int64_t n, int64_t c, const __nv_bfloat16* dy_nc,
                                const __nv_bfloat16* x_nc, const float* w, const float* rstd_n,
                                const __nv_bfloat16* dresidual_nc, __nv_bfloat16* dx_nc) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= n) return;
  const int64_t offset = row * c;
  const float r = rstd_n[row];
  float dot = 0.0f;
  for (int64_t j = int64_t{lane} * kVec; j < c; j += int64_t{kWarpSize} * kVec) {
    float dy[kVec], x[kVec], wv[kVec];
    load_bf16<kVec>(dy_nc + offset + j, dy);
    load_bf16<kVec>(x_nc + offset + j, x);
    load_f32<kVec>(w + j, wv);
#pragma unroll
    for (int k = 0; k < kVec; ++k) dot += dy[k] * wv[k] * x[k];
  }
  dot = warp_sum(dot);
  const float coef = r * r * r * dot / static_cast<float>(c);
  for (int64_t j = int64_t{lane} * kVec; j < c; j += int64_t{kWarpSize} * kVec) {
    float dy[kVec], x[kVec], wv[kVec], dx[kVec];
    load_bf16<kVec>(dy_nc + offset + j, dy);
    load_bf16<kVec>(x_nc + offset + j, x);
    load_f32<kVec>(w + j, wv);
#pragma unroll
    for (int k = 0; k < kVec; ++k) dx[k] = r * dy[k] * wv[k] - coef * x[k];
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

void rmsnorm_fwd(int64_t n, int64_t c, const __nv_bfloat16* x_nc, const __nv_bfloat16* residual_nc,
                 const float* w, double eps, __nv_bfloat16* sum_nc, __nv_bfloat16* y_nc,
                 float* rstd_n, cudaStream_t stream) {
  if (n <= 0 || c <= 0) return;
  if (residual_nc != nullptr && sum_nc == nullptr)
    throw std::invalid_argument("rmsnorm_fwd: residual_nc is given but sum_nc is null");
  const auto e = static_cast<float>(eps);
  if (detail::vectorisable(c, {x_nc, residual_nc, w, sum_nc, y_nc})) {
    rmsnorm_fwd_warp_per_row<detail::kBf16PerVector>
        <<<row_blocks(n), kRowsPerBlock * kWarpSize, 0, stream>>>(n, c, x_nc, residual_nc, w, e,
                                                                  sum_nc, y_nc, rstd_n);
  } else {
    rmsnorm_fwd_warp_per_row<1><<<row_blocks(n), kRowsPerBlock * kWarpSize, 0, stream>>>(
        n, c, x_nc, residual_nc, w, e, sum_nc, y_nc, rstd_n);
  }
  LOOM_CUDA_CHECK_LAUNCH();
}

std::size_t rmsnorm_bwd_workspace_bytes(int64_t n, int64_t c) {
  return detail::norm_param_grad_partial_bytes(n, c);
}

void rmsnorm_bwd(int64_t n, int64_t c, const __nv_bfloat16* dy_nc, const __nv_bfloat16* x_nc,
                 const float* w, const float* rstd_n, const __nv_bfloat16* dresidual_nc,
                 __nv_bfloat16* dx_nc, float* dw, void* workspace, cudaStream_t stream) {
  if (n <= 0 || c <= 0) return;
  if (detail::vectorisable(c, {dy_nc, x_nc, w, dresidual_nc, dx_nc})) {
    rmsnorm_bwd_dx_warp_per_row<detail::kBf16PerVector>
        <<<row_blocks(n), kRowsPerBlock * kWarpSize, 0, stream>>>(n, c, dy_nc, x_nc, w, rstd_n,
                                                                  dresidual_nc, dx_nc);
  } else {
    rmsnorm_bwd_dx_warp_per_row<1><<<row_blocks(n), kRowsPerBlock * kWarpSize, 0, stream>>>(
        n, c, dy_nc, x_nc, w, rstd_n, dresidual_nc, dx_nc);
  }
  LOOM_CUDA_CHECK_LAUNCH();
  detail::norm_param_grad_accumulate(n, c, dy_nc, x_nc, /*mean_n=*/nullptr, rstd_n,
                                     static_cast<float*>(workspace), dw, /*db=*/nullptr, stream);
}

}  // namespace loom::kernels::cuda
