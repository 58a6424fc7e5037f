// `loom run`: one command that plans and trains, then sets the prediction against the
// measurement (issue 7). The search is `loom plan`'s over the layouts the trainer runs
// (framework loom-cpu on a CPU profile, in fp32, the CPU trainer's precision: TP, PP with
// 1F1B / interleaving, ZeRO 0-3, no sequence parallelism; a CPU profile with several ranks comes
// from `loom calibrate --measure --ranks R`); the best plan is trained for --steps
// iterations on synthetic tokens (the parallel trainer's loop, its ranks as threads / MPI
// processes, trainer/parallel_run.h; --trace writes the last iteration as a Chrome trace with
// the simulator's event names); then predicted and measured step time, tokens/s and per-rank
// training memory (weights, gradients, optimizer state, activations and scratch) are printed as
// a table or JSON, with the last iteration by phase. A CPU profile should be calibrated first
// (`loom calibrate --measure`). GPU profiles train through the CUDA trainer (framework loom,
// bf16, any recompute; data parallel with ZeRO-0 over several GPUs, launched as one process per
// GPU; the phases from CUDA events: compute, optimizer, the host's rest).
#include <algorithm>
#include <cmath>
#include <iostream>
#include <memory>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/table.h"
#include "core/cluster_profile.h"
#include "core/model_io.h"
#include "planner/plan.h"
#include "planner/search.h"
#include "simulator/memory_model.h"
#include "trainer/parallel_run.h"
#include "trainer/trainer.h"
#ifdef LOOM_WITH_CUDA
#include "trainer/cuda_run.h"
#endif

