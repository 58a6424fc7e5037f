// Layout validation: one test per rule users get wrong, each checking that the error names the
// field, the value and what is allowed; plus partition methods and the rank order.
#include "core/layout.h"

#include <gtest/gtest.h>

#include <numeric>

#include "core/model_io.h"

namespace loom::core {
namespace {

ModelSpec model(const char* name) {
  auto m = load_model(name);
  EXPECT_TRUE(m.ok()) << m.status().message();
  return *m;
}

Layout base(int64_t gpus, int64_t tp, int64_t pp) {
  Layout l;
  l.gpus = gpus;
  l.tp = tp;
  l.pp = pp;
  l.mbs = 1;
  l.gbs = 64;
  return l;
}

void expect_error(const Result<Layout>& r, std::initializer_list<const char*> fragments) {
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), ErrorCode::kInvalidArgument);
  for (const char* f : fragments) {
    EXPECT_NE(r.status().message().find(f), std::string::npos)
        << "missing '" << f << "' in: " << r.status().message();
  }
}

TEST(LayoutValidation, HeadsNotDivisibleByTp) {
  expect_error(resolve_layout(base(3, 3, 1), model("llama-7b")),
               {"--tp 3", "num_heads 32", "allowed tp: 1, 2, 4, 8, 16, 32"});
}

TEST(LayoutValidation, KvHeadsNotDivisibleByTp) {
  Layout l = base(16, 16, 1);
  expect_error(resolve_layout(l, model("llama2-70b")), {"--tp 16", "num_kv_heads 8", "allowed tp: 1, 2, 4, 8"});
}

TEST(LayoutValidation, GlobalBatchNotDivisibleByMicroBatchTimesDp) {
  Layout l = base(8, 1, 1);
  l.mbs = 4;
  l.gbs = 100;
  expect_error(resolve_layout(l, model("llama-7b")),
               {"--gbs 100", "mbs x dp = 4 x 8 = 32", "multiples of 32", "96 or 128"});
}

TEST(LayoutValidation, ProductMustEqualGpus) {
  Layout l = base(64, 4, 4);
  l.dp = 8;
  expect_error(resolve_layout(l, model("llama-7b")), {"4 x 4 x 8 = 128", "--gpus 64", "dp must be 4"});
  expect_error(resolve_layout(base(7, 2, 1), model("llama-7b")),
               {"--gpus 7", "not divisible by tp x pp = 2 x 1 = 2"});
}

TEST(LayoutValidation, PartitionMustSumToLayersAndMatchStages) {
  Layout l = base(4, 1, 4);
  l.partition = {8, 8, 8, 7};
  expect_error(resolve_layout(l, model("llama-7b")), {"sums to 31", "num_layers 32"});
  l.partition = {16, 16};
  expect_error(resolve_layout(l, model("llama-7b")), {"2 entries", "pp x vpp = 4 x 1 = 4"});
  l.partition = {10, 0, 11, 11};
  expect_error(resolve_layout(l, model("llama-7b")), {"stage 1", "at least one block"});
  l.partition = {0, 11, 11, 10};  // the first stage may hold only the embedding
  EXPECT_TRUE(resolve_layout(l, model("llama-7b")).ok());
}

TEST(LayoutValidation, ZeroStageOutOfRange) {
  Layout l = base(8, 1, 1);
  l.zero = 4;
  expect_error(resolve_layout(l, model("llama-7b")), {"--zero 4", "allowed: 0", "3 + parameters"});
}

TEST(LayoutValidation, SequenceParallelNeedsTensorParallel) {
  Layout l = base(8, 1, 1);
  l.sp = true;
  expect_error(resolve_layout(l, model("llama-7b")), {"--sp", "tp is 1"});
}

TEST(LayoutValidation, InterleavingNeedsPipelineAndWholeRounds) {
  Layout l = base(8, 1, 1);
  l.vpp = 2;
  expect_error(resolve_layout(l, model("llama-7b")), {"--vpp 2", "pp >= 2"});
  l = base(8, 1, 4);
  l.vpp = 2;
  l.gbs = 6;  // dp 2, mbs 1 -> 3 micro-batches, not a multiple of pp 4
  expect_error(resolve_layout(l, model("llama-7b")), {"--vpp 2", "= 3", "multiple of pp 4"});
}

TEST(LayoutValidation, SequenceLongerThanLearnedPositions) {
  Layout l = base(8, 1, 1);
  l.seq = 4096;
  expect_error(resolve_layout(l, model("gpt3-175b")), {"--seq 4096", "at most 2048"});
  l.seq = 8192;  // RoPE has no table: allowed
  EXPECT_TRUE(resolve_layout(l, model("llama-7b")).ok());
}

