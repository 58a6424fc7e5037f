// Step-time assembly: the breakdown adds up to the step time; a one-GPU step is the
// micro-batches' forward and backward plus the optimizer; pipeline stages show the 1F1B
// bubble; data parallelism adds the gradient reduction; a profile without compute parameters
// is refused; the Chrome trace has a track per stage.
#include "simulator/step_time.h"

#include <gtest/gtest.h>

#include <set>

#include "core/cluster_profile.h"
#include "core/model_io.h"
#include "simulator/block_ops.h"
#include "simulator/compute_model.h"

namespace loom::sim {
namespace {

StepTimeInput input(const char* model, const char* cluster, core::Layout l,
                    Framework fw = Framework::kLoom) {
  StepTimeInput in;
  in.model = core::load_model(model).value();
  in.cluster = core::load_cluster_profile(cluster).value();
  auto resolved = core::resolve_layout(l, in.model);
  EXPECT_TRUE(resolved.ok()) << resolved.status().message();
  in.layout = resolved.value();
  in.framework = fw;
  return in;
}

core::Layout layout(int64_t gpus, int64_t tp, int64_t pp, int64_t mbs, int64_t gbs) {
  core::Layout l;
  l.gpus = gpus;
  l.tp = tp;
  l.pp = pp;
  l.mbs = mbs;
  l.gbs = gbs;
  l.seq = 2048;
  return l;
}

double sum(const StepBreakdown& b) {
  return b.compute + b.tp_comm + b.pp_comm + b.dp_comm + b.bubble + b.optimizer + b.other;
}

TEST(StepTime, BreakdownAddsUpToTheStepTime) {
  for (const auto& l : {layout(8, 8, 1, 1, 16), layout(64, 8, 4, 1, 128), layout(16, 2, 2, 2, 64)}) {
    for (Framework fw : {Framework::kMegatron, Framework::kMegatronDeepSpeed, Framework::kLoom}) {
      auto r = simulate_step(input("llama2-13b", "dgx-a100-80gb", l, fw));
      ASSERT_TRUE(r.ok()) << r.status().message();
      EXPECT_NEAR(sum(r->breakdown), r->step_time_s, 1e-9 * r->step_time_s) << l.summary();
      EXPECT_GT(r->breakdown.compute, 0);
      EXPECT_GE(r->breakdown.bubble, -1e-12);
      EXPECT_LT(r->mfu, 1.0);
      EXPECT_NEAR(r->tokens_per_s, l.gbs * 2048.0 / r->step_time_s, 1e-6 * r->tokens_per_s);
    }
  }
}

// The per-kind split covers the compute exactly when no TP traffic overlaps it; with TP the
// overlapped share is the only remainder. GEMMs dominate a 13B model at seq 2048.
TEST(StepTime, ComputeSplitsIntoGemmAttentionAndElementwise) {
  for (const auto& l : {layout(1, 1, 1, 1, 8), layout(16, 2, 2, 2, 64)}) {
    auto r = simulate_step(input("llama2-13b", "dgx-a100-80gb", l));
    ASSERT_TRUE(r.ok()) << r.status().message();
    const double kinds = r->compute_gemm_s + r->compute_attention_s + r->compute_elementwise_s;
    EXPECT_LE(kinds, r->breakdown.compute * (1 + 1e-12)) << l.summary();
    if (l.tp == 1) {
      EXPECT_NEAR(kinds, r->breakdown.compute, 1e-9 * kinds) << l.summary();
    }
    EXPECT_GT(r->compute_gemm_s, 0.6 * r->breakdown.compute) << l.summary();
    EXPECT_GT(r->compute_attention_s, 0);
    EXPECT_GT(r->compute_elementwise_s, 0);
  }
}

TEST(StepTime, OneGpuIsMicrobatchesTimesForwardBackwardPlusOptimizer) {
  auto in = input("llama-7b", "dgx-a100-80gb", layout(1, 1, 1, 1, 4));
  auto r = simulate_step(in);
  ASSERT_TRUE(r.ok()) << r.status().message();
  // Recompute the forward + backward of one micro-batch from the op lists, each kernel at the
  // framework's rate relative to the profile's reference kernels.
  const ComputeModel compute(in.cluster, in.layout.precision);
  const FrameworkTraits& fw = framework_traits(in.framework);
  OpOptions o;
  double per_mb = 0;
  auto add = [&](const std::vector<Op>& ops) {
    for (const auto& op : ops) {
      const double scale = op.kind == OpKind::kGemm        ? fw.gemm_efficiency_scale
                           : op.kind == OpKind::kAttention ? fw.attention_efficiency_scale
                                                           : 1.0;
      per_mb += compute.op_time_s(op) / scale;
    }
  };
  for (int i = 0; i < 32; ++i) {
    add(block_forward_ops(in.model, in.layout, o));
    add(block_backward_ops(in.model, in.layout, o));
  }
  add(embedding_ops(in.model, in.layout, false));
  add(embedding_ops(in.model, in.layout, true));
  add(lm_head_ops(in.model, in.layout, false));
  add(lm_head_ops(in.model, in.layout, true));
  EXPECT_NEAR(r->breakdown.compute, 4 * per_mb, 1e-9 * per_mb);
  EXPECT_NEAR(r->step_time_s, 4 * per_mb + r->breakdown.optimizer, 1e-9 * per_mb);
  EXPECT_EQ(r->breakdown.dp_comm, 0);
  EXPECT_EQ(r->breakdown.tp_comm, 0);
}

TEST(StepTime, PipelineBubbleFollowsOneFOneB) {
  // 4 stages, 8 micro-batches: the idle share is about (p - 1) / (m + p - 1) = 3/11.
  auto r = simulate_step(input("llama-7b", "dgx-a100-80gb", layout(4, 1, 4, 1, 8)));
  ASSERT_TRUE(r.ok());
  EXPECT_NEAR(r->bubble_fraction, 3.0 / 11.0, 0.06);
  EXPECT_GT(r->breakdown.bubble, 0);
  EXPECT_GT(r->breakdown.pp_comm, 0);
}

TEST(StepTime, DataParallelAddsGradientReduction) {
  auto single = simulate_step(input("llama-7b", "dgx-a100-80gb", layout(8, 8, 1, 1, 8)));
  auto dp = simulate_step(input("llama-7b", "dgx-a100-80gb", layout(64, 8, 1, 1, 64)));
  ASSERT_TRUE(single.ok() && dp.ok());
  EXPECT_EQ(single->breakdown.dp_comm, 0);
  EXPECT_GT(dp->breakdown.dp_comm, 0);
  EXPECT_NEAR(dp->breakdown.compute, single->breakdown.compute, 1e-9);
}

TEST(StepTime, ProfileWithoutComputeParametersIsRefused) {
  auto in = input("llama-7b", "dgx-a100-80gb", layout(8, 8, 1, 1, 8));
  in.cluster.compute.present = false;
  auto r = simulate_step(in);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("no 'compute' section"), std::string::npos);
}

TEST(StepTime, ChromeTraceHasATrackPerStage) {
  auto in = input("llama-7b", "dgx-a100-80gb", layout(16, 4, 4, 1, 8));
  in.record_trace = true;
  auto r = simulate_step(in);
  ASSERT_TRUE(r.ok());
  const auto trace = chrome_trace_json(*r);
  std::set<std::string> tracks;
  for (const auto& e : trace["traceEvents"]) {
    if (e["ph"] == "M") tracks.insert(e["args"]["name"].get<std::string>());
  }
  for (int s = 0; s < 4; ++s) {
    EXPECT_TRUE(tracks.count("stage " + std::to_string(s) + " compute")) << s;
    EXPECT_TRUE(tracks.count("stage " + std::to_string(s) + " tp comm")) << s;
  }
  EXPECT_TRUE(tracks.count("stage 0 pp comm"));
}

}  // namespace
}  // namespace loom::sim
