// How long a collective cost query takes: the planner asks for the DP all-reduce (and TP, PP
// costs) of every candidate layout, millions of times, so a repeated query must be a hash
// lookup plus arithmetic. Run: build/bench/collectives_benchmark.
#include <benchmark/benchmark.h>

#include "core/cluster_profile.h"
#include "simulator/collectives.h"

namespace {

using loom::sim::Algorithm;
using loom::sim::CollectiveKind;
using loom::sim::CollectiveModel;
using loom::sim::GroupKind;

constexpr int64_t kGpus = 1024;  // 128 DGX A100 nodes

CollectiveModel dgx_model() {
  return CollectiveModel::create(loom::core::load_cluster_profile("dgx-a100-80gb").value(), kGpus)
      .value();
}

loom::core::Layout t8p4d32() {
  loom::core::Layout l;
  l.gpus = kGpus;
  l.tp = 8;
  l.pp = 4;
  l.dp = 32;
  return l;
}

// The planner's query: every DP group all-reduces its gradients at once (cached layout model).
void BM_DataParallelAllReduceLayoutQuery1024(benchmark::State& state) {
  CollectiveModel m = dgx_model();
  const loom::core::Layout l = t8p4d32();
  double bytes = 1e9;
  for (auto _ : state) {
    auto cost = m.estimate_layout(l, GroupKind::kData, CollectiveKind::kAllReduce, bytes);
    benchmark::DoNotOptimize(cost);
    bytes += 1;  // a different size each time: nothing is cached per size
  }
}
BENCHMARK(BM_DataParallelAllReduceLayoutQuery1024)->Unit(benchmark::kNanosecond);

// One explicit DP group (32 ranks on 32 nodes): O(group) to validate and key it.
void BM_DataParallelAllReduceGroupQuery1024(benchmark::State& state) {
  CollectiveModel m = dgx_model();
  const auto group = loom::sim::layout_groups(t8p4d32(), GroupKind::kData)[0];
  for (auto _ : state) {
    auto cost = m.estimate(CollectiveKind::kAllReduce, group, 1e9);
    benchmark::DoNotOptimize(cost);
  }
}
BENCHMARK(BM_DataParallelAllReduceGroupQuery1024)->Unit(benchmark::kNanosecond);

// A cache miss: route and load every flow of all 32 DP groups of 32 ranks (what the first query
// pays).
void BM_DataParallelLayoutModelBuild1024(benchmark::State& state) {
  const auto topology = std::make_shared<const loom::sim::ClusterTopology>(
      loom::sim::ClusterTopology::build(loom::core::load_cluster_profile("dgx-a100-80gb").value(),
                                        kGpus)
          .value());
  for (auto _ : state) {
    CollectiveModel m(topology);
    auto cost = m.estimate_layout(t8p4d32(), GroupKind::kData, CollectiveKind::kAllReduce, 1e9,
                                  Algorithm::kRing);
    benchmark::DoNotOptimize(cost);
  }
}
BENCHMARK(BM_DataParallelLayoutModelBuild1024)->Unit(benchmark::kMicrosecond);

// Building the graph and its routes once per (profile, GPU count).
void BM_TopologyBuild1024(benchmark::State& state) {
  const auto profile = loom::core::load_cluster_profile("dgx-a100-80gb").value();
  for (auto _ : state) {
    auto t = loom::sim::ClusterTopology::build(profile, kGpus);
    benchmark::DoNotOptimize(t);
  }
}
BENCHMARK(BM_TopologyBuild1024)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
