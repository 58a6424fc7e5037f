// How long the memory model takes for one layout: the planner evaluates it for every
// candidate, so it must stay in the microseconds. Run: build/bench/memory_benchmark.
#include <benchmark/benchmark.h>

#include "core/cluster_profile.h"
#include "core/model_io.h"
#include "simulator/memory_model.h"

namespace {

loom::sim::MemoryModelInput bloom_input() {
  loom::sim::MemoryModelInput in;
  in.model = loom::core::load_model("bloom-176b").value();
  in.cluster = loom::core::load_cluster_profile("jean-zay-a100-80gb").value();
  loom::core::Layout l;
  l.gpus = 384;
  l.tp = 4;
  l.pp = 12;
  l.zero = 1;
  l.mbs = 2;
  l.gbs = 2048;
  l.seq = 2048;
  l.recompute = loom::core::Recompute::kFull;
  l.partition_method = loom::core::PartitionMethod::kEmbeddingAsLayer;
  in.layout = loom::core::resolve_layout(l, in.model).value();
  in.framework = loom::sim::Framework::kMegatronDeepSpeed;
  return in;
}

void BM_MemoryModelBloom384(benchmark::State& state) {
  const auto in = bloom_input();
  for (auto _ : state) {
    auto report = loom::sim::estimate_memory(in);
    benchmark::DoNotOptimize(report);
  }
}
BENCHMARK(BM_MemoryModelBloom384)->Unit(benchmark::kMicrosecond);

// What the planner pays per candidate: no report strings.
void BM_MemoryModelBloom384NoText(benchmark::State& state) {
  auto in = bloom_input();
  in.describe_stages = false;
  for (auto _ : state) {
    auto report = loom::sim::estimate_memory(in);
    benchmark::DoNotOptimize(report);
  }
}
BENCHMARK(BM_MemoryModelBloom384NoText)->Unit(benchmark::kMicrosecond);

void BM_ResolveLayoutBloom(benchmark::State& state) {
  const auto in = bloom_input();
  loom::core::Layout l = in.layout;
  l.partition.clear();
  for (auto _ : state) {
    auto resolved = loom::core::resolve_layout(l, in.model);
    benchmark::DoNotOptimize(resolved);
  }
}
BENCHMARK(BM_ResolveLayoutBloom)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
