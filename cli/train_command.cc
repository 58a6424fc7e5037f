// `loom train`: trains a model on one process with the CPU backend (trainer/trainer.h) and
// prints Megatron-style per-iteration lines, then a summary (table, or --json). Every option
// comes from train::visit_train_fields, the single definition.
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/table.h"
#include "planner/plan.h"
#include "trainer/parallel_run.h"
#include "trainer/trainer.h"
#ifdef LOOM_WITH_CUDA
#include "trainer/cuda_run.h"
#endif

namespace loom::cli {

namespace {

struct TrainArgs {
  train::TrainConfig cfg;
  std::string recompute = "none";
  std::string backend = "cpu";
  std::string attention = "auto";
  core::Layout layout;  // --tp/--pp/--vpp/--dp/--zero/--schedule/--partition-method/--partition
  std::string schedule = "1f1b", partition_method = "uniform", partition;
  std::string plan;
  bool json = false;
  bool dp_given = false;  // --dp on the command line (--backend cuda --dp 1: the NCCL path, one rank)
};

// Registers each TrainConfig field as a CLI11 option.
struct CliRegistrar {
  CLI::App* app;
  TrainArgs* args;
  void text(const char*, const char* flags, const char* help, std::string& v) {
    app->add_option(flags, v, help);
  }
  void flag(const char*, const char* flags, const char* help, bool& v) {
    app->add_flag(flags, v, help);
  }
  void flag_inverted(const char*, const char* flags, const char* help, bool& v) {
    app->add_flag_callback(flags, [&v]() { v = false; }, help);
  }
  void integer(const char*, const char* flags, const char* help, int64_t& v) {
    app->add_option(flags, v, help)->capture_default_str();
  }
  void unsigned_integer(const char*, const char* flags, const char* help, uint64_t& v) {
    app->add_option(flags, v, help)->capture_default_str();
  }
  void real(const char*, const char* flags, const char* help, double& v) {
    app->add_option(flags, v, help)->capture_default_str();
  }
  void recompute(const char*, const char* flags, const char* help, core::Recompute&) {
    app->add_option(flags, args->recompute, help)->capture_default_str();
  }
  void hidden_integer(const char*, const char* flags, int64_t& v) {
    app->add_option(flags, v)->group("");
  }
  void hidden_text(const char*, const char* flags, std::string& v) {
    app->add_option(flags, v)->group("");
  }
};

std::string fmt_bytes_gib(int64_t b) { return fmt::format("{:.3f}", b / 1073741824.0); }

#ifdef LOOM_WITH_CUDA
constexpr const char* kBackends = "cpu, cuda";
#else
constexpr const char* kBackends = "cpu (built without CUDA)";
#endif

core::Status run_train(TrainArgs& a) {
  [[maybe_unused]] const bool cuda = a.backend == "cuda";
#ifdef LOOM_WITH_CUDA
  const bool known = a.backend == "cpu" || cuda;
#else
  const bool known = a.backend == "cpu";
#endif
  if (!known) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "--backend '{}': this build trains with: {}", a.backend, kBackends);
  }
  LOOM_ASSIGN_OR_RETURN(a.cfg.recompute, core::parse_recompute(a.recompute));
  std::ostream* out = a.json ? &std::cerr : &std::cout;
  if (!a.plan.empty()) {
    LOOM_ASSIGN_OR_RETURN(const plan::Plan p, plan::load_plan(a.plan));
    const core::Layout& l = p.layout;
    auto cannot = [&](const std::string& what) {
      return core::error(core::ErrorCode::kInvalidArgument,
                         "--plan {}: {}; the trainer runs tp x pp x dp layouts with ZeRO 0-3 "
                         "(ZeRO-2/3 without pipelining) and sequence parallelism{}",
                         a.plan, what,
                         cuda ? ", and data parallelism (ZeRO-0) with --backend cuda" : "");
    };
    if (cuda && l.sp) return cannot("sp true on --backend cuda");
    if (cuda && (l.tp * l.pp != 1 || l.zero != 0))
      return cannot(fmt::format("{} on --backend cuda", l.summary()));
    a.cfg.model_spec = p.model;
    a.cfg.model = p.model.name;
    a.cfg.mbs = l.mbs;
    a.cfg.gbs = l.gbs;
    a.cfg.seq = l.seq;
    a.cfg.recompute = l.recompute;
    a.layout = l;
    if (cuda && l.dp > 1) a.dp_given = true;
    *out << fmt::format(
        "plan {}: {} {} on {} ({}), predicted {:.4g} s per iteration, {:.3g} GiB on the fullest "
        "GPU{}\n",
        a.plan, p.model.name, l.summary(), p.cluster, sim::to_string(p.framework),
        p.predicted.step_time_s, p.predicted.peak_gib,
        cuda ? "" : "; the CPU trainer computes in fp32 with the ranks as threads or MPI "
                    "processes");
  } else {
    LOOM_ASSIGN_OR_RETURN(a.layout.schedule, core::parse_pipeline_schedule(a.schedule));
    LOOM_ASSIGN_OR_RETURN(a.layout.partition_method,
                          core::parse_partition_method(a.partition_method));
    if (!a.partition.empty()) {
      LOOM_ASSIGN_OR_RETURN(a.layout.partition, core::parse_partition(a.partition));
    }
  }
  const core::Layout& l = a.layout;
  if (cuda && (l.tp != 1 || l.pp != 1 || l.vpp > 1 || l.zero != 0 || l.sp)) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "--tp/--pp/--vpp/--zero/--sp: the CUDA backend trains data-parallel "
                       "(--dp N, ZeRO-0, one process per GPU) today; the other layouts run with "
                       "--backend cpu");
  }
  if (!cuda && (l.tp * l.pp * l.dp != 1 || l.zero != 0)) {
    train::TrainSummary s;
    bool reporting = true;
    core::Layout resolved;
    LOOM_RETURN_IF_ERROR(train::run_parallel_training(a.cfg, l, out, &s, &reporting, &resolved));
    if (!reporting) return core::ok_status();
    nlohmann::json j = s.to_json();
    j["config"] = train::train_config_to_json(a.cfg);
    j["layout"] = resolved.summary();
    j["tp"] = resolved.tp;
    j["pp"] = resolved.pp;
    j["vpp"] = resolved.vpp;
    j["dp"] = resolved.dp;
    j["sp"] = resolved.sp;
    j["zero"] = resolved.zero;
    j["partition"] = resolved.partition;
    if (a.json) {
      std::cout << j.dump(2) << "\n";
    } else {
      std::cout << fmt::format(
          "\n{}: iterations {}-{}, final loss {:.4f}, {:.4f} s per iteration, {:.0f} tokens/s, "
          "peak RSS {:.2f} GiB\n",
          resolved.summary(), s.first_step, s.last_step, s.final_loss, s.mean_step_time_s,
          s.tokens_per_s, s.peak_rss_bytes / 1073741824.0);
      Table t;
      for (const char* c : {"rank", "tp", "pp", "dp", "state MiB", "activations MiB"}) t.add_column(c);
      auto mib = [](int64_t b) { return fmt::format("{:.2f}", b / 1048576.0); };
      for (size_t r = 0; r < s.ranks.size(); ++r) {
        const core::RankCoords c = core::rank_coords(resolved, static_cast<int64_t>(r));
        t.add_row({std::to_string(r), std::to_string(c.tp), std::to_string(c.pp),
                   std::to_string(c.dp), mib(s.ranks[r].state_bytes),
                   mib(s.ranks[r].workspace_bytes)});
      }
      std::cout << t.render();
    }
    return core::ok_status();
  }
  if (!cuda && a.attention != "auto") {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "--attention {}: chooses the CUDA attention kernels; it needs --backend cuda",
                       a.attention);
  }
