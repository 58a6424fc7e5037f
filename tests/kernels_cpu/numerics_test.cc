// Tests of kernels/cpu/numerics.h: bf16 round trips and round-to-nearest-even ties (bit patterns
// worked out by hand), GeLU/SiLU values and derivatives (finite differences), the online-softmax
// and log-sum-exp merge against direct formulas, and one AdamW step against a hand computation.
#include "kernels/cpu/numerics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "grad_check.h"

namespace loom::kernels {
namespace {

TEST(Bf16, EveryNonNanBf16ValueRoundTripsExactly) {
  for (uint32_t bits = 0; bits <= 0xFFFFu; ++bits) {
    const uint16_t h = static_cast<uint16_t>(bits);
    const float f = bf16_to_float(h);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(f)))) << std::hex << bits;
    } else {
      ASSERT_EQ(float_to_bf16(f), h) << std::hex << bits;
    }
  }
}

TEST(Bf16, RoundsToNearestTiesToEven) {
  // 0x3F808000 = 1 + 2^-8, exactly halfway between bf16 0x3F80 (1.0) and 0x3F81: even wins.
  EXPECT_EQ(float_to_bf16(bits_float(0x3F808000u)), 0x3F80u);
  // Halfway between 0x3F81 (odd) and 0x3F82: rounds up to the even one.
  EXPECT_EQ(float_to_bf16(bits_float(0x3F818000u)), 0x3F82u);
  // Just above / below the halfway point round to nearest.
  EXPECT_EQ(float_to_bf16(bits_float(0x3F808001u)), 0x3F81u);
  EXPECT_EQ(float_to_bf16(bits_float(0x3F807FFFu)), 0x3F80u);
  // Negative tie: sign-magnitude, same rule.
  EXPECT_EQ(float_to_bf16(bits_float(0xBF808000u)), 0xBF80u);
  // A tie whose rounding carries into the exponent: 0x3F7F8000 -> 0x3F80 (1.0).
  EXPECT_EQ(float_to_bf16(bits_float(0x3F7F8000u)), 0x3F80u);
  // Subnormal ties behave the same way.
  EXPECT_EQ(float_to_bf16(bits_float(0x00008000u)), 0x0000u);
  EXPECT_EQ(float_to_bf16(bits_float(0x00018000u)), 0x0002u);
  // FLT_MAX is above the largest bf16 (0x7F7F) by more than half an ulp: overflows to +inf.
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::max()), 0x7F80u);
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::infinity()), 0x7F80u);
  EXPECT_EQ(float_to_bf16(-std::numeric_limits<float>::infinity()), 0xFF80u);
  // A signalling NaN whose payload sits in the dropped bits must stay a NaN (not become inf).
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(bits_float(0x7F800001u)))));
  EXPECT_EQ(float_to_bf16(bits_float(0xFFC00000u)), 0xFFC0u);
  // 1/3 = 0x3EAAAAAB -> 0x3EAB (remainder 0xAAAB > 0x8000 rounds up).
  EXPECT_EQ(float_to_bf16(1.0f / 3.0f), 0x3EABu);
  EXPECT_EQ(bf16_round(1.0f / 3.0f), 0.333984375f);
}

TEST(Activations, GeluTanhMatchesHandValues) {
  // 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))) evaluated in Python at x = 1 and x = -2.
  EXPECT_NEAR(gelu_tanh(1.0), 0.8411919906082768, 1e-15);
  EXPECT_NEAR(gelu_tanh(-2.0), -0.04540230591222494, 1e-15);
  EXPECT_NEAR(silu(1.5), 1.2263617142904655, 1e-15);
  EXPECT_EQ(silu(-1000.0), -0.0);  // exp(1000) = inf must give 0, not NaN
  EXPECT_EQ(silu_grad(-1000.0), 0.0);
}

TEST(Activations, DerivativesMatchFiniteDifferences) {
  const double h = cpu::testing::kFiniteDiffStep;
  for (double x = -6.0; x <= 6.0; x += 0.37) {
    const double gelu_fd = (gelu_tanh(x + h) - gelu_tanh(x - h)) / (2 * h);
    const double silu_fd = (silu(x + h) - silu(x - h)) / (2 * h);
    // Derivatives are O(1); the central-difference error is ~1e-10 (see grad_check.h).
    EXPECT_NEAR(gelu_tanh_grad(x), gelu_fd, 1e-8) << x;
    EXPECT_NEAR(silu_grad(x), silu_fd, 1e-8) << x;
  }
}

