// Time to simulate one iteration of a layout (the planner evaluates millions): BLOOM-176B on
// 384 GPUs (12 stages x 128 micro-batches) and GPT-3 175B on 1024 GPUs (interleaved, 16
// stages). Target: under 1 ms per layout with a shared collective model (the planner's path).
#include <benchmark/benchmark.h>

#include "core/cluster_profile.h"
#include "core/model_io.h"
#include "simulator/step_time.h"

namespace {

loom::sim::StepTimeInput make_input(const char* model, const char* cluster, int64_t gpus,
                                    int64_t tp, int64_t pp, int64_t vpp, int64_t mbs, int64_t gbs,
                                    loom::sim::Framework fw) {
  loom::sim::StepTimeInput in;
  in.model = loom::core::load_model(model).value();
  in.cluster = loom::core::load_cluster_profile(cluster).value();
  loom::core::Layout l;
  l.gpus = gpus;
  l.tp = tp;
  l.pp = pp;
  l.vpp = vpp;
  l.zero = 1;
  l.mbs = mbs;
  l.gbs = gbs;
  l.seq = 2048;
  l.recompute = loom::core::Recompute::kFull;
  l.partition_method = loom::core::PartitionMethod::kEmbeddingAsLayer;
  in.layout = loom::core::resolve_layout(l, in.model).value();
  in.framework = fw;
  return in;
}

void run(benchmark::State& state, const loom::sim::StepTimeInput& in) {
  auto collectives = loom::sim::CollectiveModel::create(in.cluster, in.layout.gpus).value();
  for (auto _ : state) {
    auto r = loom::sim::simulate_step(in, &collectives);
    benchmark::DoNotOptimize(r);
  }
}

void BM_SimulateBloom384(benchmark::State& state) {
  run(state, make_input("bloom-176b", "jean-zay-a100-80gb", 384, 4, 12, 1, 2, 2048,
                        loom::sim::Framework::kMegatronDeepSpeed));
}
BENCHMARK(BM_SimulateBloom384)->Unit(benchmark::kMicrosecond);

void BM_SimulateGpt3Interleaved1024(benchmark::State& state) {
  run(state, make_input("gpt3-175b", "dgx-a100-80gb", 1024, 8, 16, 2, 1, 1536,
                        loom::sim::Framework::kMegatron));
}
BENCHMARK(BM_SimulateGpt3Interleaved1024)->Unit(benchmark::kMicrosecond);

// Without a shared collective model: what a single `loom simulate` pays (graph build included).
void BM_SimulateBloom384ColdCollectives(benchmark::State& state) {
  const auto in = make_input("bloom-176b", "jean-zay-a100-80gb", 384, 4, 12, 1, 2, 2048,
                             loom::sim::Framework::kMegatronDeepSpeed);
  for (auto _ : state) {
    auto r = loom::sim::simulate_step(in);
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_SimulateBloom384ColdCollectives)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
