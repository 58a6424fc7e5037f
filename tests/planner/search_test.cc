// The layout search end to end on shipped models and profiles: BLOOM's own layout is found
// feasible and the chosen plan is at least as fast; every listed plan fits and is sorted;
// constraints restrict the space; an impossible request fails with a clear error; the plan
// file round-trips.
#include "planner/search.h"

#include <gtest/gtest.h>

#include "core/model_io.h"

namespace loom::plan {
namespace {

PlanRequest bloom() {
  PlanRequest r;
  r.model = core::load_model("bloom-176b").value();
  r.cluster = core::load_cluster_profile("jean-zay-a100-80gb").value();
  r.cluster_name = "jean-zay-a100-80gb";
  r.gpus = 384;
  r.gbs = 2048;
  r.seq = 2048;
  r.framework = sim::Framework::kMegatronDeepSpeed;
  return r;
}

TEST(Search, BloomLayoutIsFeasibleAndTheChoiceIsAtLeastAsFast) {
  PlanRequest own = bloom();
  for (const char* c : {"tp=4", "pp=12", "mbs=2", "zero=1", "recompute=full", "sp=0"}) {
    own.constraints.push_back(parse_constraint(c).value());
  }
  auto bloom_layout = search_plans(own);
  ASSERT_TRUE(bloom_layout.ok()) << bloom_layout.status().message();
  ASSERT_EQ(bloom_layout->top.size(), 1u);
  const Evaluated& theirs = bloom_layout->top[0];
  std::vector<int64_t> expected(12, 6);
  expected.front() = expected.back() = 5;
  EXPECT_EQ(theirs.layout.partition, expected);  // embedding and head counted as work

  auto best = search_plans(bloom());
  ASSERT_TRUE(best.ok()) << best.status().message();
  ASSERT_FALSE(best->top.empty());
  EXPECT_LE(best->top[0].step.step_time_s, theirs.step.step_time_s);
  for (size_t i = 0; i < best->top.size(); ++i) {
    EXPECT_LE(best->top[i].peak_gib, best->top[i].capacity_gib);
    if (i > 0) {
      EXPECT_GE(best->top[i].step.step_time_s, best->top[i - 1].step.step_time_s);
    }
  }
  EXPECT_FALSE(best->runner_up_reason.empty());
  EXPECT_GT(best->candidates, 1000);
  EXPECT_GT(best->rejected.at("over memory on some stage"), 0);
}

TEST(Search, ImpossibleRequestFailsClearly) {
  PlanRequest r = bloom();
  r.gpus = 8;  // 176B parameters cannot fit 8 GPUs
  auto result = search_plans(r);
  ASSERT_TRUE(result.ok());
  EXPECT_TRUE(result->top.empty());
  EXPECT_GT(result->rejected.at("over memory on some stage"), 0);
  auto bad = parse_constraint("tq<=8");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("unknown field 'tq'"), std::string::npos);
}

TEST(Search, PlanFileRoundTrips) {
  PlanRequest r;
  r.model = core::load_model("tiny-llama").value();
  r.cluster = core::load_cluster_profile("dgx-a100-80gb").value();
  r.cluster_name = "dgx-a100-80gb";
  r.gpus = 8;
  r.gbs = 16;
  r.seq = 128;
  auto result = search_plans(r);
  ASSERT_TRUE(result.ok()) << result.status().message();
  ASSERT_FALSE(result->top.empty());
  const Plan p = make_plan(r, result->top[0]);
  const std::string path = ::testing::TempDir() + "/plan.yaml";
  ASSERT_TRUE(save_plan(p, path).ok());
  auto back = load_plan(path);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->layout.partition, p.layout.partition);
  EXPECT_EQ(back->layout.tp, p.layout.tp);
  EXPECT_EQ(back->layout.recompute, p.layout.recompute);
  EXPECT_EQ(back->model.total_params(), p.model.total_params());
  EXPECT_DOUBLE_EQ(back->predicted.step_time_s, p.predicted.step_time_s);
  EXPECT_EQ(back->cluster, "dgx-a100-80gb");
}

}  // namespace
}  // namespace loom::plan