namespace loom::cli {

namespace {

struct RunArgs {
  std::string model;
  std::string cluster;
  int64_t gpus = 1;
  int64_t gbs = 0;
  int64_t seq = 0;
  int64_t steps = 10;
  std::vector<std::string> constraints;
  uint64_t seed = 1234;
  std::string trace;
  bool json = false;
};

struct RankMemory {
  int64_t rank = 0, stage = 0;
  double predicted_gib = 0, measured_gib = 0;
};

// Each rank's training buffers (state + activation high-water, trainer/parallel_run.h) and the
// memory model's peak of its pipeline stage.
core::Result<std::vector<RankMemory>> rank_memory(const plan::PlanRequest& req, const core::Layout& l,
                                                  const train::TrainSummary& s) {
  sim::MemoryModelInput in{req.model, req.cluster, l, req.framework, std::nullopt, false};
  LOOM_ASSIGN_OR_RETURN(const sim::MemoryReport report, sim::estimate_memory(in));
  const double gib = 1073741824.0;
  std::vector<RankMemory> out;
  for (size_t r = 0; r < s.ranks.size(); ++r) {
    const int64_t stage = core::rank_coords(l, static_cast<int64_t>(r)).pp;
    out.push_back({static_cast<int64_t>(r), stage, report.stages[stage].peak_bytes / gib,
                   static_cast<double>(s.ranks[r].state_bytes + s.ranks[r].workspace_bytes) / gib});
  }
  if (out.empty()) {
    out.push_back({0, 0, report.stages[0].peak_bytes / gib,
                   static_cast<double>(s.state_bytes + s.workspace_bytes) / gib});
  }
  return out;
}

// The last iteration by phase, predicted (the simulator's critical stage) and measured on the
// first rank of that stage: {name, predicted s, measured s}.
struct Phase {
  const char* name;
  double predicted_s, measured_s;
};
std::vector<Phase> phases(const sim::StepTimeReport& step, const core::Layout& l,
                          const train::TrainSummary& s, int64_t* rank) {
  *rank = 0;
  for (size_t r = 0; r < s.ranks.size(); ++r) {
    if (core::rank_coords(l, static_cast<int64_t>(r)).pp == step.critical_stage) {
      *rank = static_cast<int64_t>(r);
      break;
    }
  }
  const train::TrainSummary::RankBytes m =
      s.ranks.empty() ? train::TrainSummary::RankBytes{} : s.ranks[static_cast<size_t>(*rank)];
  const sim::StepBreakdown& b = step.breakdown;
  return {{"compute (TP collectives inside)", b.compute + b.tp_comm, m.compute_s},
          {"pipeline transfers", b.pp_comm, m.p2p_s},
          {"data-parallel reduction", b.dp_comm, m.dp_s},
          {"optimizer (ZeRO weight gather inside)", b.optimizer, m.optimizer_s},
          {"bubble and waiting", b.bubble + b.other, m.wait_s}};
}

core::Status run_run(const RunArgs& a) {
  plan::PlanRequest req;
  LOOM_ASSIGN_OR_RETURN(req.model, core::load_model(a.model));
  LOOM_ASSIGN_OR_RETURN(req.cluster, core::load_cluster_profile(a.cluster));
  const bool cpu = req.cluster.device.kind == "cpu";
#ifndef LOOM_WITH_CUDA
  if (!cpu) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "--cluster {}: a GPU profile, and this loom was built without CUDA; run "
                       "on a CPU profile (local-cpu, after `loom calibrate --measure`)",
                       a.cluster);
  }
#endif
  if (!cpu && !a.trace.empty()) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "--trace: the CUDA trainer records no trace yet; use it on a CPU profile");
  }
  req.cluster_name = a.cluster;
  req.framework = cpu ? sim::Framework::kLoomCpu : sim::Framework::kLoom;
  req.precision = cpu ? core::Precision::kFp32 : core::Precision::kBf16;
  req.gpus = a.gpus;
  req.gbs = a.gbs;
  req.seq = a.seq > 0 ? a.seq : req.model.max_seq_len;
  req.top_k = 1;
  // ZeRO shards nothing on one rank (and its staging buffers would only cost memory). The CUDA
  // trainer runs data parallelism with ZeRO-0 (cuda_data_parallel.h): on a GPU profile with
  // several GPUs the search keeps to those layouts, and the command must be launched as one
  // process per GPU (torchrun / mpirun / srun); every rank plans the same and trains its share.
  if (a.gpus == 1 || !cpu) req.constraints.push_back(plan::parse_constraint("zero=0").value());
  if (!cpu) {
    for (const char* c : {"tp=1", "pp=1", "sp=0"})
      req.constraints.push_back(plan::parse_constraint(c).value());
  }
  for (const auto& c : a.constraints) {
    LOOM_ASSIGN_OR_RETURN(plan::Constraint parsed, plan::parse_constraint(c));
    req.constraints.push_back(parsed);
  }
  LOOM_ASSIGN_OR_RETURN(plan::PlanResult result, plan::search_plans(req));
  if (result.top.empty()) {
    return core::error(core::ErrorCode::kInfeasible,
                       "no layout the trainer runs fits {} on {} x {} with gbs {} and seq {}{}",
                       req.model.name, req.gpus, req.cluster.name, req.gbs, req.seq,
                       result.best_rejected_reason.empty() ? "" : ": " + result.best_rejected_reason);
  }
  const plan::Evaluated& best = result.top[0];
  const core::Layout& l = best.layout;
  std::ostream* out = a.json ? &std::cerr : &std::cout;
  *out << fmt::format("plan: {} {} on {} x {}: predicted {:.4g} s per iteration, {:.3g} GiB per rank\n",
                      req.model.name, l.summary(), req.gpus, req.cluster.name, best.step.step_time_s,
                      best.peak_gib);

  train::TrainConfig cfg;
  cfg.model_spec = req.model;
  cfg.model = req.model.name;
  cfg.synthetic = true;
  cfg.steps = a.steps;
  cfg.mbs = l.mbs;
  cfg.gbs = l.gbs;
  cfg.seq = l.seq;
  cfg.recompute = l.recompute;
  cfg.seed = a.seed;
  cfg.guard.enabled = false;  // a measurement run: every update applied, as the DP path does
  train::TrainSummary s;
  bool reporting = true;
  if (!cpu) {
#ifdef LOOM_WITH_CUDA
    LOOM_RETURN_IF_ERROR(
        train::run_cuda_training(cfg, "auto", out, &s, a.gpus > 1 ? l.dp : 0, &reporting));
#endif
  } else {  // the parallel trainer, also for one rank: the same loop, trace and memory report
    cfg.trace = a.trace;
    LOOM_RETURN_IF_ERROR(train::run_parallel_training(cfg, l, out, &s, &reporting));
  }
  if (!reporting) return core::ok_status();

  const double gib = 1073741824.0;
  // Every rank against its pipeline stage's prediction; the headline pair is the rank whose
  // measurement is furthest from its prediction.
  std::vector<RankMemory> ranks;
  if (cpu) {
    LOOM_ASSIGN_OR_RETURN(ranks, rank_memory(req, l, s));
  } else {
    ranks.push_back({0, 0, best.peak_gib, static_cast<double>(s.peak_device_bytes) / gib});
  }
  const RankMemory& worst = *std::max_element(
      ranks.begin(), ranks.end(), [](const RankMemory& x, const RankMemory& y) {
        return std::abs(x.measured_gib / x.predicted_gib - 1) < std::abs(y.measured_gib / y.predicted_gib - 1);
      });
  const double measured_gib = worst.measured_gib, predicted_gib = worst.predicted_gib;
  const double predicted_s = best.step.step_time_s, measured_s = s.mean_step_time_s;
  const double tokens = static_cast<double>(l.gbs * l.seq);
  if (a.json) {
    YAML::Emitter plan_yaml;
    plan_yaml << plan::plan_to_yaml(plan::make_plan(req, best));
    nlohmann::json j = {
        {"plan", plan_yaml.c_str()},
        {"layout", l.summary()},
        {"predicted_step_time_s", predicted_s},
        {"measured_step_time_s", measured_s},
        {"predicted_tokens_per_s", tokens / predicted_s},
        {"measured_tokens_per_s", s.tokens_per_s},
        {"predicted_peak_gib", predicted_gib},
        {"measured_peak_gib", measured_gib},
        {"measured_what", cpu ? "training buffers (state + activation high-water) per rank"
                              : "device memory in use (cudaMemGetInfo)"},
        {"iterations", s.last_step - s.first_step + 1},
        {"ranks", nlohmann::json::array()}};
    for (const RankMemory& r : ranks) {
      j["ranks"].push_back({{"rank", r.rank}, {"pipeline_stage", r.stage},
                            {"predicted_peak_gib", r.predicted_gib}, {"measured_peak_gib", r.measured_gib}});
    }
    {
      int64_t rank = 0;
      const std::vector<Phase> ps = phases(best.step, l, s, &rank);
      j["breakdown"] = {{"rank", rank}, {"pipeline_stage", best.step.critical_stage}};
      for (const Phase& p : ps) j["breakdown"][p.name] = {{"predicted_s", p.predicted_s}, {"measured_s", p.measured_s}};
    }
    j["summary"] = s.to_json();
    std::cout << j.dump(2) << "\n";
    return core::ok_status();
  }
  Table t;
  t.add_column("", Table::Align::kLeft);
  t.add_column("predicted");
  t.add_column("measured");
  t.add_column("measured / predicted");
  t.add_row({"step time s", fmt::format("{:.4g}", predicted_s), fmt::format("{:.4g}", measured_s),
             fmt::format("{:.2f}", measured_s / predicted_s)});
  t.add_row({"tokens/s", fmt::format("{:.0f}", tokens / predicted_s), fmt::format("{:.0f}", s.tokens_per_s),
             fmt::format("{:.2f}", s.tokens_per_s * predicted_s / tokens)});
  t.add_row({cpu ? "training memory per rank GiB" : "device memory GiB", fmt::format("{:.4g}", predicted_gib),
             fmt::format("{:.4g}", measured_gib), fmt::format("{:.3f}", measured_gib / predicted_gib)});
  std::cout << "\n" << t.render();
  if (ranks.size() > 1) {
    Table per;
    for (const char* c : {"rank", "stage", "predicted GiB", "measured GiB", "measured / predicted"})
      per.add_column(c);
    for (const RankMemory& r : ranks) {
      per.add_row({std::to_string(r.rank), std::to_string(r.stage), fmt::format("{:.4g}", r.predicted_gib),
                   fmt::format("{:.4g}", r.measured_gib), fmt::format("{:.3f}", r.measured_gib / r.predicted_gib)});
    }
    std::cout << "\nTraining memory of every rank (the row above: the furthest from its prediction)\n"
              << per.render();
  }
  {
    int64_t rank = 0;
    Table b;
    b.add_column("", Table::Align::kLeft);
    b.add_column("predicted s");
    b.add_column("measured s");
    for (const Phase& p : phases(best.step, l, s, &rank))
      b.add_row({p.name, fmt::format("{:.4f}", p.predicted_s), fmt::format("{:.4f}", p.measured_s)});
    std::cout << fmt::format("\nLast iteration by phase, rank {} (pipeline stage {}, the simulator's "
                             "critical stage)\n",
                             rank, best.step.critical_stage)
              << b.render();
  }
  std::cout << fmt::format("\n{} iterations measured (the first excluded from the mean){}\n",
                           s.last_step - s.first_step + 1,
                           a.trace.empty() ? "" : "; the last one as a Chrome trace in " + a.trace);
  return core::ok_status();
}

}  // namespace

