// `loom budget`: for each GPU count, the best plan, its throughput, and the whole run: days with
// no failures, expected failures, Daly's checkpoint interval, lost work and restarts, goodput,
// days to train, GPU-hours and cost; marks the cheapest GPU count that meets --deadline-days.
// --compute-budget sizes the model and the tokens with Chinchilla's ~20 tokens per parameter.
#include <unistd.h>

#include <cmath>
#include <iostream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/table.h"
#include "core/data_paths.h"
#include "core/model_io.h"
#include "core/quantity.h"
#include "planner/reliability.h"
#include "planner/search.h"

namespace loom::cli {

namespace {

struct BudgetArgs {
  std::string model, cluster, framework = "megatron", tokens, compute_budget, gpus_list;
  int64_t gbs = 0, seq = 0;
  std::optional<double> price, deadline_days, restart_s;
  std::vector<std::string> constraints, framework_params;
  bool json = false;
};

// Chinchilla (Hoffmann et al. 2022): compute-optimal tokens ~ 20 x parameters, C = 6 N D.
constexpr double kChinchillaTokensPerParam = 20.0;

core::Result<std::vector<int64_t>> gpu_counts(const BudgetArgs& a, const core::ClusterProfile& c) {
  std::vector<int64_t> out;
  if (a.gpus_list.empty()) {
    const int64_t max_gpus = c.max_nodes > 0 ? c.max_nodes * c.gpus_per_node : 8192;
    for (int64_t g = c.gpus_per_node; g <= max_gpus; g *= 2) out.push_back(g);
    return out;
  }
  std::stringstream in(a.gpus_list);
  std::string item;
  while (std::getline(in, item, ',')) {
    LOOM_ASSIGN_OR_RETURN(double v, core::parse_count(item, "--gpus"));
    if (v < 1 || std::floor(v) != v) {
      return core::error(core::ErrorCode::kInvalidArgument,
                         "--gpus '{}': '{}' is not a whole number of GPUs", a.gpus_list, item);
    }
    out.push_back(static_cast<int64_t>(v));
  }
  return out;
}

// The preset closest in (log) parameter count to N, for --compute-budget without --model.
core::Result<core::ModelSpec> closest_preset(double params) {
  core::ModelSpec best;
  double best_gap = 1e300;
  for (const auto& name : core::list_data_files("models")) {
    if (name.rfind("tiny-", 0) == 0) continue;
    LOOM_ASSIGN_OR_RETURN(core::ModelSpec m, core::load_model(name));
    const double gap = std::abs(std::log(static_cast<double>(m.total_params()) / params));
    if (gap < best_gap) best_gap = gap, best = m;
  }
  return best;
}

struct Row {
  int64_t gpus = 0;
  std::optional<plan::Evaluated> best;
  std::optional<plan::RunBudget> budget;
  std::string note;
};

}  // namespace

namespace {

core::Status resolve_request(const BudgetArgs& a, plan::PlanRequest& req, double& tokens) {
  LOOM_ASSIGN_OR_RETURN(req.cluster, core::load_cluster_profile(a.cluster));
  LOOM_ASSIGN_OR_RETURN(req.framework, sim::parse_framework(a.framework));
  req.cluster_name = a.cluster;
  if (!a.framework_params.empty()) {
    sim::FrameworkTraits traits = sim::framework_traits(req.framework);
    for (const auto& p : a.framework_params) LOOM_RETURN_IF_ERROR(sim::apply_framework_param(traits, p));
    req.traits = traits;
  }
  if (a.tokens.empty() == a.compute_budget.empty()) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "give exactly one of --tokens (e.g. 300B) and --compute-budget (FLOPs, e.g. 3.14e23)");
  }
  if (!a.compute_budget.empty()) {
    LOOM_ASSIGN_OR_RETURN(double flops, core::parse_count(a.compute_budget, "--compute-budget"));
    const double optimal_params = std::sqrt(flops / (6.0 * kChinchillaTokensPerParam));
    if (a.model.empty()) {
      LOOM_ASSIGN_OR_RETURN(req.model, closest_preset(optimal_params));
    } else {
      LOOM_ASSIGN_OR_RETURN(req.model, core::load_model(a.model));
    }
    tokens = flops / (6.0 * static_cast<double>(req.model.total_params()));
  } else {
    if (a.model.empty()) return core::error(core::ErrorCode::kInvalidArgument, "--tokens needs --model");
    LOOM_ASSIGN_OR_RETURN(req.model, core::load_model(a.model));
    LOOM_ASSIGN_OR_RETURN(tokens, core::parse_count(a.tokens, "--tokens"));
  }
  req.seq = a.seq > 0 ? a.seq : req.model.max_seq_len;
  // Default batch: ~4M tokens per step (LLaMA, Llama 2 and Qwen used 4M).
  req.gbs = a.gbs > 0 ? a.gbs : std::max<int64_t>(1, (int64_t{4} << 20) / req.seq);
  req.top_k = 1;
  for (const auto& c : a.constraints) {
    LOOM_ASSIGN_OR_RETURN(plan::Constraint parsed, plan::parse_constraint(c));
    req.constraints.push_back(parsed);
  }
  return core::ok_status();
}

