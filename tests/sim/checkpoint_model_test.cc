// Checkpoint sizes against what BigScience published for BLOOM-176B: "each checkpoint with
// fp32 optim states and bf16+fp32 weights is 2.3TB - just the bf16 weights are 329GB"
// (bigscience train/tr11-176B-ml README), and write time against hand arithmetic.
#include "simulator/checkpoint_model.h"

#include <gtest/gtest.h>

#include "core/model_io.h"
#include "core/units.h"

namespace loom::sim {
namespace {

core::Layout bloom_layout() {
  core::Layout l;
  l.gpus = 384;
  l.tp = 4;
  l.pp = 12;
  l.zero = 1;
  l.mbs = 2;
  l.gbs = 2048;
  l.seq = 2048;
  l.partition_method = core::PartitionMethod::kEmbeddingAsLayer;
  return l;
}

TEST(CheckpointModel, BloomFullCheckpointIs2_25TiB) {
  const auto bloom = core::load_model("bloom-176b").value();
  const auto cluster = core::load_cluster_profile("jean-zay-a100-80gb").value();
  const auto layout = core::resolve_layout(bloom_layout(), bloom).value();
  const CheckpointEstimate c =
      estimate_checkpoint(bloom, cluster, layout, framework_traits(Framework::kMegatronDeepSpeed));
  // 14 bytes per parameter (bf16 2 + fp32 master 4 + Adam 8) = 2.25 TiB, +-3%.
  EXPECT_NEAR(c.bytes / core::kTiB, 2.25, 0.03 * 2.25);
  // bf16 weights: 176.2e9 x 2 bytes = 328 GiB ("329GB" in the README).
  EXPECT_NEAR(core::bytes_to_gib(c.weights_only_bytes), 329.0, 0.01 * 329.0);
  // Distributed optimizer: every rank writes its optimizer shard.
  EXPECT_EQ(c.writer_ranks, 384);
  EXPECT_GT(c.write_time_s, 0);
  EXPECT_GE(c.write_time_s, c.bytes / (cluster.storage.write_gb_s * 1e9) * (1 - 1e-12));
}

TEST(CheckpointModel, WithoutZeroOnlyDataParallelRankZeroWrites) {
  const auto model = core::load_model("llama-7b").value();
  const auto cluster = core::load_cluster_profile("dgx-a100-80gb").value();
  core::Layout l;
  l.gpus = 16;
  l.tp = 2;
  l.mbs = 1;
  l.gbs = 16;
  const auto layout = core::resolve_layout(l, model).value();
  const CheckpointEstimate c =
      estimate_checkpoint(model, cluster, layout, framework_traits(Framework::kMegatron));
  EXPECT_EQ(c.writer_ranks, 2);  // dp rank 0 of each of the 2 TP ranks
  // 14 bytes per parameter on each TP shard (norms are replicated on both TP ranks).
  const double per_rank_params = static_cast<double>(model.embedding_params(2, true) +
                                                     model.num_layers * model.block_params(2) +
                                                     model.final_norm_params() +
                                                     model.lm_head_params(2, true));
  EXPECT_DOUBLE_EQ(c.bytes, 2 * per_rank_params * 14);
  EXPECT_DOUBLE_EQ(c.max_rank_bytes, per_rank_params * 14);
}

}  // namespace
}  // namespace loom::sim