TEST(LayoutValidation, NegativeOrZeroSizes) {
  Layout l = base(8, 0, 1);
  expect_error(resolve_layout(l, model("llama-7b")), {"'tp' = 0", "at least 1"});
  l = base(8, 1, 1);
  l.gbs = 0;
  expect_error(resolve_layout(l, model("llama-7b")), {"--gbs"});
}

TEST(LayoutValidation, UnknownRankOrder) {
  Layout l = base(8, 1, 1);
  l.rank_order = "dp-tp-pp";
  expect_error(resolve_layout(l, model("llama-7b")), {"'dp-tp-pp'", "tp-dp-pp"});
}

TEST(LayoutResolution, DerivesDpSeqAndPartition) {
  auto r = resolve_layout(base(64, 8, 2), model("llama-7b"));
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->dp, 4);
  EXPECT_EQ(r->seq, 2048);
  EXPECT_EQ(r->partition, (std::vector<int64_t>{16, 16}));
  EXPECT_EQ(r->num_microbatches(), 16);
}

TEST(Partition, BloomEmbeddingAsLayerGivesFiveSixFive) {
  // BLOOM: 70 blocks + embedding + LM head = 72 layers over 12 stages (BigScience tr11:
  // stage 0 = embedding + 5 blocks, stages 1-10 = 6 blocks, stage 11 = 5 blocks + head).
  const auto p = partition_blocks(70, 12, PartitionMethod::kEmbeddingAsLayer);
  std::vector<int64_t> expected(12, 6);
  expected.front() = 5;
  expected.back() = 5;
  EXPECT_EQ(p, expected);
}

TEST(Partition, UniformGivesExtraBlocksToFirstStages) {
  // DeepSpeed partition_uniform: 70 over 12 -> ten stages of 6 and two of 5.
  const auto p = partition_blocks(70, 12, PartitionMethod::kUniform);
  EXPECT_EQ(p.front(), 6);
  EXPECT_EQ(p.back(), 5);
  EXPECT_EQ(std::accumulate(p.begin(), p.end(), int64_t{0}), 70);
}

TEST(Partition, EmbeddingAsLayerAlwaysSumsToLayers) {
  for (int64_t layers : {1, 2, 5, 24, 70, 96}) {
    for (int64_t chunks = 1; chunks <= std::min<int64_t>(layers + 2, 40); ++chunks) {
      const auto p = partition_blocks(layers, chunks, PartitionMethod::kEmbeddingAsLayer);
      EXPECT_EQ(std::accumulate(p.begin(), p.end(), int64_t{0}), layers) << layers << "/" << chunks;
      for (int64_t x : p) EXPECT_GE(x, 0);
    }
  }
}

TEST(Partition, ParsesFlagAndRejectsGarbage) {
  auto p = parse_partition("5,6,6,5");
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*p, (std::vector<int64_t>{5, 6, 6, 5}));
  auto bad = parse_partition("5,x,6");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'x' is not an integer"), std::string::npos);
}

TEST(RankOrder, MegatronOrderPutsTensorParallelInnermost) {
  Layout l = base(384, 4, 12);
  l.dp = 8;
  // rank = tp + 4 * (dp + 8 * pp)
  const RankCoords c = rank_coords(l, 4 * (3 + 8 * 5) + 2);
  EXPECT_EQ(c.tp, 2);
  EXPECT_EQ(c.dp, 3);
  EXPECT_EQ(c.pp, 5);
  l.rank_order = "tp-pp-dp";
  const RankCoords d = rank_coords(l, 4 * (5 + 12 * 3) + 2);
  EXPECT_EQ(d.pp, 5);
  EXPECT_EQ(d.dp, 3);
}

TEST(LayoutYaml, UnknownKeyIsReportedWithLine) {
  auto node = YAML::Load("tp: 4\npp: 2\nmicro_batch: 3\n");
  auto l = layout_from_yaml(node, "plan.yaml");
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.status().message().find("plan.yaml:3"), std::string::npos) << l.status().message();
  EXPECT_NE(l.status().message().find("unknown key 'micro_batch'"), std::string::npos);
  EXPECT_NE(l.status().message().find("mbs"), std::string::npos);
}

TEST(LayoutYaml, RoundTrips) {
  Layout l = base(384, 4, 12);
  l.zero = 1;
  l.recompute = Recompute::kFull;
  l.partition = {5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 5};
  auto back = layout_from_yaml(layout_to_yaml(l), "roundtrip");
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->partition, l.partition);
  EXPECT_EQ(back->recompute, Recompute::kFull);
  EXPECT_EQ(back->zero, 1);
  auto bad = layout_from_yaml(YAML::Load("recompute: sometimes\n"), "p.yaml");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("allowed: none, selective, full"), std::string::npos);
}

}  // namespace
}  // namespace loom::core
