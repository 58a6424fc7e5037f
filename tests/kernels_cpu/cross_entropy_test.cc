// Tests of the fused cross-entropy (kernels/cpu/cpu_cross_entropy.cc): losses against a naive
// log-softmax in fp64 with padded vocabulary columns and an ignored target, stability at large
// logits, and the in-place gradient against central finite differences in fp64 (< 1e-6) and
// fp32 analytic against fp64 analytic (< 1e-4); tolerances in grad_check.h.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "grad_check.h"
#include "kernels/cpu/cpu_ops.h"

namespace loom::kernels::cpu {
namespace {

using testing::OpRun;
using testing::Tensors;

constexpr int64_t kRows = 6;
constexpr int64_t kVocab = 37;
constexpr int64_t kPadded = 40;  // Vp > V: three padding columns that must not count
const std::vector<int32_t> kTargets{5, 36, -1, 0, 17, 5};  // row 2 ignored

// Logits in [-3, 3], padding columns set to 50 so that counting them would dominate the loss.
std::vector<double> make_logits(uint64_t seed) {
  auto x = testing::random_vector(kRows * kPadded, seed, -3.0, 3.0);
  for (int64_t n = 0; n < kRows; ++n) {
    for (int64_t j = kVocab; j < kPadded; ++j) x[n * kPadded + j] = 50.0;
  }
  return x;
}

// out = loss_n; the gradient of L = sum_n r_n loss_n with a uniform r_n = grad_scale.
template <typename T>
OpRun run_ce(const Tensors& in, const std::vector<double>& r, bool with_grads) {
  auto logits = testing::cast_vector<T>(in[0]);
  std::vector<T> loss(kRows);
  if (!with_grads) {
    cross_entropy_fwd(kRows, kPadded, kVocab, kTargets.data(), logits.data(), loss.data());
    return {testing::widen(loss), {}};
  }
  cross_entropy_fwd_bwd(kRows, kPadded, kVocab, kTargets.data(), logits.data(), T(r[0]),
                        loss.data());
  return {testing::widen(loss), {testing::widen(logits)}};
}

TEST(CrossEntropy, LossesMatchNaiveLogSoftmaxExcludingPaddingAndIgnoredRows) {
  const auto x = make_logits(101);
  std::vector<double> ref(kRows, 0.0);
  double ref_sum = 0;
  for (int64_t n = 0; n < kRows; ++n) {
    if (kTargets[n] < 0) continue;
    double sum = 0;
    for (int64_t j = 0; j < kVocab; ++j) sum += std::exp(x[n * kPadded + j]);
    ref[n] = -(x[n * kPadded + kTargets[n]] - std::log(sum));
    ref_sum += ref[n];
  }
  std::vector<double> logits = x, loss(kRows, -1.0);
  const double total =
      cross_entropy_fwd(kRows, kPadded, kVocab, kTargets.data(), logits.data(), loss.data());
  EXPECT_EQ(logits, x);  // the evaluation variant leaves logits unchanged
  EXPECT_LT(testing::max_rel_error(loss, ref), testing::kDoubleFwdTol);
  EXPECT_NEAR(total, ref_sum, testing::kDoubleFwdTol * ref_sum);
  EXPECT_EQ(loss[2], 0.0);

  std::vector<double> loss_bwd(kRows);
  const double total_bwd = cross_entropy_fwd_bwd(kRows, kPadded, kVocab, kTargets.data(),
                                                 logits.data(), 1.0, loss_bwd.data());
  EXPECT_EQ(total_bwd, total);  // same arithmetic for the loss in both variants
  EXPECT_EQ(loss_bwd, loss);
  for (int64_t n = 0; n < kRows; ++n) {
    for (int64_t j = kVocab; j < kPadded; ++j) EXPECT_EQ(logits[n * kPadded + j], 0.0);
  }
  for (int64_t j = 0; j < kPadded; ++j) EXPECT_EQ(logits[2 * kPadded + j], 0.0);  // ignored
  // Without per-row losses the sum is still returned.
  std::vector<double> again = x;
  EXPECT_EQ(cross_entropy_fwd_bwd(kRows, kPadded, kVocab, kTargets.data(), again.data(), 1.0,
                                  static_cast<double*>(nullptr)),
            total);
}

TEST(CrossEntropy, LargeLogitsStayFinite) {
  // exp(1000) overflows fp32 and fp64; the max-subtracted form gives loss log(V) for equal logits.
  std::vector<float> logits(kRows * kPadded, 1000.0f);
  std::vector<float> loss(kRows);
  const double total = cross_entropy_fwd_bwd(kRows, kPadded, kVocab, kTargets.data(), logits.data(),
                                             1.0f, loss.data());
  EXPECT_NEAR(total, 5 * std::log(static_cast<double>(kVocab)), 1e-5);
  for (float g : logits) EXPECT_TRUE(std::isfinite(g));
  EXPECT_NEAR(logits[1], 1.0 / kVocab, 1e-7);
}

TEST(CrossEntropy, GradientMatchesFiniteDifferences) {
  const Tensors in{make_logits(102)};
  const std::vector<double> r(kRows, 0.5);  // grad_scale = 0.5 (e.g. 1 / accumulation steps)
  const auto fd = testing::fd_errors(run_ce<double>, in, r);
  const auto fl = testing::float_errors(run_ce<float>, run_ce<double>, in, r);
  testing::report("cross-entropy fd64 dlogits", fd);
  testing::report("cross-entropy fp32 loss dlogits", fl);
  for (double e : fd) EXPECT_LT(e, testing::kDoubleGradTol);
  for (double e : fl) EXPECT_LT(e, testing::kFloatGradTol);
}

}  // namespace
}  // namespace loom::kernels::cpu
