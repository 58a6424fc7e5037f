// Pipeline stage contents and in-flight micro-batches against the schedules' definitions:
// 1F1B holds pp - stage micro-batches (Narayanan et al. 2021), the interleaved schedule holds
// L/p (1 + (p-1)/(p v)) layers of activations on stage 0 (Korthikanti et al. 2022, eq. 5),
// GPipe holds all of them.
#include "simulator/stage_layout.h"

#include <gtest/gtest.h>

#include "core/model_io.h"

namespace loom::sim {
namespace {

core::Layout layout(int64_t pp, int64_t vpp, int64_t microbatches, int64_t layers) {
  core::Layout l;
  l.pp = pp;
  l.vpp = vpp;
  l.dp = 1;
  l.mbs = 1;
  l.gbs = microbatches;
  l.partition = core::partition_blocks(layers, pp * vpp, core::PartitionMethod::kUniform);
  return l;
}

TEST(InflightMicrobatches, OneFOneBHoldsPpMinusStage) {
  const core::Layout l = layout(8, 1, 64, 32);
  for (int64_t s = 0; s < 8; ++s) EXPECT_EQ(inflight_chunks(l, s).size(), size_t(8 - s));
  const core::Layout few = layout(8, 1, 3, 32);  // fewer micro-batches than stages
  EXPECT_EQ(inflight_chunks(few, 0).size(), 3u);
  EXPECT_EQ(inflight_chunks(few, 7).size(), 1u);
}

TEST(InflightMicrobatches, InterleavedStageZeroMatchesKorthikantiEq5) {
  for (int64_t p : {2, 4, 8}) {
    for (int64_t v : {2, 3, 4}) {
      const int64_t L = p * v * 2;
      const core::Layout l = layout(p, v, 4 * p, L);
      double layers_in_flight = 0;
      for (int64_t chunk : inflight_chunks(l, 0)) layers_in_flight += l.partition[chunk];
      // Activation memory of stage 0 in units of one layer's activations per micro-batch.
      const double expected = static_cast<double>(L) / p * p * (1.0 + (p - 1.0) / (p * v));
      EXPECT_DOUBLE_EQ(layers_in_flight, expected) << "p " << p << " v " << v;
    }
  }
}

TEST(InflightMicrobatches, GPipeHoldsAll) {
  core::Layout l = layout(4, 1, 16, 8);
  l.schedule = core::PipelineSchedule::kGPipe;
  EXPECT_EQ(inflight_chunks(l, 0).size(), 16u);
  EXPECT_EQ(inflight_chunks(l, 3).size(), 16u);
}

TEST(StageContents, BloomStagesHoldEmbeddingAndHeadWhereThePartitionPutsThem) {
  const auto bloom = core::load_model("bloom-176b").value();
  core::Layout l;
  l.tp = 4;
  l.pp = 12;
  l.dp = 8;
  l.seq = 2048;
  l.partition = core::partition_blocks(70, 12, core::PartitionMethod::kEmbeddingAsLayer);
  const StageContents first = stage_contents(bloom, l, 0);
  const StageContents middle = stage_contents(bloom, l, 5);
  const StageContents last = stage_contents(bloom, l, 11);
  EXPECT_EQ(describe_stage(l, 0), "embedding + blocks 0-4");
  EXPECT_EQ(describe_stage(l, 5), "blocks 29-34");
  EXPECT_EQ(describe_stage(l, 11), "blocks 65-69 + LM head + loss");
  // Embedding shard: 250880/4 x 14336 + embedding LayerNorm.
  EXPECT_EQ(first.params, 5 * bloom.block_params(4) + 250880 / 4 * 14336 + 2 * 14336);
  // Tied embeddings: the last stage holds its own copy of the word embedding for the head.
  EXPECT_EQ(last.params, 5 * bloom.block_params(4) + 250880 / 4 * 14336 + 2 * 14336);
  EXPECT_EQ(middle.params, 6 * bloom.block_params(4));
  // The LM head's forward FLOPs are 2 V h per token, about 1.4 blocks for BLOOM.
  EXPECT_NEAR(last.work_block_equivalents - 5, lm_head_block_equivalents(bloom, 2048), 1e-12);
  EXPECT_GT(lm_head_block_equivalents(bloom, 2048), 1.3);
  EXPECT_LT(lm_head_block_equivalents(bloom, 2048), 1.5);
}

TEST(StageContents, InterleavedChunksAreListed) {
  core::Layout l = layout(2, 2, 8, 32);
  l.seq = 2048;
  EXPECT_EQ(describe_stage(l, 0), "embedding + blocks 0-7, blocks 16-23");
  EXPECT_EQ(describe_stage(l, 1), "blocks 8-15, blocks 24-31 + LM head + loss");
}

}  // namespace
}  // namespace loom::sim