#ifdef LOOM_WITH_CUDA
  if (cuda) {
    train::TrainSummary s;
    bool reporting = true;
    LOOM_RETURN_IF_ERROR(train::run_cuda_training(a.cfg, a.attention, out, &s,
                                                  a.dp_given ? l.dp : 0, &reporting));
    if (!reporting) return core::ok_status();
    nlohmann::json j = s.to_json();
    j["backend"] = "cuda";
    if (a.dp_given) j["dp"] = l.dp;
    j["config"] = train::train_config_to_json(a.cfg);
    if (a.json) {
      std::cout << j.dump(2) << "\n";
    } else {
      std::cout << fmt::format(
          "\nCUDA: {} iterations, final loss {:.4f}, {:.4f} s per iteration (after the first), "
          "{:.0f} tokens/s, state {:.2f} GiB, activations {:.2f} GiB, device memory in use at "
          "most {:.2f} GiB\n",
          s.last_step, s.final_loss, s.mean_step_time_s, s.tokens_per_s,
          s.state_bytes / 1073741824.0, s.workspace_bytes / 1073741824.0,
          s.peak_device_bytes / 1073741824.0);
    }
    return core::ok_status();
  }
#endif
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<train::Trainer> trainer,
                        train::Trainer::create(a.cfg, out));
  train::TrainSummary s;
  LOOM_RETURN_IF_ERROR(trainer->run(&s));
  if (a.json) {
    nlohmann::json j = s.to_json();
    j["model"] = trainer->spec().name;
    j["config"] = train::train_config_to_json(a.cfg);
    std::cout << j.dump(2) << "\n";
    return core::ok_status();
  }
  Table t;
  t.add_column("iterations");
  t.add_column("final loss");
  t.add_column("validation loss");
  t.add_column("step time s");
  t.add_column("tokens/s");
  t.add_column("skipped");
  t.add_column("rollbacks");
  t.add_column("state GiB");
  t.add_column("activations GiB");
  t.add_column("peak RSS GiB");
  t.add_row({fmt::format("{}-{}", s.first_step, s.last_step), fmt::format("{:.4f}", s.final_loss),
             s.validation_loss >= 0 ? fmt::format("{:.4f}", s.validation_loss) : "-",
             fmt::format("{:.4f}", s.mean_step_time_s), fmt::format("{:.0f}", s.tokens_per_s),
             std::to_string(s.skipped), std::to_string(s.rollbacks), fmt_bytes_gib(s.state_bytes),
             fmt_bytes_gib(s.workspace_bytes), fmt_bytes_gib(s.peak_rss_bytes)});
  std::cout << t.render();
  return core::ok_status();
}

}  // namespace