core::Result<Row> evaluate_gpu_count(const BudgetArgs& a, plan::PlanRequest req, double tokens,
                                     int64_t gpus) {
  Row row;
  row.gpus = gpus;
  req.gpus = gpus;
  LOOM_ASSIGN_OR_RETURN(plan::PlanResult result, plan::search_plans(req));
  if (result.top.empty()) {
    row.note = result.best_rejected_reason.empty() ? "no layout fits" : result.best_rejected_reason;
    return row;
  }
  row.best = result.top[0];
  plan::RunBudgetInput in;
  in.tokens = tokens;
  in.tokens_per_s = row.best->step.tokens_per_s;
  in.gpus = gpus;
  in.gpu_failures_per_gpu_hour = req.cluster.gpu_failures_per_gpu_hour;
  in.checkpoint_write_s = row.best->checkpoint_write_s;
  if (a.restart_s) in.restart_s = *a.restart_s;
  in.price_usd_per_gpu_hour = a.price ? a.price : req.cluster.price_usd_per_gpu_hour;
  LOOM_ASSIGN_OR_RETURN(row.budget, plan::compute_run_budget(in));
  return row;
}

std::string fmt_opt(const std::optional<double>& v, const char* f) {
  return v ? fmt::format(fmt::runtime(f), *v) : "-";
}

// The cheapest GPU count that meets the deadline (the fastest when no price or deadline).
int64_t pick(const BudgetArgs& a, const std::vector<Row>& rows) {
  int64_t best = -1;
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto& b = rows[i].budget;
    if (!b) continue;
    if (a.deadline_days && b->days_to_train > *a.deadline_days) continue;
    if (best < 0) { best = static_cast<int64_t>(i); continue; }
    const auto& cur = *rows[best].budget;
    const bool cheaper = b->cost_usd && cur.cost_usd ? *b->cost_usd < *cur.cost_usd
                                                     : b->gpu_hours < cur.gpu_hours;
    if (cheaper) best = static_cast<int64_t>(i);
  }
  return best;
}

void print_rows(const BudgetArgs& a, const plan::PlanRequest& req, double tokens,
                const std::vector<Row>& rows, int64_t chosen) {
  std::cout << fmt::format("Budget for {} ({}), {} tokens on {}, gbs {}, seq {}, framework {}\n\n",
                           req.model.name, core::format_count(static_cast<double>(req.model.total_params())),
                           core::format_count(tokens), req.cluster.name, req.gbs, req.seq,
                           sim::to_string(req.framework));
  Table t;
  for (const char* h : {"", "gpus", "plan", "tokens/s", "MFU", "days ideal", "failures",
                        "ckpt every h", "goodput", "days", "GPU-hours", "cost $"}) {
    t.add_column(h, std::string(h) == "plan" ? Table::Align::kLeft : Table::Align::kRight);
  }
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    if (!r.best) {
      t.add_row({"", std::to_string(r.gpus), r.note.substr(0, 60)});
      continue;
    }
    const auto& b = *r.budget;
    t.add_row({static_cast<int64_t>(i) == chosen ? "*" : "", std::to_string(r.gpus), r.best->layout.summary(),
               fmt::format("{:.0f}", r.best->step.tokens_per_s), fmt::format("{:.1f}%", 100 * r.best->step.mfu),
               fmt::format("{:.1f}", b.days_ideal), fmt::format("{:.1f}", b.expected_failures),
               b.checkpoint_interval_s ? fmt::format("{:.2f}", *b.checkpoint_interval_s / 3600) : "-",
               fmt::format("{:.3f}", b.goodput), fmt::format("{:.1f}", b.days_to_train),
               fmt::format("{:.3g}", b.gpu_hours), fmt_opt(b.cost_usd, "{:.3g}")});
  }
  std::cout << t.render();
  if (chosen >= 0) {
    std::cout << fmt::format("\n* {} GPUs: {} at the lowest {}.\n", rows[chosen].gpus,
                             a.deadline_days ? fmt::format("meets the {}-day deadline", *a.deadline_days)
                                             : std::string("finishes"),
                             rows[chosen].budget->cost_usd ? "cost" : "GPU-hours");
  } else if (a.deadline_days) {
    std::cout << fmt::format("\nNo GPU count meets the {}-day deadline.\n", *a.deadline_days);
  }
}

