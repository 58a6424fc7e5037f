// Biases, position tables and the bf16 weight copy on the device against the CPU backend:
// bias_add is one fp32 add rounded once (bit-exact with the CPU's add rounded the same way),
// bias_bwd a column sum in another order (fp32, relative 1e-5 for a few hundred rows of
// bf16 values), convert_to_bf16 numerics.h's rounding (bit-exact).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/bias.h"
#include "kernels/cuda/fill.h"
#include "tests/kernels/gpu_test_util.h"

namespace loom::kernels {
namespace {

using namespace testing;  // NOLINT: the gpu test helpers

TEST(BiasGpu, AddMatchesCpuRoundedOnce) {
  LOOM_REQUIRE_GPU();
  const int64_t n = 333, c = 200;
  const std::vector<float> y = random_bf16_values(n * c, 11), bias = random_bf16_values(c, 12, 0.3f);
  std::vector<float> want = y;
  cpu::bias_add<float>(n, c, bias.data(), want.data());
  for (float& w : want) w = bf16_round(w);
  auto dy = upload(to_bf16(y));
  auto db = upload(bias);
  cuda::bias_add(n, c, db.get(), reinterpret_cast<__nv_bfloat16*>(dy.get()), nullptr);
  EXPECT_EQ(from_bf16(download(dy)), want);
}

TEST(BiasGpu, BackwardAccumulatesColumnSums) {
  LOOM_REQUIRE_GPU();
  for (auto [n, c] : {std::pair<int64_t, int64_t>{1, 7}, {300, 96}, {1000, 1000}}) {
    const std::vector<float> dy = random_bf16_values(n * c, 13);
    std::vector<float> start = random_bf16_values(c, 14), want = start;
    cpu::bias_bwd<float>(n, c, dy.data(), want.data());
    auto ddy = upload(to_bf16(dy));
    auto ddb = upload(start);
    cuda::DeviceBytes ws(cuda::bias_bwd_workspace_bytes(n, c));
    cuda::bias_bwd(n, c, reinterpret_cast<const __nv_bfloat16*>(ddy.get()), ddb.get(), ws.get(),
                   nullptr);
    EXPECT_TRUE(all_close(download(ddb), want, 1e-5, 1e-5)) << n << " x " << c;
  }
}

TEST(BiasGpu, ConvertRoundsToNearestEven) {
  LOOM_REQUIRE_GPU();
  std::vector<float> x = random_bf16_values(4099, 15);
  for (size_t i = 0; i < x.size(); ++i) x[i] *= 1.0f + 1e-3f * float(i % 7);  // off the bf16 grid
  std::vector<uint16_t> want(x.size());
  for (size_t i = 0; i < x.size(); ++i) want[i] = float_to_bf16(x[i]);
  auto dx = upload(x);
  cuda::DeviceBuffer<uint16_t> out(x.size());
  cuda::convert_to_bf16(static_cast<int64_t>(x.size()), dx.get(),
                        reinterpret_cast<__nv_bfloat16*>(out.get()), nullptr);
  EXPECT_EQ(download(out), want);
}

// N(0, 0.02) over a million draws: mean within 5 standard errors of 0, standard deviation
// within 1%, the same values for the same seed and offset, others for another seed.
TEST(FillGpu, NormalHasTheMomentsAndIsReproducible) {
  LOOM_REQUIRE_GPU();
  const int64_t n = 1 << 20;
  cuda::DeviceBuffer<float> a(n), b(n), c(n);
  cuda::fill_normal(n, 42, 1000, 0.02f, a.get(), nullptr);
  cuda::fill_normal(n, 42, 1000, 0.02f, b.get(), nullptr);
  cuda::fill_normal(n, 43, 1000, 0.02f, c.get(), nullptr);
  const std::vector<float> va = download(a), vb = download(b), vc = download(c);
  EXPECT_EQ(va, vb);
  EXPECT_NE(va, vc);
  double s = 0, s2 = 0;
  for (float x : va) s += x, s2 += double(x) * x;
  const double mean = s / n, sd = std::sqrt(s2 / n - mean * mean);
  EXPECT_LT(std::abs(mean), 5 * 0.02 / std::sqrt(double(n)));
  EXPECT_NEAR(sd, 0.02, 0.0002);
  cuda::fill_value(n, 1.0f, a.get(), nullptr);
  EXPECT_EQ(download(a), std::vector<float>(n, 1.0f));
}

}  // namespace
}  // namespace loom::kernels
