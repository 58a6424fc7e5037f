// Full layout searches (what `loom plan` does): GPT-3 175B on 1024 dgx-a100-80gb GPUs and
// BLOOM-176B on 384 jean-zay GPUs, all cores. Target: each under 10 s on a 2-core machine.
// The counters report the candidates enumerated and the simulations run per search.
#include <benchmark/benchmark.h>

#include "core/model_io.h"
#include "planner/search.h"

namespace {

void search(benchmark::State& state, const char* model, const char* cluster, int64_t gpus,
            int64_t gbs, loom::sim::Framework fw) {
  loom::plan::PlanRequest r;
  r.model = loom::core::load_model(model).value();
  r.cluster = loom::core::load_cluster_profile(cluster).value();
  r.cluster_name = cluster;
  r.gpus = gpus;
  r.gbs = gbs;
  r.seq = 2048;
  r.framework = fw;
  int64_t candidates = 0, simulated = 0;
  for (auto _ : state) {
    auto result = loom::plan::search_plans(r);
    candidates = result->candidates;
    simulated = result->simulated;
    benchmark::DoNotOptimize(result);
  }
  state.counters["candidates"] = static_cast<double>(candidates);
  state.counters["simulated"] = static_cast<double>(simulated);
}

void BM_PlanGpt3On1024(benchmark::State& state) {
  search(state, "gpt3-175b", "dgx-a100-80gb", 1024, 1536, loom::sim::Framework::kMegatron);
}
BENCHMARK(BM_PlanGpt3On1024)->Unit(benchmark::kSecond)->Iterations(2);

void BM_PlanBloomOn384(benchmark::State& state) {
  search(state, "bloom-176b", "jean-zay-a100-80gb", 384, 2048,
         loom::sim::Framework::kMegatronDeepSpeed);
}
BENCHMARK(BM_PlanBloomOn384)->Unit(benchmark::kSecond)->Iterations(2);

}  // namespace

BENCHMARK_MAIN();