nlohmann::json rows_json(const plan::PlanRequest& req, double tokens, const std::vector<Row>& rows,
                         int64_t chosen) {
  nlohmann::json out = nlohmann::json::array();
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    nlohmann::json j = {{"gpus", r.gpus}, {"chosen", static_cast<int64_t>(i) == chosen}};
    if (!r.best) {
      j["plan"] = nullptr;
      j["reason"] = r.note;
    } else {
      const auto& b = *r.budget;
      j["plan"] = {{"layout", r.best->layout.summary()}, {"partition", r.best->layout.partition},
                   {"step_time_s", r.best->step.step_time_s}, {"mfu", r.best->step.mfu}};
      j["tokens_per_s"] = r.best->step.tokens_per_s;
      j["days_ideal"] = b.days_ideal;
      j["days_to_train"] = b.days_to_train;
      j["gpu_hours"] = b.gpu_hours;
      j["cost"] = b.cost_usd ? nlohmann::json(*b.cost_usd) : nlohmann::json();
      j["checkpoint_interval_s"] = b.checkpoint_interval_s ? nlohmann::json(*b.checkpoint_interval_s) : nlohmann::json();
      j["goodput"] = b.goodput;
      j["expected_failures"] = b.expected_failures;
      j["checkpoint_write_s"] = r.best->checkpoint_write_s;
    }
    out.push_back(j);
  }
  return {{"model", req.model.name}, {"params", req.model.total_params()}, {"tokens", tokens},
          {"cluster", req.cluster.name}, {"gbs", req.gbs}, {"seq", req.seq}, {"rows", out}};
}

core::Status run_budget(const BudgetArgs& a) {
  plan::PlanRequest req;
  double tokens = 0;
  LOOM_RETURN_IF_ERROR(resolve_request(a, req, tokens));
  LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> counts, gpu_counts(a, req.cluster));
  std::vector<Row> rows;
  const bool tty = isatty(2);
  for (int64_t g : counts) {
    if (tty) std::cerr << fmt::format("\rplanning {} GPUs...   ", g) << std::flush;
    LOOM_ASSIGN_OR_RETURN(Row row, evaluate_gpu_count(a, req, tokens, g));
    rows.push_back(std::move(row));
  }
  if (tty) std::cerr << "\r" << std::string(40, ' ') << "\r";
  const int64_t chosen = pick(a, rows);
  if (a.json) {
    std::cout << rows_json(req, tokens, rows, chosen).dump(2) << "\n";
  } else {
    print_rows(a, req, tokens, rows, chosen);
  }
  return core::ok_status();
}

}  // namespace

CommandRunner register_budget_command(CLI::App& app) {
  auto a = std::make_shared<BudgetArgs>();
  CLI::App* cmd = app.add_subcommand(
      "budget", "GPUs, days and cost of a whole run, with failures and checkpoints");
  cmd->add_option("--model", a->model, "model preset, preset YAML or config.json");
  cmd->add_option("--cluster", a->cluster, "cluster profile name or YAML")->required();
  cmd->add_option("--tokens", a->tokens, "tokens to train: 300B, 1.4T, 1.4e12");
  cmd->add_option("--compute-budget", a->compute_budget,
                  "training FLOPs: size the model and tokens with Chinchilla's 20 tokens/param");
  cmd->add_option("--gpus", a->gpus_list, "GPU counts to compare, e.g. 256,512,1024 (default: "
                                          "powers of two from one node)");
  cmd->add_option("--gbs,--global-batch-size", a->gbs, "global batch (default ~4M tokens)");
  cmd->add_option("--seq,--seq-length", a->seq, "sequence length (default: the model's)");
  cmd->add_option("--framework", a->framework, "framework (see loom plan)")->capture_default_str();
  cmd->add_option("--price-per-gpu-hour", a->price, "USD per GPU-hour (default: the profile's)");
  cmd->add_option("--deadline-days", a->deadline_days, "pick the cheapest GPU count within this");
  cmd->add_option("--restart-s", a->restart_s, "time to restart after a failure (default 900 s)");
  cmd->add_option("--constraint", a->constraints, "layout constraints, as in loom plan");
  cmd->add_option("--framework-param", a->framework_params,
                  "override a trait of the framework, NAME=VALUE (e.g. gemm_efficiency_scale=0.9)");
  cmd->add_flag("--json", a->json, "print JSON");
  return [cmd, a]() { return cmd->parsed() ? run_budget(*a) : core::ok_status(); };
}

}  // namespace loom::cli
