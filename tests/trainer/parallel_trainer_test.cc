// The parallel trainer (trainer/parallel_trainer.h) against the single-rank run
// (train_reference.h) on the thread backend: issue 7's layouts -- TP2, PP2, PP4 with the
// embedding-aware uneven partition, DP2 with ZeRO 0-3, DP4 with ZeRO 1-3, TP2xDP2 ZeRO-3, TP2xPP2, TP2xDP2 ZeRO-1, PP2
// interleaved (vpp 2), plus GPipe, recomputation and sequence parallelism -- for a tiny Llama (GQA, RoPE, SwiGLU,
// untied head) and a tiny Bloom (ALiBi, LayerNorm with biases, embedding norm, tied head, so the
// tied embedding spans the first and last stage), both with 6 blocks, 20 iterations of 8
// micro-batches. Bound (issue 7): every iteration's loss within 1e-5 relative of the single-rank
// run; the final weights: see expect_matches. The tensor-parallel sums reassociate the
// reductions over the hidden and vocabulary dimensions; the pipeline changes nothing in the
// arithmetic but the gradient norm's sum.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "comm/process_groups.h"
#include "comm/thread_comm.h"
#include "core/cluster_profile.h"
#include "core/model_io.h"
#include "simulator/memory_model.h"
#include "tests/trainer/train_reference.h"
#include "trainer/parallel_trainer.h"

namespace loom::train {
namespace {

using testing::init_params;
using testing::kMbs;
using testing::kMicro;
using testing::kSeq;
using testing::kSteps;
using testing::optimizer;
using testing::single_rank;
using testing::step_batches;
using testing::TrainRun;

core::ModelSpec six_blocks(const char* name) {
  core::ModelSpec spec = core::load_model(name).value();
  spec.num_layers = 6;  // enough blocks for four stages and for two chunks on two stages
  return spec;
}

struct Case {
  int64_t tp = 1, pp = 1, dp = 1, vpp = 1;
  int zero = 0;
  core::PartitionMethod partition = core::PartitionMethod::kUniform;
  core::PipelineSchedule schedule = core::PipelineSchedule::k1F1B;
  core::Recompute recompute = core::Recompute::kNone;
  bool sp = false;
};

core::Layout layout_of(const Case& c, const core::ModelSpec& spec) {
  core::Layout l;
  l.tp = c.tp;
  l.pp = c.pp;
  l.dp = c.dp;
  l.vpp = c.vpp;
  l.gpus = c.tp * c.pp * c.dp;
  l.zero = c.zero;
  l.mbs = kMbs;
  l.gbs = kMbs * kMicro;
  l.seq = kSeq;
  l.partition_method = c.partition;
  l.schedule = c.schedule;
  l.recompute = c.recompute;
  l.sp = c.sp;
  l.precision = core::Precision::kFp32;
  return core::resolve_layout(l, spec).value();
}

// Runs every rank of the layout on a thread; checks that all ranks report the same losses and
// assemble the same full weights, and returns rank 0's. Optionally: the largest workspace and
// state bytes of a rank, every rank's state + workspace bytes.
TrainRun run_parallel(const core::ModelSpec& spec, const core::Layout& layout,
                      const std::vector<float>& init, int64_t* workspace_bytes = nullptr,
                      int64_t* state_bytes = nullptr, int64_t steps = kSteps,
                      std::vector<int64_t>* rank_bytes = nullptr) {
  const int n = static_cast<int>(layout.tp * layout.pp * layout.dp);
  auto world = comm::make_thread_world(n);
  std::vector<TrainRun> runs(n);
  std::vector<core::Status> status(n, core::ok_status());
  std::vector<int64_t> workspace(n, 0), state(n, 0);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      omp_set_num_threads(1);  // one core per rank: the ranks share this machine's cores
      world[r]->set_timeout(std::chrono::seconds(60));
      auto groups = comm::make_process_groups(*world[r], layout);
      if (!groups.ok()) {
        status[r] = groups.status();
        return;
      }
      auto t = ParallelTrainer::create(spec, layout, optimizer(), &*groups, init);
      if (!t.ok()) {
        status[r] = t.status();
        return;
      }
      for (int64_t step = 1; step <= steps; ++step) {
        auto s = (*t)->train_step(step_batches(spec.vocab_size, step), kMbs, kSeq,
                                  learning_rate(optimizer(), step));
        if (!s.ok()) {
          status[r] = s.status();
          return;
        }
        runs[r].losses.push_back(s->loss);
      }
      std::vector<float> m, v;
      status[r] = (*t)->full_state(&runs[r].params, &m, &v);
      workspace[r] = (*t)->workspace_bytes();
      state[r] = (*t)->state_bytes();
    });
  }
  for (auto& th : threads) th.join();
  for (int r = 0; r < n; ++r)
    EXPECT_TRUE(status[r].ok()) << "rank " << r << ": " << status[r].message();
  for (int r = 1; r < n; ++r) {
    EXPECT_EQ(runs[r].losses, runs[0].losses) << "rank " << r;
    EXPECT_EQ(runs[r].params, runs[0].params) << "rank " << r;
  }
  if (workspace_bytes != nullptr) *workspace_bytes = *std::max_element(workspace.begin(), workspace.end());
  if (state_bytes != nullptr) *state_bytes = *std::max_element(state.begin(), state.end());
  if (rank_bytes != nullptr) {
    rank_bytes->clear();
    for (int r = 0; r < n; ++r) rank_bytes->push_back(state[r] + workspace[r]);
  }
  return runs[0];
}

