// Memory model: parameter-state bytes against Megatron's documented table (distributed
// optimizer guide: 18 / 6 + 12/d bytes per parameter in bf16, 20 / 4 + 16/d in fp16), ZeRO
// sharding, the logits buffer, and BLOOM-176B on Jean Zay as BigScience ran it.
#include "simulator/memory_model.h"

#include <gtest/gtest.h>

#include "core/cluster_profile.h"
#include "core/model_io.h"
#include "core/units.h"

namespace loom::sim {
namespace {

MemoryModelInput input(const char* model, const char* cluster, core::Layout l,
                       Framework fw = Framework::kMegatron) {
  MemoryModelInput in;
  in.model = core::load_model(model).value();
  in.cluster = core::load_cluster_profile(cluster).value();
  auto resolved = core::resolve_layout(l, in.model);
  EXPECT_TRUE(resolved.ok()) << resolved.status().message();
  in.layout = resolved.value();
  in.framework = fw;
  return in;
}

core::Layout simple(int64_t gpus, int zero, core::Precision precision) {
  core::Layout l;
  l.gpus = gpus;
  l.zero = zero;
  l.mbs = 1;
  l.gbs = gpus;
  l.seq = 1024;
  l.precision = precision;
  return l;
}

double state_bytes_per_param(const StageMemory& s) {
  double bytes = 0;
  for (const char* item : {"weights", "gradients", "half_gradients", "master_weights",
                           "optimizer_states", "ddp_buckets"}) {
    bytes += s.item(item);
  }
  return bytes / static_cast<double>(s.params_per_rank);
}

TEST(MemoryModel, MegatronBytesPerParameterMatchDistributedOptimizerTable) {
  const double d = 8;
  auto bf16_z0 = estimate_memory(input("llama-7b", "dgx-a100-80gb", simple(8, 0, core::Precision::kBf16)));
  auto bf16_z1 = estimate_memory(input("llama-7b", "dgx-a100-80gb", simple(8, 1, core::Precision::kBf16)));
  auto fp16_z0 = estimate_memory(input("llama-7b", "dgx-a100-80gb", simple(8, 0, core::Precision::kFp16)));
  auto fp16_z1 = estimate_memory(input("llama-7b", "dgx-a100-80gb", simple(8, 1, core::Precision::kFp16)));
  ASSERT_TRUE(bf16_z0.ok() && bf16_z1.ok() && fp16_z0.ok() && fp16_z1.ok());
  EXPECT_DOUBLE_EQ(state_bytes_per_param(bf16_z0->stages[0]), 18.0);
  EXPECT_DOUBLE_EQ(state_bytes_per_param(bf16_z1->stages[0]), 6.0 + 12.0 / d);
  EXPECT_DOUBLE_EQ(state_bytes_per_param(fp16_z0->stages[0]), 20.0);
  EXPECT_DOUBLE_EQ(state_bytes_per_param(fp16_z1->stages[0]), 4.0 + 16.0 / d);
}

TEST(MemoryModel, ZeroStagesShardProgressively) {
  double previous = 1e300;
  for (int zero = 0; zero <= 3; ++zero) {
    auto r = estimate_memory(input("llama-7b", "dgx-a100-80gb", simple(8, zero, core::Precision::kBf16)));
    ASSERT_TRUE(r.ok());
    const double state = state_bytes_per_param(r->stages[0]);
    EXPECT_LT(state, previous) << "zero " << zero;
    previous = state;
  }
  auto z3 = estimate_memory(input("llama-7b", "dgx-a100-80gb", simple(8, 3, core::Precision::kBf16)));
  // ZeRO-3: (2 + 4 + 12) / d per parameter, plus the gathered-parameter buffers.
  EXPECT_DOUBLE_EQ(state_bytes_per_param(z3->stages[0]), 18.0 / 8);
  EXPECT_GT(z3->stages[0].item("zero3_buffers"), 0);
}

TEST(MemoryModel, LogitsBufferIsOnTheLastStageOnly) {
  core::Layout l = simple(8, 1, core::Precision::kBf16);
  l.pp = 2;
  l.tp = 2;
  l.gbs = 16;
  auto r = estimate_memory(input("llama-7b", "dgx-a100-80gb", l));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stages[0].item("logits_and_loss"), 0);
  // Megatron vocab-parallel cross-entropy: bf16 logits + fp32 softmax = 6 bytes per element
  // of [s*b, Vp/t]; Vp = 32000 padded to a multiple of 128 x 2.
  EXPECT_DOUBLE_EQ(r->stages[1].item("logits_and_loss"), 1024.0 * 1 * (32000.0 / 2) * 6);
}

TEST(MemoryModel, ReportsWhenALayoutDoesNotFit) {
  core::Layout l = simple(1, 0, core::Precision::kBf16);
  auto r = estimate_memory(input("llama-65b", "dgx-a100-80gb", l));
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->fits);
  EXPECT_GT(r->peak_gib(), 65e9 * 18 / core::kGiB);
  const auto j = memory_report_json(*r);
  EXPECT_FALSE(j["fits"].get<bool>());
  EXPECT_TRUE(j.contains("peak_gib"));
  EXPECT_TRUE(j["per_stage"][0]["items"].contains("weights"));
  EXPECT_TRUE(j["checkpoint"].contains("write_time_s"));
}

