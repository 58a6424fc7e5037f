// Tolerances and helpers of the gpu tests of the GEMM, AdamW, cross-entropy and embedding
// kernels (tests/kernels/{gemm,adamw,cross_entropy,embedding}_gpu_test.cc): each device result
// is compared with the CPU backend run in fp32 on the same bf16-valued inputs, under the bounds
// justified here. Names live in testing::linalg so they never clash with other gpu test helpers.
#pragma once

#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/cuda/cuda_check.h"

namespace loom::kernels::testing::linalg {

// Unit roundoff of fp32 (24-bit significand) and one bf16 ulp relative to the value (8-bit
// significand: spacing 2^-7 of the leading power of two).
inline constexpr double kFp32Unit = 1.0 / (1 << 24);
inline constexpr double kBf16Ulp = 1.0 / (1 << 7);

// GEMM with fp32 accumulation: recursive summation of K exact bf16 x bf16 products (8 x 8
// significand bits fit in fp32's 24) errs by at most (K - 1) u sum_k |a_ik b_kj| (Higham 2002,
// eq. 3.5), u = 2^-24 with round-to-nearest. Tensor cores may truncate when they align partial
// sums (Fasi et al. 2021), doubling u, and split-K / other blockings change only the order, not
// the bound. The CPU and GPU results each obey it, so their difference is at most
// 3 K u sum|a||b|; we allow 4 K u. A transposed operand or wrong leading dimension errs by
// O(sum|a||b|), i.e. by a factor ~1/(4 K u) ~ 8000 (K = 512) more than this.
inline double gemm_fp32_bound(int64_t k, double abs_product) {
  return 4.0 * static_cast<double>(k) * kFp32Unit * abs_product;
}

// Cross-entropy: both backends form log S, S = sum_j exp(x_j - max), in fp32 in different
// orders (the CPU sequentially over V terms, the GPU 1024 strided partial sums merged in a tree
// with rescaling) and with different expf implementations (CUDA's within 2 ulp, glibc's within
// 1). Positive terms summed sequentially err by ~sqrt(V) u relative with random rounding (1.3e-5
// for V = 50257, 3e-5 for 250880; the worst case (V - 1) u never happens), and that relative
// error of S is the absolute error of log S, hence of the loss and of (x - max) - log S: 2e-4
// covers it with a margin of 6x. Counting a padding column at 50 or an ignored row shifts a
// loss by >= 1.
inline constexpr double kLogSumTol = 2e-4;

// Gradient norm: both sides square each fp32 gradient exactly in double and add in double in
// different orders. A sequential sum of n positive terms errs by ~u_64 sqrt(n/3) relative with
// random rounding (1e-13 for n = 3M; the worst case n u_64 = 3e-10 never happens), the norm by
// half that; 1e-12 is 20x the typical error and far below any real bug (one skipped element
// changes the sum by ~1/n = 3e-7).
inline constexpr double kGradNormRtol = 1e-12;

// AdamW: params, m and v follow the same fp32 expressions on both sides, but nvcc contracts
// a*b+c into FMAs (the host build, ISO C++, does not), so m and v may differ by ~1 ulp per step
// and the update lr * m_hat / (sqrt(v_hat) + eps) by a few ulp of itself (<= lr * ~1e-6 per step
// with |m_hat / sqrt(v_hat)| <= ~3). Over 5 steps: rtol 1e-6 on each value, plus an atol of
// 1e-6 * lr for params that pass near zero. m = 0.9 m + 0.1 g can cancel to ~0 from operands of
// ~3e-4, where an ulp of the operands (~4e-11) is all that is left: atol 1e-9 for m (1e-6 of its
// typical size); v sums non-negative terms (no cancellation): atol 1e-15. A missing weight decay
// (lr * wd * |p| ~ 1e-3 * 0.1 * 0.02 = 2e-6 per step, 1e-4 relative) or a wrong bias
// correction or clip factor fails by orders of magnitude.
inline constexpr double kAdamWRtol = 1e-6;
inline constexpr double kAdamWParamAtolPerLr = 1e-6;
inline constexpr double kAdamWMomentAtol = 1e-9;
inline constexpr double kAdamWSecondMomentAtol = 1e-15;

// Pointer cast for the uint16_t bf16 bits that gpu_test_util.h uploads.
inline __nv_bfloat16* as_bf16(const cuda::DeviceBuffer<uint16_t>& b) {
  return reinterpret_cast<__nv_bfloat16*>(b.get());
}

// got[i] == want[i] bit for bit (NaN patterns included); reports the first difference.
template <typename T>
::testing::AssertionResult bitwise_equal(const std::vector<T>& got, const std::vector<T>& want) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << "size " << got.size() << " vs " << want.size();
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0) {
      return ::testing::AssertionFailure()
             << "element " << i << ": got " << +got[i] << ", want " << +want[i];
    }
  }
  return ::testing::AssertionSuccess();
}

// |got[i] - want[i]| <= rtol |want[i]| + abs_bound[i] for every i (a per-element absolute bound,
// e.g. gemm_fp32_bound of the element's sum |a||b|); reports the worst element.
inline ::testing::AssertionResult within_bounds(const std::vector<float>& got,
                                                const std::vector<float>& want, double rtol,
                                                const std::vector<double>& abs_bound) {
  if (got.size() != want.size() || got.size() != abs_bound.size())
    return ::testing::AssertionFailure()
           << "sizes " << got.size() << ", " << want.size() << ", " << abs_bound.size();
  double worst = 0;
  std::size_t at = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double allowed = rtol * std::abs(double(want[i])) + abs_bound[i];
    const double diff = std::abs(double(got[i]) - double(want[i]));
    const double err = diff == 0 ? 0.0 : diff / allowed;  // exact zeros pass a zero bound
    if (!(err <= worst)) {                                // NaN counts as worst
      worst = std::isnan(err) ? INFINITY : err;
      at = i;
    }
  }
  if (worst <= 1.0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "element " << at << ": got " << got[at] << ", want " << want[at] << " (allowed "
         << rtol * std::abs(double(want[at])) + abs_bound[at] << ", normalised error " << worst
         << ")";
}

}  // namespace loom::kernels::testing::linalg