std::string name_of(const Case& c) {
  std::string s = fmt::format("tp{} pp{} dp{}", c.tp, c.pp, c.dp);
  if (c.vpp > 1) s += fmt::format(" vpp{}", c.vpp);
  if (c.dp > 1) s += fmt::format(" zero{}", c.zero);
  if (c.partition == core::PartitionMethod::kEmbeddingAsLayer) s += " embedding-as-layer";
  if (c.schedule == core::PipelineSchedule::kGPipe) s += " gpipe";
  if (c.recompute != core::Recompute::kNone) s += std::string(" recompute ") + core::to_string(c.recompute);
  if (c.sp) s += " sp";
  return s;
}

// Losses within issue 7's 1e-5 relative; weights within 1e-5 in relative L2 norm. Not an
// element-wise bound: AdamW divides each update by sqrt(v), so an element whose gradient is
// itself cancellation noise takes a step whose size does not shrink with the noise (seen: one
// w_down element of 0.011 off by 1.4e-5 after 20 steps under TP2, the whole model off by 2.8e-6
// in L2). With `exact` (no reduction reassociated) every loss and weight must be bit-identical.
void expect_matches(const TrainRun& ref, const TrainRun& run, const std::string& what, bool exact) {
  ASSERT_EQ(run.losses.size(), ref.losses.size());
  ASSERT_EQ(run.params.size(), ref.params.size());
  double worst = 0, diff2 = 0, norm2 = 0, worst_weight = 0;
  for (size_t i = 0; i < ref.losses.size(); ++i) {
    const double rel = std::abs(run.losses[i] - ref.losses[i]) / ref.losses[i];
    worst = std::max(worst, rel);
    EXPECT_LT(rel, 1e-5) << "iteration " << i + 1;
  }
  for (size_t i = 0; i < ref.params.size(); ++i) {
    const double d = std::abs(double(run.params[i]) - ref.params[i]);
    worst_weight = std::max(worst_weight, d);
    diff2 += d * d;
    norm2 += double(ref.params[i]) * ref.params[i];
  }
  const double l2 = std::sqrt(diff2 / norm2);
  EXPECT_LT(l2, 1e-5);
  if (exact) {
    EXPECT_EQ(run.losses, ref.losses);
    EXPECT_EQ(run.params, ref.params);
  }
  std::printf("[ %s ] loss %.5f -> %.5f; worst loss rel diff %.2e; weights: L2 rel diff %.2e, "
              "worst element %.2e%s\n",
              what.c_str(), ref.losses.front(), ref.losses.back(), worst, l2, worst_weight,
              exact ? " (bit-exact required)" : "");
}

