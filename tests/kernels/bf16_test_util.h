// Tolerances and small helpers shared by the gpu tests of the bf16 normalisation and point-wise
// kernels (rmsnorm, layernorm, rope, swiglu, gelu): every kernel output is compared with the
// CPU backend run in fp32 on the same bf16-rounded inputs, under the bounds justified here.
#pragma once

#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/cuda/cuda_check.h"

namespace loom::kernels::testing {

// A bf16 output is the device's fp32 value v_gpu rounded once to nearest; the reference v_cpu
// is the CPU's unrounded fp32 value. |bf16(v_gpu) - v_cpu| <= 2^-8 |v_gpu| + |v_gpu - v_cpu|:
// 2^-8 is the unit roundoff of bf16's 8-bit significand. |v_gpu - v_cpu| is an fp32 difference
// (row sums in another order, FMA contraction, CUDA's expf/tanhf within 2 ulp of glibc's): it
// is about 1e-6 relative where nothing cancels, which the extra 2^-16 in kBf16Rtol covers, and
// about 1e-6 of the operands where terms cancel (an output near zero), which each test's atol
// covers for its operand sizes. A wrong formula, index or missing term errs by >= 1e-2.
inline constexpr double kBf16Rtol = 1.0 / 256 + 1.0 / 65536;

// fp32 row statistics (mean, rstd) and everything built on them. The CPU sums a row of C terms
// sequentially: its relative error is bounded by (C - 1) 2^-24 for terms of one sign (Higham,
// "Accuracy and Stability of Numerical Algorithms", 2002, eq. 4.4) and does reach ~4e-5 at
// C = 5120 on bf16-gridded rows (the terms share low bits, so the roundings do not cancel); the
// device's 32-lane strided sums with a butterfly err by at most (C/32 + 5) 2^-24. rstd halves
// the error of the sum of squares; the mean of rows with mean 2 and std <= sqrt(2) has
// sum|x| < 1.2 |sum x|. So (C + 16) 2^-24 bounds the relative difference of rstd, and twice
// that the one of the mean.
inline double row_stat_rtol(int64_t c) { return double(c + 16) / 16777216.0; }

// Normalised bf16 outputs (y): one bf16 rounding (2^-8) on top of the rstd/mean difference.
inline double norm_output_rtol(int64_t c) { return 1.0 / 256 + row_stat_rtol(c); }

// fp32 weight gradients: dw_j = sum over N rows of the same terms (up to FMA contraction),
// summed in another order. The terms (dy times a normalised input) have random signs, so the
// partial sums stay near sqrt(n) |t| and their roundings do not pile up as in the row statistics
// above: about sqrt(N) 2^-24 sum|t| (2.7e-6 sum|t| at N = 2053). The bound is 1e-5 sum_n |t_nj|;
// the worst case (N - 1) 2^-24 sum|t| = 1.2e-4 sum|t| needs all roundings to agree in sign.
inline constexpr double kParamGradRelToAbsSum = 1e-5;

inline __nv_bfloat16* bf16_ptr(const cuda::DeviceBuffer<uint16_t>& b) {
  return reinterpret_cast<__nv_bfloat16*>(b.get());
}

// Bit-for-bit equality of two fp32 or bf16 arrays; reports the first difference.
template <typename T>
::testing::AssertionResult bits_equal(const std::vector<T>& got, const std::vector<T>& want) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << "size " << got.size() << " vs " << want.size();
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0)
      return ::testing::AssertionFailure()
             << "element " << i << " differs: " << got[i] << " vs " << want[i];
  }
  return ::testing::AssertionSuccess();
}

// |got_j - want_j| <= rel * abs_sum_j for every j (abs_sum_j: the sum of the absolute terms of
// column j, see kParamGradRelToAbsSum).
inline ::testing::AssertionResult sums_close(const std::vector<float>& got,
                                             const std::vector<float>& want,
                                             const std::vector<double>& abs_sum, double rel) {
  if (got.size() != want.size() || got.size() != abs_sum.size())
    return ::testing::AssertionFailure() << "sizes differ";
  for (std::size_t j = 0; j < got.size(); ++j) {
    const double err = std::abs(double(got[j]) - double(want[j]));
    if (!(err <= rel * abs_sum[j]))
      return ::testing::AssertionFailure()
             << "column " << j << ": got " << got[j] << ", want " << want[j] << ", |error| " << err
             << " > " << rel << " * sum|terms| = " << rel * abs_sum[j];
  }
  return ::testing::AssertionSuccess();
}

}  // namespace loom::kernels::testing
