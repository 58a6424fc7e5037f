// Exact min-max pipeline partition under memory limits: see partition.h.
#include "planner/partition.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace loom::plan {

namespace {

struct StageBounds {
  int64_t min_blocks = 1;  // middle stages need a block; the ends may hold only emb/head
  int64_t max_blocks = 0;  // memory limit
  double extra_s = 0;      // embedding / head work on this stage
};

// Largest block count that fits the stage's memory (-1: not even the minimum fits).
int64_t memory_cap(const sim::StageMemoryLine& line, double capacity, int64_t layers) {
  if (line.per_block_bytes <= 0) return line.peak_bytes(1) <= capacity ? layers : 0;
  const double n = std::floor((capacity - line.fixed_bytes) / line.per_block_bytes);
  if (n >= 1) return std::min<int64_t>(layers, static_cast<int64_t>(n));
  return line.empty_stage_bytes <= capacity ? 0 : -1;
}

int64_t time_cap(const StageBounds& b, double bottleneck, double block_s, int64_t layers) {
  if (bottleneck < b.extra_s) return -1;
  if (block_s <= 0) return layers;
  return std::min<int64_t>(layers, static_cast<int64_t>(std::floor((bottleneck - b.extra_s) / block_s + 1e-12)));
}

// Blocks each stage may take under `bottleneck`; empty when some stage cannot reach its minimum.
std::vector<int64_t> caps_for(const std::vector<StageBounds>& stages, double bottleneck,
                              double block_s, int64_t layers) {
  std::vector<int64_t> caps;
  for (const auto& b : stages) {
    const int64_t c = std::min(b.max_blocks, time_cap(b, bottleneck, block_s, layers));
    if (c < b.min_blocks) return {};
    caps.push_back(c);
  }
  return caps;
}

int64_t total(const std::vector<int64_t>& v) {
  int64_t t = 0;
  for (int64_t x : v) t += x;
  return t;
}

}  // namespace

PartitionResult optimal_partition(int64_t layers, const sim::UnitCosts& costs,
                                  const std::vector<sim::StageMemoryLine>& memory,
                                  double capacity_bytes) {
  const int64_t pp = static_cast<int64_t>(memory.size());
  PartitionResult r;
  std::vector<StageBounds> stages(pp);
  for (int64_t s = 0; s < pp; ++s) {
    StageBounds& b = stages[s];
    const bool first = s == 0, last = s == pp - 1;
    b.min_blocks = (first || last) && pp > 1 ? 0 : 1;
    if (pp == 1) b.min_blocks = layers;
    b.extra_s = (first ? costs.embedding_s : 0.0) + (last ? costs.head_s : 0.0);
    b.max_blocks = memory_cap(memory[s], capacity_bytes, layers);
    if (b.max_blocks < b.min_blocks) {
      r.worst_stage = s;
      r.over_bytes = memory[s].peak_bytes(std::max<int64_t>(b.min_blocks, 0)) - capacity_bytes;
      return r;
    }
  }
  // Not enough memory in total for all blocks, whatever the times.
  std::vector<int64_t> mem_caps;
  for (const auto& b : stages) mem_caps.push_back(b.max_blocks);
  if (total(mem_caps) < layers) {
    // Report the stage that would be fullest with an even split of what is missing.
    r.worst_stage = 0;
    double worst = -std::numeric_limits<double>::infinity();
    const int64_t even = (layers + pp - 1) / pp;
    for (int64_t s = 0; s < pp; ++s) {
      const double over = memory[s].peak_bytes(std::max(even, stages[s].min_blocks)) - capacity_bytes;
      if (over > worst) worst = over, r.worst_stage = s;
    }
    r.over_bytes = worst;
    return r;
  }
  // Bisection on the bottleneck time: feasible(B) is monotone.
  double lo = 0, hi = costs.embedding_s + costs.head_s + costs.block_s * static_cast<double>(layers);
  for (int it = 0; it < 64; ++it) {
    const double mid = 0.5 * (lo + hi);
    const auto caps = caps_for(stages, mid, costs.block_s, layers);
    if (!caps.empty() && total(caps) >= layers) hi = mid; else lo = mid;
  }
  std::vector<int64_t> caps = caps_for(stages, hi, costs.block_s, layers);
  // Take blocks back from the stages with the most time until the counts sum to the layers;
  // every stage stays within the bottleneck, and ties leave the middle stages fuller.
  int64_t excess = total(caps) - layers;
  auto stage_time = [&](int64_t s) {
    return stages[s].extra_s + costs.block_s * static_cast<double>(caps[s]);
  };
  while (excess > 0) {
    int64_t pick = -1;
    for (int64_t s = 0; s < pp; ++s) {
      if (caps[s] <= stages[s].min_blocks) continue;
      if (pick < 0 || stage_time(s) > stage_time(pick)) pick = s;
    }
    if (pick < 0) break;
    --caps[pick];
    --excess;
  }
  r.feasible = excess == 0;
  r.blocks = caps;
  for (int64_t s = 0; s < pp; ++s) r.bottleneck_s = std::max(r.bottleneck_s, stage_time(s));
  return r;
}

}  // namespace loom::plan