TEST(OnlineSoftmax, ElementUpdatesMatchTwoPassSoftmax) {
  const std::vector<double> s = cpu::testing::random_vector(40, 7, -30.0, 30.0);
  const std::vector<double> v = cpu::testing::random_vector(40, 8);
  double m = -std::numeric_limits<double>::infinity();
  double l = 0;
  double acc = 0;  // sum_j exp(s_j - m) v_j, rescaled as m grows
  for (size_t j = 0; j < s.size(); ++j) {
    const double factor = online_softmax_update(m, l, s[j]);
    acc = acc * factor + std::exp(s[j] - m) * v[j];
  }
  double max = s[0];
  for (double x : s) max = std::max(max, x);
  double sum = 0;
  double weighted = 0;
  for (size_t j = 0; j < s.size(); ++j) {
    sum += std::exp(s[j] - max);
    weighted += std::exp(s[j] - max) * v[j];
  }
  EXPECT_EQ(m, max);
  EXPECT_NEAR(l, sum, 1e-13 * sum);
  EXPECT_NEAR(acc / l, weighted / sum, 1e-13);
}

TEST(OnlineSoftmax, RescaleFromEmptyStateIsZeroNotNan) {
  double m = -std::numeric_limits<double>::infinity();
  EXPECT_EQ(online_softmax_rescale(m, 3.0), 0.0);
  EXPECT_EQ(m, 3.0);
  EXPECT_EQ(online_softmax_rescale(m, 1.0), 1.0);  // max unchanged: no rescale
  EXPECT_EQ(m, 3.0);
  EXPECT_NEAR(online_softmax_rescale(m, 5.0), std::exp(-2.0), 1e-16);
}

TEST(LseMerge, MatchesDirectFormulaAndAvoidsOverflow) {
  EXPECT_NEAR(lse_merge(0.3, -1.2), std::log(std::exp(0.3) + std::exp(-1.2)), 1e-15);
  EXPECT_NEAR(lse_merge(1000.0, 1000.0), 1000.0 + std::log(2.0), 1e-12);  // exp(1000) = inf
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_EQ(lse_merge(-inf, 2.5), 2.5);
  EXPECT_EQ(lse_merge(2.5, -inf), 2.5);
  EXPECT_EQ(lse_merge(-inf, -inf), -inf);
}

TEST(AdamW, OneStepMatchesHandComputation) {
  // Step t = 3 from p = 0.5, m = 0.1, v = 0.01 with g = 0.2:
  // m = 0.9*0.1 + 0.1*0.2 = 0.11; v = 0.999*0.01 + 0.001*0.04 = 0.01003;
  // mhat = 0.11 / (1 - 0.9^3) = 0.405904...; vhat = 0.01003 / (1 - 0.999^3) = 3.346678...;
  // p = 0.5 - 1e-3 * (mhat / (sqrt(vhat) + 1e-8) + 0.1 * 0.5) = 0.49972812091342145.
  const AdamWStep step{1e-3f,
                       0.9f,
                       0.999f,
                       1e-8f,
                       0.1f,
                       static_cast<float>(1.0 - std::pow(0.9, 3)),
                       static_cast<float>(1.0 - std::pow(0.999, 3))};
  double p = 0.5, m = 0.1, v = 0.01;
  adamw_update(p, m, v, 0.2, step);
  // The hyper-parameters are fp32 (as the trainer stores them). Their rounding moves m by
  // 2.4e-9 (0.9f = 0.9 - 2.4e-8), v by 4e-10 (1 - 0.999f = 0.001 (1 - 1.3e-5)) and the update
  // (2.7e-4) by ~1e-7 relative, i.e. p by ~3e-11; the tolerances sit above those.
  EXPECT_NEAR(m, 0.11, 1e-8);
  EXPECT_NEAR(v, 0.01003, 2e-9);
  EXPECT_NEAR(p, 0.49972812091342145, 1e-9);
  // fp32 state: the same step within fp32 rounding of p (~3e-8 at 0.5).
  float pf = 0.5f, mf = 0.1f, vf = 0.01f;
  adamw_update(pf, mf, vf, 0.2f, step);
  EXPECT_NEAR(pf, 0.49972812091342145, 1e-7);
}

}  // namespace
}  // namespace loom::kernels