CommandRunner register_train_command(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  CLI::App* sub = app.add_subcommand(
      "train", "Train a model with the CPU backend (one process): per-iteration loss, learning "
               "rate, gradient norm, tokens/s and memory; checkpoints and exact resume");
  CliRegistrar reg{sub, args.get()};
  train::visit_train_fields(args->cfg, reg);
  sub->add_option("--backend", args->backend,
                  "compute backend: cpu, or cuda (one GPU; in a CUDA build)")
      ->capture_default_str();
  sub->add_option("--plan", args->plan,
                  "run a plan file from `loom plan --out` as written: model, layout (dp, ZeRO, "
                  "mbs, gbs, seq, recompute) from the plan");
  core::Layout& l = args->layout;
  l.dp = 1;
  sub->add_option("--tp,--tensor-model-parallel-size", l.tp,
                  "tensor-parallel ranks (Megatron's column/row-parallel layers, "
                  "vocabulary-parallel embedding and loss)")
      ->capture_default_str();
  sub->add_option("--pp,--pipeline-model-parallel-size", l.pp, "pipeline-parallel ranks")
      ->capture_default_str();
  sub->add_option("--vpp,--virtual-pipeline-model-parallel-size", l.vpp,
                  "model chunks per pipeline rank (interleaved 1F1B when > 1)")
      ->capture_default_str();
  sub->add_option("--dp,--data-parallel-size", l.dp,
                  "data-parallel ranks; all tp x pp x dp ranks run as threads of this process, "
                  "or as the processes of an mpirun -np N launch")
      ->capture_default_str();
  sub->add_option("--zero", l.zero,
                  "ZeRO stage over --dp: 0 (replicated optimizer), 1 (optimizer state sharded), "
                  "2 (and gradients), 3 (and weights, gathered per block); 2 and 3 without "
                  "pipelining")
      ->capture_default_str();
  sub->add_flag("--sp,--sequence-parallel", l.sp,
                "sequence parallelism over the --tp ranks (norms, residual stream and pipeline "
                "messages split over the tokens)");
  sub->add_option("--schedule", args->schedule, "pipeline schedule: 1f1b (interleaved when vpp > 1), gpipe")
      ->capture_default_str();
  sub->add_option("--partition-method", args->partition_method,
                  "pipeline split: uniform (blocks only) or embedding-as-layer")
      ->capture_default_str();
  sub->add_option("--partition", args->partition,
                  "transformer blocks per (virtual) stage, e.g. 1,2,2,1");
  sub->add_option("--attention", args->attention,
                  "CUDA attention kernels: auto (fused where the head dim is 16, 32, 64 or 128, "
                  "else gemm), fused (FlashAttention-2 on tensor cores), gemm (cuBLASLt, scores "
                  "materialised), flash (CUDA-core reference), cudnn (cuDNN's fused SDPA through "
                  "its graph API; no ALiBi)")
      ->capture_default_str();
  sub->add_flag("--json", args->json, "summary as JSON on stdout (iteration lines on stderr)");
  return [sub, args]() -> core::Status {
    if (!sub->parsed()) return core::ok_status();
    if (!args->plan.empty()) {
      for (const char* name : {"--model", "--mbs", "--gbs", "--seq", "--recompute", "--tp", "--pp",
                               "--vpp", "--dp", "--zero", "--sp", "--schedule",
                               "--partition-method", "--partition"}) {
        if (sub->get_option(name)->count() > 0) {
          return core::error(core::ErrorCode::kInvalidArgument,
                             "{} with --plan {}: the plan sets it (drop {}, or train without --plan)",
                             name, args->plan, name);
        }
      }
    }
    args->dp_given = sub->get_option("--dp")->count() > 0;
    return run_train(*args);
  };
}

}  // namespace loom::cli