TEST(ParallelTrainer, MatchesTheSingleRankRunForEveryLayout) {
  using PM = core::PartitionMethod;
  const std::vector<Case> cases = {
      {.tp = 2},
      {.pp = 2},
      {.pp = 4, .partition = PM::kEmbeddingAsLayer},
      {.dp = 2, .zero = 0},
      {.dp = 2, .zero = 1},
      {.dp = 2, .zero = 2},
      {.dp = 2, .zero = 3},
      {.dp = 4, .zero = 1},
      {.dp = 4, .zero = 2},
      {.dp = 4, .zero = 3},
      {.tp = 2, .dp = 2, .zero = 3},
      {.tp = 2, .pp = 2},
      {.tp = 2, .dp = 2, .zero = 1},
      {.pp = 2, .vpp = 2},
      {.pp = 2, .schedule = core::PipelineSchedule::kGPipe, .recompute = core::Recompute::kFull},
      {.tp = 2, .pp = 2, .recompute = core::Recompute::kSelective},
      {.tp = 2, .sp = true},
      {.tp = 2, .pp = 2, .sp = true},
      {.tp = 2, .recompute = core::Recompute::kFull, .sp = true},
      {.tp = 2, .dp = 2, .zero = 3, .sp = true},
  };
  for (const char* model : {"tiny-llama", "tiny-bloom"}) {
    const core::ModelSpec spec = six_blocks(model);
    const std::vector<float> init = init_params(ParamLayout(spec), spec.num_layers, 42);
    omp_set_num_threads(1);  // as each rank runs: the same GEMM blocking, the same sums
    const TrainRun ref = single_rank(spec, init);
    omp_set_num_threads(omp_get_num_procs());
    for (const Case& c : cases) {
      const std::string what = std::string(model) + " " + name_of(c);
      SCOPED_TRACE(what);
      // Pipelining alone changes no arithmetic: each stage runs the same ops on the same
      // numbers, and the gradient norm (summed per stage in double) rounds to the same fp32
      // coefficient here. A tied embedding's two gradients are summed once at the end instead
      // of accumulated together, so that case is not exact.
      const bool exact = c.tp == 1 && c.dp == 1 && !spec.tied_embeddings;
      expect_matches(ref, run_parallel(spec, layout_of(c, spec), init), what, exact);
    }
  }
}

// 1F1B keeps at most pp - rank micro-batches in flight where GPipe keeps all of them: the
// first stage's activation high-water mark shows it.
TEST(ParallelTrainer, OneFOneBHoldsFewerMicroBatchesThanGPipe) {
  const core::ModelSpec spec = six_blocks("tiny-llama");
  const std::vector<float> init = init_params(ParamLayout(spec), spec.num_layers, 7);
  int64_t one_f_one_b = 0, gpipe = 0;
  run_parallel(spec, layout_of({.pp = 2}, spec), init, &one_f_one_b);
  run_parallel(spec, layout_of({.pp = 2, .schedule = core::PipelineSchedule::kGPipe}, spec), init,
               &gpipe);
  EXPECT_GT(gpipe, 2 * one_f_one_b) << "8 micro-batches in flight vs at most 2";
}

// What each ZeRO stage keeps per rank of DP4, in units of the fp32 weights' bytes W: ZeRO-0
// weights, gradients and both moments (4 W); ZeRO-1 weights, gradients (reduce-scattered in
// place) and the share's moments (2 W + 2 W / 4); ZeRO-2 weights, the shares of gradients and
// moments (W + 3 W / 4), one unit's full gradients and the reduce-scatter staging of one share
// (one block of the 6-block tiny Llama: 45,440 + 11,360 of 321,856 elements, 0.18 W); ZeRO-3
// its shares of all four (W), the staging and the largest unit gathered with its gradients
// (2 x 45,440, 0.28 W; 1.32 W measured) -- never the whole model.
TEST(ParallelTrainer, ZeroStagesKeepWhatTheyPromise) {
  const core::ModelSpec spec = six_blocks("tiny-llama");
  const std::vector<float> init = init_params(ParamLayout(spec), spec.num_layers, 3);
  const double weights = double(ParamLayout(spec).total()) * sizeof(float);
  int64_t z0 = 0, z1 = 0, z2 = 0, z3 = 0;
  run_parallel(spec, layout_of({.dp = 4, .zero = 0}, spec), init, nullptr, &z0);
  run_parallel(spec, layout_of({.dp = 4, .zero = 1}, spec), init, nullptr, &z1);
  run_parallel(spec, layout_of({.dp = 4, .zero = 2}, spec), init, nullptr, &z2);
  run_parallel(spec, layout_of({.dp = 4, .zero = 3}, spec), init, nullptr, &z3);
  // fp32: weights 1, gradients 1, moments 2 (in units of the weights); ZeRO-1 shards the
  // moments (reduce-scatter in place), ZeRO-2 the gradients too but holds one unit's full
  // gradients before their reduce-scatter, ZeRO-3 everything but one gathered unit.
  EXPECT_NEAR(z0 / weights, 4.0, 0.01);
  EXPECT_NEAR(z1 / weights, 2.5, 0.01);
  EXPECT_GT(z2 / weights, 1.75);
  EXPECT_LT(z2 / weights, 2.0);
  EXPECT_GT(z3 / weights, 1.0);
  EXPECT_LT(z3 / weights, 1.35);
  std::printf("state per rank / fp32 weights, DP4: ZeRO-0 %.3f, ZeRO-1 %.3f, ZeRO-2 %.3f, "
              "ZeRO-3 %.3f\n",
              z0 / weights, z1 / weights, z2 / weights, z3 / weights);
}

