// `loom plan`: searches every valid layout for a model, cluster, GPU count and batch, prints
// the top plans (layout, partition, fullest stage, step time, tokens/s, MFU, bubble, exposed
// communication), why the runner-up and the best rejected layout lose, and the candidate
// counts; --out writes the best plan file, --json everything for scripts.
#include <unistd.h>

#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/table.h"
#include "core/model_io.h"
#include "planner/search.h"

namespace loom::cli {

namespace {

struct PlanArgs {
  std::string model, cluster, framework = "megatron", objective = "throughput", out;
  int64_t gpus = 0, gbs = 0, seq = 0;
  int top = 5, threads = 0;
  std::vector<std::string> constraints;
  bool json = false;
};

std::string partition_text(const std::vector<int64_t>& p) {
  std::string s;
  for (int64_t n : p) s += (s.empty() ? "" : ",") + std::to_string(n);
  return s;
}

nlohmann::json evaluated_json(const plan::Evaluated& e) {
  return {{"layout", e.layout.summary()},
          {"tp", e.layout.tp}, {"pp", e.layout.pp}, {"dp", e.layout.dp}, {"vpp", e.layout.vpp},
          {"sp", e.layout.sp}, {"zero", e.layout.zero}, {"mbs", e.layout.mbs},
          {"recompute", core::to_string(e.layout.recompute)},
          {"partition", e.layout.partition},
          {"peak_gib", e.peak_gib}, {"peak_stage", e.peak_stage},
          {"step", sim::step_time_json(e.step)}};
}

void print_table(const plan::PlanRequest& req, const plan::PlanResult& r) {
  std::cout << fmt::format("Plans for {} on {} x {} ({}), gbs {}, seq {}, framework {}\n\n",
                           req.model.name, req.gpus, req.cluster.device.name, req.cluster.name,
                           req.gbs, req.seq, sim::to_string(req.framework));
  Table t;
  for (const char* h : {"#", "layout", "partition", "peak GiB", "step s", "tokens/s", "MFU",
                        "bubble", "exposed comm s"}) {
    t.add_column(h, std::string(h) == "layout" || std::string(h) == "partition" ? Table::Align::kLeft
                                                                                 : Table::Align::kRight);
  }
  for (size_t i = 0; i < r.top.size(); ++i) {
    const auto& e = r.top[i];
    const auto& b = e.step.breakdown;
    t.add_row({std::to_string(i + 1), e.layout.summary(), partition_text(e.layout.partition),
               fmt::format("{:.1f} (stage {})", e.peak_gib, e.peak_stage),
               fmt::format("{:.3f}", e.step.step_time_s), fmt::format("{:.0f}", e.step.tokens_per_s),
               fmt::format("{:.1f}%", 100 * e.step.mfu), fmt::format("{:.1f}%", 100 * e.step.bubble_fraction),
               fmt::format("{:.3f}", b.tp_comm + b.pp_comm + b.dp_comm)});
  }
  std::cout << t.render() << "\n";
  if (!r.partition_note.empty()) {
    std::cout << "Partition:  #1 counts the embedding and LM head as work; a " << r.partition_note << "\n";
  }
  if (!r.runner_up_reason.empty()) std::cout << "Why not #2: " << r.runner_up_reason << "\n";
  if (!r.best_rejected_reason.empty()) std::cout << "Rejected:   " << r.best_rejected_reason << "\n";
  std::cout << fmt::format("\n{} candidates, {} simulated, {:.2f} s\n", r.candidates, r.simulated, r.wall_s);
  for (const auto& [reason, n] : r.rejected) std::cout << fmt::format("  {:>7}  {}\n", n, reason);
}

core::Status run_plan(const PlanArgs& a) {
  plan::PlanRequest req;
  LOOM_ASSIGN_OR_RETURN(req.model, core::load_model(a.model));
  LOOM_ASSIGN_OR_RETURN(req.cluster, core::load_cluster_profile(a.cluster));
  LOOM_ASSIGN_OR_RETURN(req.framework, sim::parse_framework(a.framework));
  req.cluster_name = a.cluster;
  req.gpus = a.gpus;
  req.gbs = a.gbs;
  req.seq = a.seq > 0 ? a.seq : req.model.max_seq_len;
  req.top_k = std::max(1, a.top);
  req.threads = a.threads;
  for (const auto& c : a.constraints) {
    LOOM_ASSIGN_OR_RETURN(plan::Constraint parsed, plan::parse_constraint(c));
    req.constraints.push_back(parsed);
  }
  const bool tty = isatty(2);
  auto progress = [tty](int64_t done, int64_t total) {
    if (tty) std::cerr << fmt::format("\rsearching: {}/{} layout shapes", done, total) << std::flush;
  };
  LOOM_ASSIGN_OR_RETURN(plan::PlanResult result, plan::search_plans(req, progress));
  if (tty) std::cerr << "\r" << std::string(60, ' ') << "\r";
  if (result.top.empty()) {
    std::string reasons;
    for (const auto& [reason, n] : result.rejected) {
      reasons += fmt::format("{}{} x {}", reasons.empty() ? "" : "; ", n, reason);
    }
    return core::error(core::ErrorCode::kInfeasible,
                       "no layout of {} runs on {} x {} with gbs {} and seq {}: {}{}", req.model.name,
                       req.gpus, req.cluster.name, req.gbs, req.seq,
                       reasons.empty() ? "no candidate layouts" : reasons,
                       result.best_rejected_reason.empty() ? "" : " (" + result.best_rejected_reason + ")");
  }
  if (!a.out.empty()) LOOM_RETURN_IF_ERROR(plan::save_plan(plan::make_plan(req, result.top[0]), a.out));
  if (a.json) {
    nlohmann::json top = nlohmann::json::array();
    for (const auto& e : result.top) top.push_back(evaluated_json(e));
    nlohmann::json j = {{"model", req.model.name}, {"cluster", req.cluster.name},
                        {"gpus", req.gpus}, {"gbs", req.gbs}, {"seq", req.seq},
                        {"framework", sim::to_string(req.framework)}, {"plans", top},
                        {"runner_up_reason", result.runner_up_reason},
                        {"best_rejected_reason", result.best_rejected_reason},
                        {"partition_note", result.partition_note},
                        {"candidates", result.candidates}, {"simulated", result.simulated},
                        {"rejected", result.rejected}, {"wall_s", result.wall_s}};
    if (result.best_rejected) j["best_rejected"] = evaluated_json(*result.best_rejected);
    std::cout << j.dump(2) << "\n";
  } else {
    print_table(req, result);
    if (!a.out.empty()) std::cout << "\nwrote " << a.out << "\n";
  }
  return core::ok_status();
}

}  // namespace

CommandRunner register_plan_command(CLI::App& app) {
  auto a = std::make_shared<PlanArgs>();
  CLI::App* cmd = app.add_subcommand("plan", "search every layout and pick the fastest that fits");
  cmd->add_option("--model", a->model, "model preset, preset YAML or Hugging Face config.json")->required();
  cmd->add_option("--cluster", a->cluster, "cluster profile name or YAML")->required();
  cmd->add_option("--gpus", a->gpus, "number of GPUs")->required()->check(CLI::PositiveNumber);
  cmd->add_option("--gbs,--global-batch-size", a->gbs, "global batch size (sequences)")
      ->required()->check(CLI::PositiveNumber);
  cmd->add_option("--seq,--seq-length", a->seq, "sequence length (default: the model's)");
  cmd->add_option("--framework", a->framework,
                  "framework: megatron, megatron-deepspeed, fsdp, nanotron, loom")->capture_default_str();
  cmd->add_option("--objective", a->objective,
                  "throughput (fastest step) or cost (same as throughput at a fixed GPU count)")
      ->check(CLI::IsMember({"throughput", "cost"}))->capture_default_str();
  cmd->add_option("--top", a->top, "how many plans to list")->capture_default_str();
  cmd->add_option("--constraint", a->constraints,
                  "restrict the search, e.g. tp<=8, pp=4, zero>=1, recompute=full (repeatable)");
  cmd->add_option("--threads", a->threads, "worker threads (default: all cores)");
  cmd->add_option("--out", a->out, "write the best plan to this YAML file");
  cmd->add_flag("--json", a->json, "print JSON");
  return [cmd, a]() { return cmd->parsed() ? run_plan(*a) : core::ok_status(); };
}

}  // namespace loom::cli
