// AdamW on the device (kernels/cuda/adamw.h) against the CPU optimizer's arithmetic: the global
// gradient norm against an in-order double sum (as AdamW::grad_norm sums), the clip coefficient
// against trainer.cc's formula, and five AdamW steps over two weight-decay ranges against the
// per-element loop of trainer/optimizer.cc (numerics.h adamw_update<float>), including the bf16
// weight copy, which must be exactly bf16(param).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "gpu_test_util.h"
#include "kernels/cuda/adamw.h"
#include "linalg_test_util.h"

namespace loom::kernels::cuda {
namespace {

using testing::download;
using testing::upload;
using testing::linalg::kAdamWMomentAtol;
using testing::linalg::kAdamWParamAtolPerLr;
using testing::linalg::kAdamWRtol;
using testing::linalg::kAdamWSecondMomentAtol;
using testing::linalg::kGradNormRtol;

std::vector<float> normal_values(std::size_t n, uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

double cpu_norm(const std::vector<float>& g) {
  double sum = 0.0;
  for (float x : g) sum += static_cast<double>(x) * x;
  return std::sqrt(sum);
}

double device_norm(const DeviceBuffer<float>& grads, int64_t count) {
  DeviceBuffer<double> partials(kGradNormBlocks);
  DeviceBuffer<double> norm(1);
  grad_norm(grads.get(), count, partials.get(), norm.get(), nullptr);
  return download(norm)[0];
}

// Tolerance: kGradNormRtol in linalg_test_util.h.
TEST(AdamWGpu, GradNormMatchesCpuDoubleSumAndIsDeterministic) {
  LOOM_REQUIRE_GPU();
  // 3M elements: each of the 1024 x 256 first-stage threads strides over ~11 of them; the odd
  // count leaves a partial last sweep.
  const int64_t count = 3'000'001;
  const auto g = normal_values(static_cast<std::size_t>(count), 7, 1e-2f);
  const auto dg = upload(g);
  const double want = cpu_norm(g);
  const double got = device_norm(dg, count);
  EXPECT_NEAR(got, want, kGradNormRtol * want);
  EXPECT_EQ(device_norm(dg, count), got) << "two runs must agree bit for bit";
  // A prefix: the kernel must honour count, not the allocation.
  const std::vector<float> head(g.begin(), g.begin() + 1000);
  EXPECT_NEAR(device_norm(dg, 1000), cpu_norm(head), kGradNormRtol * cpu_norm(head));
  EXPECT_EQ(device_norm(dg, 0), 0.0);
}

// trainer.cc: coef = clip / (norm + 1e-6) if clip > 0 and norm > clip, else 1, in double, then
// rounded to float as AdamW::update rounds its grad_scale: identical arithmetic, so exact.
TEST(AdamWGpu, ClipCoefficientMatchesTrainerFormula) {
  LOOM_REQUIRE_GPU();
  for (double norm : {0.5, 1.0, 3.25, 1e6}) {
    for (double clip : {0.0, 1.0}) {
      DeviceBuffer<double> dn = upload(std::vector<double>{norm});
      DeviceBuffer<float> coef(1);
      clip_coefficient(dn.get(), clip, coef.get(), nullptr);
      const float want = static_cast<float>(clip > 0.0 && norm > clip ? clip / (norm + 1e-6) : 1.0);
      EXPECT_EQ(download(coef)[0], want) << "norm " << norm << " clip " << clip;
    }
  }
}

// The CPU sequence of trainer/optimizer.cc for one range: g * scale in fp32, then numerics.h.
void cpu_adamw(int64_t begin, int64_t end, std::vector<float>& p, std::vector<float>& m,
               std::vector<float>& v, const std::vector<float>& g, float scale,
               const AdamWStep& st) {
  for (int64_t i = begin; i < end; ++i)
    kernels::adamw_update<float>(p[i], m[i], v[i], g[i] * scale, st);
}

// Tolerances: kAdamW* in linalg_test_util.h.
TEST(AdamWGpu, FiveStepsMatchCpuOptimizerAndBf16CopyIsRoundedParam) {
  LOOM_REQUIRE_GPU();
  const int64_t count = 100'003;
  const int64_t decay_end = 60'000;  // [0, 60000) decayed (matrices), the rest not (norms, biases)
  std::vector<float> p = normal_values(static_cast<std::size_t>(count), 11, 0.02f);
  for (int64_t i = decay_end; i < count; ++i) p[i] += 1.0f;  // norm weights around 1
  std::vector<float> m(p.size(), 0.0f), v(p.size(), 0.0f);
  auto dp = upload(p);
  auto dm = upload(m);
  auto dv = upload(v);
  DeviceBuffer<uint16_t> dp16(p.size());
  DeviceBuffer<double> partials(kGradNormBlocks), norm(1);
  DeviceBuffer<float> coef(1);
  const double beta1 = 0.9, beta2 = 0.95, clip = 1.0;
  const double lr_max = 1e-3;
  for (int step = 1; step <= 5; ++step) {
    // Step 3 has small gradients (norm ~0.3 < clip: coefficient 1); the others are clipped.
    const float scale = step == 3 ? 1e-3f : 1e-2f;
    const auto g = normal_values(p.size(), 100 + step, scale);
    const auto dg = upload(g);
    grad_norm(dg.get(), count, partials.get(), norm.get(), nullptr);
    clip_coefficient(norm.get(), clip, coef.get(), nullptr);
    const float gpu_coef = download(coef)[0];
    EXPECT_EQ(gpu_coef == 1.0f, step == 3) << "step " << step;
    AdamWStep st;  // built as trainer/optimizer.cc builds it
    st.lr = static_cast<float>(lr_max * step / 5.0);
    st.beta1 = static_cast<float>(beta1);
    st.beta2 = static_cast<float>(beta2);
    st.eps = 1e-8f;
    st.bias_correction1 = static_cast<float>(1.0 - std::pow(beta1, step));
    st.bias_correction2 = static_cast<float>(1.0 - std::pow(beta2, step));
    auto* p16 = testing::linalg::as_bf16(dp16);
    st.weight_decay = 0.1f;
    adamw_update(decay_end, dp.get(), dm.get(), dv.get(), dg.get(), coef.get(), st, p16, nullptr);
    cpu_adamw(0, decay_end, p, m, v, g, gpu_coef, st);
    st.weight_decay = 0.0f;
    adamw_update(count - decay_end, dp.get() + decay_end, dm.get() + decay_end,
                 dv.get() + decay_end, dg.get() + decay_end, coef.get(), st, p16 + decay_end,
                 nullptr);
    cpu_adamw(decay_end, count, p, m, v, g, gpu_coef, st);
  }
  const auto gp = download(dp);
  EXPECT_TRUE(testing::all_close(gp, p, kAdamWRtol, kAdamWParamAtolPerLr * lr_max));
  EXPECT_TRUE(testing::all_close(download(dm), m, kAdamWRtol, kAdamWMomentAtol));
  EXPECT_TRUE(testing::all_close(download(dv), v, kAdamWRtol, kAdamWSecondMomentAtol));
  EXPECT_TRUE(testing::linalg::bitwise_equal(download(dp16), testing::to_bf16(gp)));
}

}  // namespace
}  // namespace loom::kernels::cuda
