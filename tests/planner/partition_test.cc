// The memory-constrained min-max partition against brute force over every composition of the
// layers into stages (small cases), and the BLOOM case: counting the embedding and LM head as
// work reproduces BigScience's 5, 6 x 10, 5 split, and memory limits move blocks off a stage.
#include "planner/partition.h"

#include <gtest/gtest.h>

#include <functional>
#include <limits>

namespace loom::plan {
namespace {

double bottleneck(const std::vector<int64_t>& blocks, const sim::UnitCosts& c) {
  double worst = 0;
  const size_t pp = blocks.size();
  for (size_t s = 0; s < pp; ++s) {
    const double t = static_cast<double>(blocks[s]) * c.block_s + (s == 0 ? c.embedding_s : 0) +
                     (s + 1 == pp ? c.head_s : 0);
    worst = std::max(worst, t);
  }
  return worst;
}

// Every way to split `layers` into `pp` stages (ends may be empty, middles not) that fits.
double brute_force(int64_t layers, int64_t pp, const sim::UnitCosts& c,
                   const std::vector<sim::StageMemoryLine>& mem, double cap) {
  double best = std::numeric_limits<double>::infinity();
  std::vector<int64_t> blocks(pp);
  std::function<void(int64_t, int64_t)> rec = [&](int64_t s, int64_t left) {
    if (s == pp - 1) {
      blocks[s] = left;
      if (pp > 1 && left < 0) return;
      for (int64_t i = 0; i < pp; ++i) {
        const bool end = i == 0 || i == pp - 1;
        if (blocks[i] < (end && pp > 1 ? 0 : 1) || mem[i].peak_bytes(blocks[i]) > cap) return;
      }
      best = std::min(best, bottleneck(blocks, c));
      return;
    }
    for (int64_t n = 0; n <= left; ++n) {
      blocks[s] = n;
      rec(s + 1, left - n);
    }
  };
  rec(0, layers);
  return best;
}

std::vector<sim::StageMemoryLine> lines(int64_t pp, double per_block, double inflight_scale) {
  std::vector<sim::StageMemoryLine> v(pp);
  for (int64_t s = 0; s < pp; ++s) {
    // The first stage stashes the most micro-batches (1F1B), so its blocks cost the most.
    const double per = per_block * (1.0 + inflight_scale * static_cast<double>(pp - 1 - s));
    v[s] = {10.0 + (s == 0 ? 30.0 : 0.0), per, 5.0};
  }
  return v;
}

TEST(Partition, MatchesBruteForce) {
  const sim::UnitCosts costs{1.0, 1.4, 2.3};
  for (int64_t pp : {2, 3, 4}) {
    for (int64_t layers : {4, 7, 10}) {
      for (double cap : {60.0, 90.0, 1e9}) {
        const auto mem = lines(pp, 6.0, 0.5);
        const double expected = brute_force(layers, pp, costs, mem, cap);
        const PartitionResult r = optimal_partition(layers, costs, mem, cap);
        if (!std::isfinite(expected)) {
          EXPECT_FALSE(r.feasible) << pp << " " << layers << " " << cap;
          continue;
        }
        ASSERT_TRUE(r.feasible) << pp << " " << layers << " " << cap;
        int64_t sum = 0;
        for (size_t s = 0; s < r.blocks.size(); ++s) {
          sum += r.blocks[s];
          EXPECT_LE(mem[s].peak_bytes(r.blocks[s]), cap);
        }
        EXPECT_EQ(sum, layers);
        EXPECT_NEAR(r.bottleneck_s, expected, 1e-9) << pp << " " << layers << " " << cap;
        EXPECT_NEAR(bottleneck(r.blocks, costs), expected, 1e-9);
      }
    }
  }
}

TEST(Partition, BloomCountsEmbeddingAndHeadAsWork) {
  // BLOOM: the head (+ loss) costs ~1.4 blocks and the embedding with its LayerNorm about one
  // block's worth of time in DeepSpeed's accounting; with ample memory the min-max split puts
  // five blocks on the end stages and six on the others.
  const sim::UnitCosts costs{1.0, 1.0, 1.4};
  std::vector<sim::StageMemoryLine> mem(12, sim::StageMemoryLine{0, 1, 0});
  const PartitionResult r = optimal_partition(70, costs, mem, 1e12);
  ASSERT_TRUE(r.feasible);
  std::vector<int64_t> expected(12, 6);
  expected.front() = 5;
  expected.back() = 5;
  EXPECT_EQ(r.blocks, expected);
  EXPECT_NEAR(r.bottleneck_s, 6.4, 1e-9);
}

TEST(Partition, MemoryLimitMovesBlocksOffTheFirstStage) {
  const sim::UnitCosts costs{1.0, 0.0, 0.0};
  auto mem = lines(4, 6.0, 0.0);
  mem[0].per_block_bytes = 20.0;  // 40 + 20 n <= 100: the first stage holds at most 3 blocks
  const PartitionResult r = optimal_partition(16, costs, mem, 100.0);
  ASSERT_TRUE(r.feasible);
  EXPECT_EQ(r.blocks[0], 3);  // instead of the 4 an even split would give it
  EXPECT_EQ(r.blocks[0] + r.blocks[1] + r.blocks[2] + r.blocks[3], 16);
}

TEST(Partition, ReportsTheStageThatCannotFit) {
  const sim::UnitCosts costs{1.0, 0.0, 0.0};
  const auto mem = lines(2, 6.0, 0.0);
  const PartitionResult r = optimal_partition(40, costs, mem, 100.0);
  EXPECT_FALSE(r.feasible);
  EXPECT_GT(r.over_bytes, 0);
}

}  // namespace
}  // namespace loom::plan