CommandRunner register_run_command(CLI::App& app) {
  auto a = std::make_shared<RunArgs>();
  CLI::App* cmd = app.add_subcommand(
      "run", "plan, train the best plan the trainer runs, and compare predicted with measured");
  cmd->add_option("--model", a->model, "model preset, preset YAML or Hugging Face config.json")->required();
  cmd->add_option("--cluster", a->cluster, "cluster profile (a CPU profile: calibrate it first)")->required();
  cmd->add_option("--gpus", a->gpus, "devices (ranks)")->capture_default_str();
  cmd->add_option("--gbs,--global-batch-size", a->gbs, "global batch size (sequences)")->required();
  cmd->add_option("--seq,--seq-length", a->seq, "sequence length (default: the model's)");
  cmd->add_option("--steps", a->steps, "iterations to train")->capture_default_str();
  cmd->add_option("--constraint", a->constraints, "restrict the search further, e.g. mbs=4, recompute=full");
  cmd->add_option("--seed", a->seed, "seed of the weights and the synthetic tokens")->capture_default_str();
  cmd->add_option("--trace", a->trace,
                  "write the last measured iteration as a Chrome trace, with the event names of "
                  "`loom simulate --trace` (CPU profiles)");
  cmd->add_flag("--json", a->json, "print JSON (predicted_step_time_s, measured_step_time_s, ...)");
  return [cmd, a]() { return cmd->parsed() ? run_run(*a) : core::ok_status(); };
}

}  // namespace loom::cli
