// AdamW, clipping and the learning-rate schedule against hand computations; the spike guard's
// decisions on made-up loss histories.
#include <cmath>
#include <limits>
#include <numbers>

#include <gtest/gtest.h>

#include "core/model_io.h"
#include "trainer/optimizer.h"
#include "trainer/spike_guard.h"

namespace loom::train {
namespace {

TEST(LearningRate, LinearWarmupThenCosineToTenPercent) {
  OptimizerConfig c;
  c.lr = 1e-3;
  c.warmup_steps = 10;
  c.decay_steps = 110;
  EXPECT_DOUBLE_EQ(learning_rate(c, 1), 1e-4);
  EXPECT_DOUBLE_EQ(learning_rate(c, 10), 1e-3);
  // Half-way through the decay: floor + (peak - floor) / 2.
  EXPECT_NEAR(learning_rate(c, 60), 1e-4 + 0.5 * 9e-4, 1e-15);
  EXPECT_NEAR(learning_rate(c, 110), 1e-4, 1e-15);  // Qwen: decays to 10% of the peak
  EXPECT_NEAR(learning_rate(c, 500), 1e-4, 1e-15);
  const double quarter = 1e-4 + 0.5 * 9e-4 * (1 + std::cos(std::numbers::pi * 0.25));
  EXPECT_NEAR(learning_rate(c, 35), quarter, 1e-15);
}

TEST(AdamW, FirstStepsMatchHandComputationAndSkipDecayOnNorms) {
  core::ModelSpec spec = core::load_model("tiny-llama").value();
  const ParamLayout layout(spec);
  OptimizerConfig c;
  c.lr = 0.1;
  c.weight_decay = 0.5;
  AdamW opt(layout, c);
  std::vector<float> p(layout.total(), 2.f), g(layout.total(), 0.5f);
  opt.update(p.data(), g.data(), c.lr, 1.0);
  // Step 1: mhat = g, vhat = g^2, so the Adam part is g / (|g| + eps) ~ 1.
  const double adam = 0.5 / (0.5 + 1e-8);
  const auto* w = layout.find("layers.0.attn.wq.weight");
  const auto* n = layout.find("layers.0.attn_norm.weight");
  EXPECT_NEAR(p[w->offset], 2.0 - 0.1 * (adam + 0.5 * 2.0), 1e-6);  // decayed
  EXPECT_NEAR(p[n->offset], 2.0 - 0.1 * adam, 1e-6);                // norm weight: no decay
  // Step 2 with gradient -0.5 and a clipping coefficient 0.5 (effective gradient -0.25).
  std::fill(g.begin(), g.end(), -0.5f);
  const double before = p[n->offset];
  opt.update(p.data(), g.data(), c.lr, 0.5);
  const double m = 0.9 * (0.1 * 0.5) + 0.1 * -0.25, v = 0.95 * (0.05 * 0.25) + 0.05 * 0.0625;
  const double mhat = m / (1 - 0.81), vhat = v / (1 - 0.95 * 0.95);
  EXPECT_NEAR(p[n->offset], before - 0.1 * mhat / (std::sqrt(vhat) + 1e-8), 1e-6);
  EXPECT_EQ(opt.updates(), 2);
}

TEST(AdamW, GradNormIsTheGlobalL2Norm) {
  std::vector<float> g(200001, 0.f);
  g[0] = 3.f;
  g[200000] = 4.f;
  EXPECT_DOUBLE_EQ(AdamW::grad_norm(g.data(), static_cast<int64_t>(g.size())), 5.0);
}

TEST(SpikeGuard, SkipsNonFiniteAndSpikesAndAsksForRollback) {
  SpikeGuardConfig c;
  c.min_history = 5;
  c.z_threshold = 6.0;
  c.rollback_after = 3;
  SpikeGuard g(c);
  std::string why;
  const double losses[] = {4.0, 3.9, 4.1, 4.0, 3.95, 4.05};
  for (double l : losses) EXPECT_EQ(g.check(l, 1.0 + 0.01 * l, &why), Verdict::kAccept);
  EXPECT_EQ(g.check(std::numeric_limits<double>::quiet_NaN(), 1.0, &why), Verdict::kSkipNonFinite);
  EXPECT_NE(why.find("non-finite loss"), std::string::npos) << why;
  EXPECT_EQ(g.check(40.0, 1.04, &why), Verdict::kSkipSpike);  // a 10x loss spike
  EXPECT_NE(why.find("spike"), std::string::npos) << why;
  EXPECT_EQ(g.check(4.0, std::numeric_limits<double>::infinity(), &why), Verdict::kRollback);
  g.reset_consecutive();
  EXPECT_EQ(g.check(4.02, 1.04, &why), Verdict::kAccept);  // ordinary values pass again
  // State round trip.
  SpikeGuard h(c);
  h.restore(g.state());
  EXPECT_EQ(h.state(), g.state());
}

}  // namespace
}  // namespace loom::train
