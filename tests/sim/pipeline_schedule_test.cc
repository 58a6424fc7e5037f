// Pipeline schedules against their closed forms: equal 1F1B stages take (m + p - 1)(f + b)
// (Narayanan et al. 2021, Sec. 2.2), interleaving with v chunks shrinks the bubble to
// (p - 1)(f + b)/v, GPipe takes the same as 1F1B for equal stages; and the task orders follow
// Megatron's warm-up counts.
#include "simulator/pipeline_schedule.h"

#include <gtest/gtest.h>

namespace loom::sim {
namespace {

core::Layout layout(int64_t pp, int64_t vpp, int64_t m) {
  core::Layout l;
  l.pp = pp;
  l.vpp = vpp;
  l.dp = 1;
  l.mbs = 1;
  l.gbs = m;
  l.partition.assign(pp * vpp, 1);
  return l;
}

ChunkCosts equal(int64_t chunks, double f, double b, double p2p = 0) {
  return {std::vector<double>(chunks, f), std::vector<double>(chunks, b),
          std::vector<double>(chunks, p2p)};
}

TEST(PipelineSchedule, OneFOneBEqualStagesMatchClosedForm) {
  for (int64_t p : {1, 2, 4, 8, 12}) {
    for (int64_t m : {1, 4, 16, 128}) {
      const auto l = layout(p, 1, m);
      const double f = 1.0, b = 2.0;
      const PipelineResult r = simulate_pipeline(l, equal(p, f, b));
      EXPECT_NEAR(r.makespan_s, (m + p - 1) * (f + b), 1e-9) << "p " << p << " m " << m;
      EXPECT_NEAR(r.bubble_fraction, (p - 1.0) / (m + p - 1.0), 1e-12);
    }
  }
}

TEST(PipelineSchedule, InterleavingDividesTheBubbleByV) {
  for (int64_t p : {2, 4, 8}) {
    for (int64_t v : {2, 3}) {
      const int64_t m = 4 * p;
      const auto l = layout(p, v, m);
      const double f = 1.0 / v, b = 2.0 / v;  // the stage's work split over v chunks
      const PipelineResult r = simulate_pipeline(l, equal(p * v, f, b));
      EXPECT_NEAR(r.makespan_s, m * 3.0 + (p - 1) * 3.0 / v, 1e-9) << "p " << p << " v " << v;
    }
  }
}

TEST(PipelineSchedule, GPipeEqualsOneFOneBForEqualStages) {
  auto l = layout(4, 1, 8);
  l.schedule = core::PipelineSchedule::kGPipe;
  EXPECT_NEAR(simulate_pipeline(l, equal(4, 1, 2)).makespan_s, (8 + 3) * 3.0, 1e-9);
}

TEST(PipelineSchedule, TransfersDelayTheCriticalPath) {
  // One micro-batch through 4 stages: 4 forwards, 4 backwards, 3 transfers each way.
  const auto l = layout(4, 1, 1);
  EXPECT_NEAR(simulate_pipeline(l, equal(4, 1, 2, 0.5)).makespan_s, 4 * 3 + 6 * 0.5, 1e-9);
}

TEST(PipelineSchedule, SlowestStageBoundsSteadyState) {
  // With many micro-batches the slowest stage dominates: about m x (f + b) of that stage.
  const auto l = layout(4, 1, 256);
  ChunkCosts c = equal(4, 1, 2);
  c.forward_s[3] = 1.5;  // the last stage also computes the LM head and the loss
  c.backward_s[3] = 3.0;
  const PipelineResult r = simulate_pipeline(l, c);
  EXPECT_GT(r.makespan_s, 256 * 4.5);
  EXPECT_LT(r.makespan_s, 256 * 4.5 + 3 * 4.5 + 1e-9);
  EXPECT_GT(r.bubble_fraction, 0.2);  // the other stages idle a third of the time
}

TEST(PipelineSchedule, OrdersFollowMegatronWarmup) {
  const auto l = layout(4, 1, 8);
  const auto order0 = stage_task_order(l, 0);
  ASSERT_EQ(order0.size(), 16u);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(order0[i].forward);  // pp - 1 warm-up forwards
  EXPECT_TRUE(order0[3].forward);
  EXPECT_FALSE(order0[4].forward);
  const auto order3 = stage_task_order(l, 3);
  EXPECT_TRUE(order3[0].forward);  // the last stage alternates from the start
  EXPECT_FALSE(order3[1].forward);
  const auto li = layout(4, 2, 8);
  const auto inter = stage_task_order(li, 0);
  // Megatron: (pp - stage - 1) * 2 + (vpp - 1) * pp = 6 + 4 = 10 warm-up forwards on stage 0.
  int warmup = 0;
  while (inter[warmup].forward) ++warmup;
  EXPECT_EQ(warmup, 11);         // 10 warm-up + the first steady-state forward
  EXPECT_EQ(inter[4].chunk, 4);  // after pp forwards of chunk 0, chunk 1 (model chunk 4) starts
}

}  // namespace
}  // namespace loom::sim
