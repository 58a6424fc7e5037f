// The CUDA RMSNorm (kernels/cuda/rmsnorm.h) against the CPU backend (cpu::rmsnorm_fwd/bwd in
// fp32 on the same bf16-rounded inputs): the fused residual sum bit for bit, rstd, y, dx and dw
// under the tolerances of bf16_test_util.h; dw accumulates and is bit-reproducible. Shapes
// cover the 16-byte vector path (C % 8 == 0) and the element path (C = 999), and N that is not
// a multiple of the 8 rows of a block or the 128 rows of a dw chunk.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <ostream>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/rmsnorm.h"
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
// y = sum * rstd * w is a product (no cancellation): atol only guards values near 0.
constexpr double kForwardAtol = 1e-6;
// dx = r dy w - coef x + dresidual cancels terms of size <= ~5 (5-sigma inputs): fp32
// differences of a few ulp of 5 (~1e-6); 1e-5 leaves a factor of 10.
constexpr double kDxAtol = 1e-5;

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

// The bf16 sum x + residual that the fused forward stores and normalises.
std::vector<float> bf16_sum(const std::vector<float>& x, const std::vector<float>& r) {
  std::vector<float> s(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) s[i] = bf16_round(x[i] + r[i]);
  return s;
}

class RmsnormGpu : public ::testing::TestWithParam<NormShape> {};

TEST_P(RmsnormGpu, FusedForwardMatchesCpu) {
  LOOM_REQUIRE_GPU();
  const auto [n, c] = GetParam();
  const std::vector<float> x = random_bf16_values(n * c, 1);
  const std::vector<float> res = random_bf16_values(n * c, 2);
  const std::vector<float> w = weights(c, 3);
  const std::vector<float> sum = bf16_sum(x, res);
  std::vector<float> y(n * c), rstd(n);
  cpu::rmsnorm_fwd<float>(n, c, sum.data(), w.data(), kEps, y.data(), rstd.data());

  const auto d_x = upload(to_bf16(x));
  const auto d_res = upload(to_bf16(res));
  const auto d_w = upload(w);
  cuda::DeviceBuffer<uint16_t> d_sum(n * c), d_y(n * c);
  cuda::DeviceBuffer<float> d_rstd(n);
  cuda::rmsnorm_fwd(n, c, bf16_ptr(d_x), bf16_ptr(d_res), d_w.get(), kEps, bf16_ptr(d_sum),
                    bf16_ptr(d_y), d_rstd.get(), nullptr);
  // The sum is one fp32 addition of two bf16 values, rounded once: the same bits on both sides.
  EXPECT_TRUE(bits_equal(download(d_sum), to_bf16(sum)));
  EXPECT_TRUE(all_close(download(d_rstd), rstd, row_stat_rtol(c), 0.0));
  const std::vector<uint16_t> y_bits = download(d_y);
  EXPECT_TRUE(all_close(from_bf16(y_bits), y, norm_output_rtol(c), kForwardAtol));

  // In place on the residual stream (sum_nc == residual_nc), as the trainer calls it.
  cuda::rmsnorm_fwd(n, c, bf16_ptr(d_x), bf16_ptr(d_res), d_w.get(), kEps, bf16_ptr(d_res),
                    bf16_ptr(d_y), d_rstd.get(), nullptr);
  EXPECT_TRUE(bits_equal(download(d_res), to_bf16(sum)));
  EXPECT_TRUE(bits_equal(download(d_y), y_bits));
}

TEST_P(RmsnormGpu, ForwardWithoutResidualMatchesCpu) {
  LOOM_REQUIRE_GPU();
  const auto [n, c] = GetParam();
  const std::vector<float> x = random_bf16_values(n * c, 4, 3.0f);
  const std::vector<float> w = weights(c, 5);
  std::vector<float> y(n * c), rstd(n);
  cpu::rmsnorm_fwd<float>(n, c, x.data(), w.data(), kEps, y.data(), rstd.data());

  const auto d_x = upload(to_bf16(x));
  const auto d_w = upload(w);
  cuda::DeviceBuffer<uint16_t> d_y(n * c);
  cuda::DeviceBuffer<float> d_rstd(n);
  cuda::rmsnorm_fwd(n, c, bf16_ptr(d_x), nullptr, d_w.get(), kEps, nullptr, bf16_ptr(d_y),
                    d_rstd.get(), nullptr);
  EXPECT_TRUE(all_close(download(d_rstd), rstd, row_stat_rtol(c), 0.0));
  EXPECT_TRUE(all_close(from_bf16(download(d_y)), y, norm_output_rtol(c), kForwardAtol));
}

