// The CUDA LayerNorm (kernels/cuda/layernorm.h) against the CPU backend (cpu::layernorm_fwd/bwd
// in fp32 on the same bf16-rounded inputs): the fused residual sum bit for bit, mean, rstd, y,
// dx, dw and db under the tolerances of bf16_test_util.h; dw/db accumulate and are
// bit-reproducible. The residual carries a mean of 2 (|mean| > std) to exercise the two-pass
// variance. Shapes
// cover the 16-byte vector path (C % 8 == 0) and the element path (C = 999), and N that is not
// a multiple of the 8 rows of a block or the 128 rows of a dw chunk.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <ostream>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/layernorm.h"
#include "tests/kernels/bf16_test_util.h"
#include "tests/kernels/gpu_test_util.h"

namespace loom::kernels {
namespace {

using testing::all_close;
using testing::bf16_ptr;
using testing::bits_equal;
using testing::download;
using testing::from_bf16;
using testing::kBf16Rtol;
using testing::kParamGradRelToAbsSum;
using testing::norm_output_rtol;
using testing::random_bf16_values;
using testing::row_stat_rtol;
using testing::sums_close;
using testing::to_bf16;
using testing::upload;

constexpr double kEps = 1e-5;
// y = (sum - mean) rstd w + b cancels when y ~ 0, i.e. where |(sum - mean) rstd w| = |b| < 0.5:
// there the rstd difference moves y by < 0.5 row_stat_rtol and the mean difference (|mean| ~ 2,
// 2 row_stat_rtol relative, times rstd w ~ 1) by < 4 row_stat_rtol (bf16_test_util.h).
double forward_atol(int64_t c) { return 5 * testing::row_stat_rtol(c); }
// dx = r (g - mean_g - xhat mean_gx) + dresidual cancels terms of size <= ~5 (5-sigma inputs):
// fp32 differences of a few ulp of 5 (~1e-6); 1e-5 leaves a factor of 10.
constexpr double kDxAtol = 1e-5;
// Mean of the residual stream: |mean| >> std / sqrt(C) so that a one-pass E[x^2] - E[x]^2
// would lose digits, and mean itself is compared relatively.
constexpr float kResidualMean = 2.0f;

struct NormShape {
  int64_t n;
  int64_t c;
};
void PrintTo(const NormShape& s, std::ostream* os) { *os << s.n << "x" << s.c; }

// Weights near 1 as after training starts, in full fp32 (the master copy is not bf16).
std::vector<float> weights(int64_t c, uint64_t seed) {
  std::vector<float> w = random_bf16_values(c, seed, 0.1f);
  for (float& v : w) v = 1.0f + v * 1.0009765625f;  // * (1 + 2^-10): not bf16-representable
  return w;
}

std::vector<float> offset_values(std::size_t count, uint64_t seed, float mean) {
  std::vector<float> v = random_bf16_values(count, seed);
  for (float& e : v) e = bf16_round(e + mean);
  return v;
}

// The bf16 sum x + residual that the fused forward stores and normalises.
std::vector<float> bf16_sum(const std::vector<float>& x, const std::vector<float>& r) {
  std::vector<float> s(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) s[i] = bf16_round(x[i] + r[i]);
  return s;
}

class LayernormGpu : public ::testing::TestWithParam<NormShape> {};

TEST_P(LayernormGpu, FusedForwardMatchesCpu) {
  LOOM_REQUIRE_GPU();
  const auto [n, c] = GetParam();
  const std::vector<float> x = random_bf16_values(n * c, 1);
  const std::vector<float> res = offset_values(n * c, 2, kResidualMean);
  const std::vector<float> w = weights(c, 3);
  const std::vector<float> b = random_bf16_values(c, 4, 0.1f);
  const std::vector<float> sum = bf16_sum(x, res);
  std::vector<float> y(n * c), mean(n), rstd(n);
  cpu::layernorm_fwd<float>(n, c, sum.data(), w.data(), b.data(), kEps, y.data(), mean.data(),
                            rstd.data());

  const auto d_x = upload(to_bf16(x));
  const auto d_res = upload(to_bf16(res));
  const auto d_w = upload(w);
  const auto d_b = upload(b);
  cuda::DeviceBuffer<uint16_t> d_sum(n * c), d_y(n * c);
  cuda::DeviceBuffer<float> d_mean(n), d_rstd(n);
  cuda::layernorm_fwd(n, c, bf16_ptr(d_x), bf16_ptr(d_res), d_w.get(), d_b.get(), kEps,
                      bf16_ptr(d_sum), bf16_ptr(d_y), d_mean.get(), d_rstd.get(), nullptr);
  // The sum is one fp32 addition of two bf16 values, rounded once: the same bits on both sides.
  EXPECT_TRUE(bits_equal(download(d_sum), to_bf16(sum)));
  EXPECT_TRUE(all_close(download(d_mean), mean, 2 * row_stat_rtol(c), 0.0));
  EXPECT_TRUE(all_close(download(d_rstd), rstd, row_stat_rtol(c), 0.0));
  const std::vector<uint16_t> y_bits = download(d_y);
  EXPECT_TRUE(all_close(from_bf16(y_bits), y, norm_output_rtol(c), forward_atol(c)));

  // In place on the residual stream (sum_nc == residual_nc), as the trainer calls it.
  cuda::layernorm_fwd(n, c, bf16_ptr(d_x), bf16_ptr(d_res), d_w.get(), d_b.get(), kEps,
                      bf16_ptr(d_res), bf16_ptr(d_y), d_mean.get(), d_rstd.get(), nullptr);
  EXPECT_TRUE(bits_equal(download(d_res), to_bf16(sum)));
  EXPECT_TRUE(bits_equal(download(d_y), y_bits));
}

TEST_P(LayernormGpu, ForwardWithoutResidualMatchesCpu) {
  LOOM_REQUIRE_GPU();
  const auto [n, c] = GetParam();
  const std::vector<float> x = offset_values(n * c, 5, -kResidualMean);
  const std::vector<float> w = weights(c, 6);
  const std::vector<float> b = random_bf16_values(c, 7, 0.1f);
  std::vector<float> y(n * c), mean(n), rstd(n);
  cpu::layernorm_fwd<float>(n, c, x.data(), w.data(), b.data(), kEps, y.data(), mean.data(),
                            rstd.data());

  const auto d_x = upload(to_bf16(x));
  const auto d_w = upload(w);
  const auto d_b = upload(b);
  cuda::DeviceBuffer<uint16_t> d_y(n * c);
  cuda::DeviceBuffer<float> d_mean(n), d_rstd(n);
  cuda::layernorm_fwd(n, c, bf16_ptr(d_x), nullptr, d_w.get(), d_b.get(), kEps, nullptr,
                      bf16_ptr(d_y), d_mean.get(), d_rstd.get(), nullptr);
  EXPECT_TRUE(all_close(download(d_mean), mean, 2 * row_stat_rtol(c), 0.0));
  EXPECT_TRUE(all_close(download(d_rstd), rstd, row_stat_rtol(c), 0.0));
  EXPECT_TRUE(all_close(from_bf16(download(d_y)), y, norm_output_rtol(c), forward_atol(c)));
}

TEST_P(LayernormGpu, BackwardMatchesCpuAndAddsResidualGradient) {
  LOOM_REQUIRE_GPU();
  const auto [n, c] = GetParam();
  const std::vector<float> x =
      bf16_sum(random_bf16_values(n * c, 8), offset_values(n * c, 9, kResidualMean));
  const std::vector<float> w = weights(c, 10);
  const std::vector<float> b = random_bf16_values(c, 11, 0.1f);
  const std::vector<float> dy = random_bf16_values(n * c, 12);
  const std::vector<float> dres = random_bf16_values(n * c, 13);
  const std::vector<float> dw0 = random_bf16_values(c, 14);  // dw, db accumulate onto these
  const std::vector<float> db0 = random_bf16_values(c, 15);
  std::vector<float> y(n * c), mean(n), rstd(n);
  cpu::layernorm_fwd<float>(n, c, x.data(), w.data(), b.data(), kEps, y.data(), mean.data(),
                            rstd.data());
  std::vector<float> dx(n * c);
  std::vector<float> dw = dw0, db = db0;
  cpu::layernorm_bwd<float>(n, c, dy.data(), x.data(), w.data(), mean.data(), rstd.data(),
                            dx.data(), dw.data(), db.data());
  for (int64_t i = 0; i < n * c; ++i) dx[i] += dres[i];
  // sum_n |dy xhat| and sum_n |dy| per column, for the dw and db bounds.
  std::vector<double> abs_dw_terms(c, 0.0), abs_db_terms(c, 0.0);
  for (int64_t row = 0; row < n; ++row) {
    for (int64_t j = 0; j < c; ++j) {
      const double g = dy[row * c + j];
      abs_dw_terms[j] += std::abs(g * (x[row * c + j] - mean[row]) * rstd[row]);
      abs_db_terms[j] += std::abs(g);
    }
  }

  const auto d_x = upload(to_bf16(x));
  const auto d_dy = upload(to_bf16(dy));
  const auto d_dres = upload(to_bf16(dres));
  const auto d_w = upload(w);
  const auto d_mean = upload(mean);  // the CPU's statistics: the test isolates the backward
  const auto d_rstd = upload(rstd);
  const auto d_dw = upload(dw0);
  const auto d_db = upload(db0);
  cuda::DeviceBuffer<uint16_t> d_dx(n * c);
  cuda::DeviceBytes workspace(cuda::layernorm_bwd_workspace_bytes(n, c));
  cuda::layernorm_bwd(n, c, bf16_ptr(d_dy), bf16_ptr(d_x), d_w.get(), d_mean.get(), d_rstd.get(),
                      bf16_ptr(d_dres), bf16_ptr(d_dx), d_dw.get(), d_db.get(), workspace.get(),
                      nullptr);
  const std::vector<uint16_t> dx_bits = download(d_dx);
  EXPECT_TRUE(all_close(from_bf16(dx_bits), dx, kBf16Rtol, kDxAtol));
  EXPECT_TRUE(sums_close(download(d_dw), dw, abs_dw_terms, kParamGradRelToAbsSum));
  EXPECT_TRUE(sums_close(download(d_db), db, abs_db_terms, kParamGradRelToAbsSum));

  // In place on the residual-stream gradient (dx_nc == dresidual_nc): the same bits.
  const auto d_dw_scratch = upload(dw0);
  const auto d_db_scratch = upload(db0);
  cuda::layernorm_bwd(n, c, bf16_ptr(d_dy), bf16_ptr(d_x), d_w.get(), d_mean.get(), d_rstd.get(),
                      bf16_ptr(d_dres), bf16_ptr(d_dres), d_dw_scratch.get(), d_db_scratch.get(),
                      workspace.get(), nullptr);
  EXPECT_TRUE(bits_equal(download(d_dres), dx_bits));
}

// dw/db += add a total formed in a fixed order: two passes from zero give exactly 2x the first
// (x + x is exact in fp32), and a fresh run repeats the first bit for bit.
TEST_P(LayernormGpu, BackwardIsDeterministicAndAccumulatesParamGrads) {
  LOOM_REQUIRE_GPU();
  const auto [n, c] = GetParam();
  const std::vector<float> x = offset_values(n * c, 16, kResidualMean);
  const std::vector<float> w = weights(c, 17);
  const std::vector<float> b = random_bf16_values(c, 18, 0.1f);
  const std::vector<float> dy = random_bf16_values(n * c, 19);
  std::vector<float> y(n * c), mean(n), rstd(n);
  cpu::layernorm_fwd<float>(n, c, x.data(), w.data(), b.data(), kEps, y.data(), mean.data(),
                            rstd.data());

  const auto d_x = upload(to_bf16(x));
  const auto d_dy = upload(to_bf16(dy));
  const auto d_w = upload(w);
  const auto d_mean = upload(mean);
  const auto d_rstd = upload(rstd);
  const std::vector<float> zeros(c, 0.0f);
  auto d_dw = upload(zeros);
  auto d_db = upload(zeros);
  cuda::DeviceBuffer<uint16_t> d_dx(n * c);
  cuda::DeviceBytes workspace(cuda::layernorm_bwd_workspace_bytes(n, c));
  const auto backward = [&](float* dw, float* db) {
    cuda::layernorm_bwd(n, c, bf16_ptr(d_dy), bf16_ptr(d_x), d_w.get(), d_mean.get(), d_rstd.get(),
                        nullptr, bf16_ptr(d_dx), dw, db, workspace.get(), nullptr);
  };
  backward(d_dw.get(), d_db.get());
  const std::vector<float> dw_once = download(d_dw);
  const std::vector<float> db_once = download(d_db);
  const std::vector<uint16_t> dx_once = download(d_dx);
  backward(d_dw.get(), d_db.get());
  std::vector<float> dw_doubled = dw_once, db_doubled = db_once;
  for (float& v : dw_doubled) v *= 2.0f;
  for (float& v : db_doubled) v *= 2.0f;
  EXPECT_TRUE(bits_equal(download(d_dw), dw_doubled));
  EXPECT_TRUE(bits_equal(download(d_db), db_doubled));
  EXPECT_TRUE(bits_equal(download(d_dx), dx_once));

  auto d_dw_fresh = upload(zeros);
  auto d_db_fresh = upload(zeros);
  backward(d_dw_fresh.get(), d_db_fresh.get());
  EXPECT_TRUE(bits_equal(download(d_dw_fresh), dw_once));
  EXPECT_TRUE(bits_equal(download(d_db_fresh), db_once));
}

// C: GPT-2 small (768), 1.3 B Llama (2048), 13 B Llama (5120), 1000 (vector path, not a
// multiple of the 64-column dw tile), 999 (element path). N: not multiples of 8 or 128, and 1.
INSTANTIATE_TEST_SUITE_P(Shapes, LayernormGpu,
                         ::testing::Values(NormShape{2053, 768}, NormShape{1031, 2048},
                                           NormShape{517, 5120}, NormShape{2053, 1000},
                                           NormShape{300, 999}, NormShape{1, 768},
                                           NormShape{129, 5120}));

}  // namespace
}  // namespace loom::kernels