// The memory model (simulator/memory_model.h, framework loom-cpu) against what every rank of
// the trainer holds: weights, gradients, optimizer state, activation slots at their high-water
// mark, scratch. The figure `loom run` compares on a CPU (issue 7: within 10%); held here to 2%
// for every layout kind the trainer runs, both models, one iteration.
TEST(ParallelTrainer, MemoryModelPredictsEveryRanksBuffers) {
  using PM = core::PartitionMethod;
  const std::vector<Case> cases = {
      {},
      {.recompute = core::Recompute::kSelective},
      {.recompute = core::Recompute::kFull},
      {.tp = 2},
      {.pp = 2},
      {.pp = 4, .partition = PM::kEmbeddingAsLayer},
      {.pp = 2, .vpp = 2},
      {.pp = 2, .schedule = core::PipelineSchedule::kGPipe},
      {.dp = 2, .zero = 0},
      {.dp = 2, .zero = 1},
      {.dp = 4, .zero = 2},
      {.dp = 4, .zero = 3},
      {.tp = 2, .pp = 2},
      {.tp = 2, .dp = 2, .zero = 3},
      {.tp = 2, .sp = true},
      {.tp = 2, .pp = 2, .sp = true},
  };
  const core::ClusterProfile cluster = core::load_cluster_profile("local-cpu").value();
  double worst = 0;
  std::string worst_case;
  for (const char* model : {"tiny-llama", "tiny-bloom"}) {
    const core::ModelSpec spec = six_blocks(model);
    const std::vector<float> init = init_params(ParamLayout(spec), spec.num_layers, 5);
    for (const Case& c : cases) {
      const std::string what = std::string(model) + " " + name_of(c);
      SCOPED_TRACE(what);
      const core::Layout layout = layout_of(c, spec);
      std::vector<int64_t> measured;
      run_parallel(spec, layout, init, nullptr, nullptr, 1, &measured);
      sim::MemoryModelInput in{spec, cluster, layout, sim::Framework::kLoomCpu, std::nullopt, false};
      const sim::MemoryReport predicted = sim::estimate_memory(in).value();
      for (size_t r = 0; r < measured.size(); ++r) {
        const core::RankCoords at = core::rank_coords(layout, static_cast<int64_t>(r));
        const double p = predicted.stages[at.pp].allocated_bytes;
        const double rel = std::abs(double(measured[r]) - p) / double(measured[r]);
        EXPECT_LT(rel, 0.02) << "rank " << r << ": measured " << measured[r] << " B, predicted " << p;
        if (rel > worst) worst = rel, worst_case = what + fmt::format(" rank {}", r);
      }
    }
  }
  std::printf("memory model vs trainer buffers: worst relative error %.3f (%s)\n", worst,
              worst_case.c_str());
}

TEST(ParallelTrainer, RefusesWhatItDoesNotRunByName) {
  const core::ModelSpec spec = six_blocks("tiny-llama");
  const std::vector<float> init = init_params(ParamLayout(spec), spec.num_layers, 1);
  auto world = comm::make_thread_world(1);
  core::Layout l = layout_of({}, spec);
  auto groups = comm::make_process_groups(*world[0], l).value();
  for (auto [field, value] : {std::pair{"zero", 4}, {"sp", 1}}) {
    core::Layout bad = l;
    if (std::string(field) == "zero") bad.zero = value;
    if (std::string(field) == "sp") bad.sp = true;
    auto t = ParallelTrainer::create(spec, bad, optimizer(), &groups, init);
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.status().message().find(std::string("'") + field + "'"), std::string::npos)
        << t.status().message();
  }
  core::Layout piped = l;
  piped.pp = 2;
  piped.zero = 3;
  const core::Status z3 = ParallelTrainer::check_layout(piped);
  EXPECT_NE(z3.message().find("'zero' = 3"), std::string::npos) << z3.message();
  EXPECT_NE(z3.message().find("use zero 1 with pp > 1"), std::string::npos) << z3.message();
  auto short_init = ParallelTrainer::create(spec, l, optimizer(), &groups, std::vector<float>(10));
  ASSERT_FALSE(short_init.ok());
  EXPECT_NE(short_init.status().message().find("10 values"), std::string::npos);
  auto t = ParallelTrainer::create(spec, l, optimizer(), &groups, init).value();
  auto batches = step_batches(spec.vocab_size, 1);
  batches[3].pop_back();
  auto step = t->train_step(batches, kMbs, kSeq, 1e-3);
  ASSERT_FALSE(step.ok());
  EXPECT_NE(step.status().message().find("micro-batch 3"), std::string::npos);
}

}  // namespace
}  // namespace loom::train