TEST_P(RmsnormGpu, BackwardMatchesCpuAndAddsResidualGradient) {
  LOOM_REQUIRE_GPU();
  const auto [n, c] = GetParam();
  const std::vector<float> x = bf16_sum(random_bf16_values(n * c, 6), random_bf16_values(n * c, 7));
  const std::vector<float> w = weights(c, 8);
  const std::vector<float> dy = random_bf16_values(n * c, 9);
  const std::vector<float> dres = random_bf16_values(n * c, 10);
  const std::vector<float> dw0 = random_bf16_values(c, 11);  // dw accumulates onto this
  std::vector<float> y(n * c), rstd(n);
  cpu::rmsnorm_fwd<float>(n, c, x.data(), w.data(), kEps, y.data(), rstd.data());
  std::vector<float> dx(n * c);
  std::vector<float> dw = dw0;
  cpu::rmsnorm_bwd<float>(n, c, dy.data(), x.data(), w.data(), rstd.data(), dx.data(), dw.data());
  for (int64_t i = 0; i < n * c; ++i) dx[i] += dres[i];
  std::vector<double> abs_terms(c, 0.0);  // sum_n |dy x rstd| per column, for the dw bound
  for (int64_t row = 0; row < n; ++row)
    for (int64_t j = 0; j < c; ++j)
      abs_terms[j] += std::abs(double(dy[row * c + j]) * x[row * c + j] * rstd[row]);

  const auto d_x = upload(to_bf16(x));
  const auto d_dy = upload(to_bf16(dy));
  const auto d_dres = upload(to_bf16(dres));
  const auto d_w = upload(w);
  const auto d_rstd = upload(rstd);  // the CPU's statistics: the test isolates the backward
  const auto d_dw = upload(dw0);
  cuda::DeviceBuffer<uint16_t> d_dx(n * c);
  cuda::DeviceBytes workspace(cuda::rmsnorm_bwd_workspace_bytes(n, c));
  cuda::rmsnorm_bwd(n, c, bf16_ptr(d_dy), bf16_ptr(d_x), d_w.get(), d_rstd.get(), bf16_ptr(d_dres),
                    bf16_ptr(d_dx), d_dw.get(), workspace.get(), nullptr);
  const std::vector<uint16_t> dx_bits = download(d_dx);
  EXPECT_TRUE(all_close(from_bf16(dx_bits), dx, kBf16Rtol, kDxAtol));
  EXPECT_TRUE(sums_close(download(d_dw), dw, abs_terms, kParamGradRelToAbsSum));

  // In place on the residual-stream gradient (dx_nc == dresidual_nc): the same bits.
  const auto d_dw_scratch = upload(dw0);
  cuda::rmsnorm_bwd(n, c, bf16_ptr(d_dy), bf16_ptr(d_x), d_w.get(), d_rstd.get(), bf16_ptr(d_dres),
                    bf16_ptr(d_dres), d_dw_scratch.get(), workspace.get(), nullptr);
  EXPECT_TRUE(bits_equal(download(d_dres), dx_bits));
}

// dw += is an accumulation of a total formed in a fixed order: two passes from zero give
// exactly 2x the first (x + x is exact in fp32), and a fresh run repeats the first bit for bit.
TEST_P(RmsnormGpu, BackwardIsDeterministicAndAccumulatesDw) {
  LOOM_REQUIRE_GPU();
  const auto [n, c] = GetParam();
  const std::vector<float> x = random_bf16_values(n * c, 12);
  const std::vector<float> w = weights(c, 13);
  const std::vector<float> dy = random_bf16_values(n * c, 14);
  std::vector<float> y(n * c), rstd(n);
  cpu::rmsnorm_fwd<float>(n, c, x.data(), w.data(), kEps, y.data(), rstd.data());

  const auto d_x = upload(to_bf16(x));
  const auto d_dy = upload(to_bf16(dy));
  const auto d_w = upload(w);
  const auto d_rstd = upload(rstd);
  const std::vector<float> zeros(c, 0.0f);
  auto d_dw = upload(zeros);
  cuda::DeviceBuffer<uint16_t> d_dx(n * c);
  cuda::DeviceBytes workspace(cuda::rmsnorm_bwd_workspace_bytes(n, c));
  const auto backward = [&](float* dw) {
    cuda::rmsnorm_bwd(n, c, bf16_ptr(d_dy), bf16_ptr(d_x), d_w.get(), d_rstd.get(), nullptr,
                      bf16_ptr(d_dx), dw, workspace.get(), nullptr);
  };
  backward(d_dw.get());
  const std::vector<float> once = download(d_dw);
  const std::vector<uint16_t> dx_once = download(d_dx);
  backward(d_dw.get());
  std::vector<float> doubled = once;
  for (float& v : doubled) v *= 2.0f;
  EXPECT_TRUE(bits_equal(download(d_dw), doubled));
  EXPECT_TRUE(bits_equal(download(d_dx), dx_once));

  auto d_dw_fresh = upload(zeros);
  backward(d_dw_fresh.get());
  EXPECT_TRUE(bits_equal(download(d_dw_fresh), once));
}

// C: GPT-2 small (768), 1.3 B Llama (2048), 13 B Llama (5120), 1000 (vector path, not a
// multiple of the 64-column dw tile), 999 (element path). N: not multiples of 8 or 128, and 1.
INSTANTIATE_TEST_SUITE_P(Shapes, RmsnormGpu,
                         ::testing::Values(NormShape{2053, 768}, NormShape{1031, 2048},
                                           NormShape{517, 5120}, NormShape{2053, 1000},
                                           NormShape{300, 999}, NormShape{1, 768},
                                           NormShape{129, 5120}));

}  // namespace
}  // namespace loom::kernels