TEST(MemoryModel, DeepSpeedRejectsZero2WithPipeline) {
  core::Layout l = simple(8, 2, core::Precision::kBf16);
  l.pp = 2;
  auto r = estimate_memory(input("llama-7b", "dgx-a100-80gb", l, Framework::kMegatronDeepSpeed));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), core::ErrorCode::kInfeasible);
  EXPECT_NE(r.status().message().find("--zero 2"), std::string::npos);
}

core::Layout bloom_layout(core::PartitionMethod method) {
  core::Layout l;
  l.gpus = 384;
  l.tp = 4;
  l.pp = 12;
  l.zero = 1;
  l.mbs = 2;
  l.gbs = 2048;
  l.seq = 2048;
  l.recompute = core::Recompute::kFull;
  l.partition_method = method;
  return l;
}

TEST(MemoryModel, BloomOnJeanZayFitsWithEmbeddingAndHeadAsLayers) {
  auto r = estimate_memory(input("bloom-176b", "jean-zay-a100-80gb",
                                 bloom_layout(core::PartitionMethod::kEmbeddingAsLayer),
                                 Framework::kMegatronDeepSpeed));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_TRUE(r->fits);
  ASSERT_EQ(r->stages.size(), 12u);
  EXPECT_EQ(r->stages[0].holds, "embedding + blocks 0-4");
  EXPECT_EQ(r->stages[11].holds, "blocks 65-69 + LM head + loss");
  for (const auto& s : r->stages) EXPECT_LT(s.peak_bytes, 80e9) << "stage " << s.stage;
  EXPECT_EQ(r->stages[0].microbatches_in_flight, 12);
  EXPECT_EQ(r->stages[11].microbatches_in_flight, 1);
}

TEST(MemoryModel, BloomBlocksOnlyPartitionOverloadsTheEndStages) {
  auto balanced = estimate_memory(input("bloom-176b", "jean-zay-a100-80gb",
                                        bloom_layout(core::PartitionMethod::kEmbeddingAsLayer),
                                        Framework::kMegatronDeepSpeed));
  auto blocks_only = estimate_memory(input("bloom-176b", "jean-zay-a100-80gb",
                                           bloom_layout(core::PartitionMethod::kUniform),
                                           Framework::kMegatronDeepSpeed));
  ASSERT_TRUE(balanced.ok() && blocks_only.ok());
  // Blocks only: 6 blocks + embedding on stage 0, so it carries a block more than the middle.
  EXPECT_EQ(blocks_only->stages[0].holds, "embedding + blocks 0-5");
  EXPECT_GT(blocks_only->stages[0].peak_bytes, balanced->stages[0].peak_bytes + 1e9);
  EXPECT_GT(blocks_only->peak_bytes, balanced->peak_bytes);
  // The imbalance in parameters: stage 0 holds the 7.2 GB embedding (1.8 GB per TP rank) on
  // top of a full stage of blocks.
  const auto& first = blocks_only->stages[0];
  const auto& middle = blocks_only->stages[5];
  EXPECT_EQ(first.params_per_rank - middle.params_per_rank, 250880 / 4 * 14336 + 2 * 14336);
}

}  // namespace
}  // namespace loom::sim
