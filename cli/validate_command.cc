// `loom validate --runs FILE [--metric step-time|memory]`: runs the simulator on every run of a
// validation file and compares with what the source measured: iteration time (MAPE, max error,
// Spearman and regret of the top-ranked layout per group) or memory (error where measured, and
// every run that trained must fit). Prints a table, Markdown or JSON.
#include <unistd.h>

#include <iostream>
#include <map>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/table.h"
#include "simulator/memory_validation.h"
#include "simulator/step_validation.h"
#include "cli/planner_validation.h"

namespace loom::cli {

namespace {

struct ValidateArgs {
  std::string runs;
  std::string metric = "step-time";
  bool json = false;
  bool markdown = false;
  std::vector<std::string> framework_params;  // "fsdp.attention_efficiency_scale=0.6"
};

// Parses --framework-param FRAMEWORK.TRAIT=VALUE into per-framework trait overrides.
core::Result<std::map<sim::Framework, sim::FrameworkTraits>> parse_framework_params(
    const std::vector<std::string>& params) {
  std::map<sim::Framework, sim::FrameworkTraits> out;
  for (const auto& p : params) {
    const size_t dot = p.find('.');
    if (dot == std::string::npos) {
      return core::error(core::ErrorCode::kInvalidArgument,
                         "--framework-param '{}': expected FRAMEWORK.TRAIT=VALUE, e.g. "
                         "fsdp.attention_efficiency_scale=0.6",
                         p);
    }
    LOOM_ASSIGN_OR_RETURN(sim::Framework fw, sim::parse_framework(p.substr(0, dot)));
    if (!out.count(fw)) out.emplace(fw, sim::framework_traits(fw));
    LOOM_RETURN_IF_ERROR(sim::apply_framework_param(out.at(fw), p.substr(dot + 1)));
  }
  return out;
}

using sim::MemoryValidation;

std::string opt(const std::optional<double>& v, const char* f) {
  return v ? fmt::format(fmt::runtime(f), *v) : "-";
}

std::string status_text(const MemoryValidation& r) {
  switch (r.status) {
    case MemoryValidation::Status::kSimulated: return "";
    case MemoryValidation::Status::kSkipped: return "skipped: " + r.reason;
    case MemoryValidation::Status::kRejected: return "rejected: " + r.reason;
  }
  return "";
}

void print_text(const std::vector<MemoryValidation>& results, const sim::MemoryValidationSummary& s,
                bool markdown) {
  Table t;
  for (const char* h : {"run", "framework", "layout", "peak GiB", "usable", "fits", "measured GiB",
                        "predicted GiB", "error %", "status"}) {
    const std::string name = h;
    t.add_column(h, name == "run" || name == "layout" || name == "status" || name == "framework"
                        ? Table::Align::kLeft
                        : Table::Align::kRight);
  }
  std::string md =
      "| run | framework | layout | peak GiB | fits | measured GiB | predicted GiB | error % |\n"
      "|---|---|---|---:|---|---:|---:|---:|\n";
  for (const auto& r : results) {
    const bool ok = r.status == MemoryValidation::Status::kSimulated;
    t.add_row({r.run->id, sim::to_string(r.run->framework), r.layout,
               ok ? fmt::format("{:.1f}", r.peak_gib) : "-",
               ok ? fmt::format("{:.1f}", r.capacity_gib) : "-", ok ? (r.fits ? "yes" : "NO") : "-",
               opt(r.run->measured_memory_gib, "{:.2f}"), opt(r.predicted_gib, "{:.2f}"),
               opt(r.error_pct, "{:+.1f}"), status_text(r)});
    if (ok && (r.error_pct || !r.fits)) {
      md += fmt::format("| {} | {} | {} | {:.1f} | {} | {} | {} | {} |\n", r.run->id,
                        sim::to_string(r.run->framework), r.layout, r.peak_gib,
                        r.fits ? "yes" : "**no**", opt(r.run->measured_memory_gib, "{:.2f}"),
                        opt(r.predicted_gib, "{:.2f}"), opt(r.error_pct, "{:+.1f}"));
    }
  }
  std::cout << (markdown ? md : t.render());
  std::cout << fmt::format(
      "\n{} runs: {} simulated, {} skipped (see status), {} rejected; {} predicted not to "
      "fit\n",
      s.total, s.simulated, s.skipped, s.rejected, s.not_fitting);
  if (s.with_memory > 0) {
    std::cout << fmt::format(
        "memory vs measured on {} runs: mean |error| {:.1f}%, mean error {:+.1f}%, max |error| "
        "{:.1f}% ({})\n",
        s.with_memory, s.mean_abs_error_pct, s.mean_error_pct, s.max_abs_error_pct, s.max_error_run);
  }
}

void print_json(const std::vector<MemoryValidation>& results, const sim::MemoryValidationSummary& s) {
  nlohmann::json runs = nlohmann::json::array();
  for (const auto& r : results) {
    nlohmann::json j = {{"id", r.run->id},
                        {"framework", sim::to_string(r.run->framework)},
                        {"status", r.status == MemoryValidation::Status::kSimulated ? "simulated"
                                   : r.status == MemoryValidation::Status::kSkipped ? "skipped"
                                                                                    : "rejected"},
                        {"assumptions", r.run->assumptions}};
    if (!r.reason.empty()) j["reason"] = r.reason;
    if (r.status == MemoryValidation::Status::kSimulated) {
      j["layout"] = r.layout;
      j["peak_gib"] = r.peak_gib;
      j["capacity_gib"] = r.capacity_gib;
      j["fits"] = r.fits;
    }
    if (r.run->measured_memory_gib) {
      j["measured_memory_gib"] = *r.run->measured_memory_gib;
      j["memory_semantics"] = r.run->memory_semantics;
    }
    if (r.predicted_gib) j["predicted_memory_gib"] = *r.predicted_gib;
    if (r.error_pct) j["error_pct"] = *r.error_pct;
    runs.push_back(j);
  }
  nlohmann::json out = {
      {"runs", runs},
      {"summary",
       {{"total", s.total}, {"simulated", s.simulated}, {"skipped", s.skipped},
        {"rejected", s.rejected}, {"not_fitting", s.not_fitting},
        {"with_measured_memory", s.with_memory}, {"mean_abs_error_pct", s.mean_abs_error_pct},
        {"mean_error_pct", s.mean_error_pct}, {"max_abs_error_pct", s.max_abs_error_pct},
        {"max_error_run", s.max_error_run}}}};
  std::cout << out.dump(2) << "\n";
}

using sim::StepValidation;

void print_step_text(const std::vector<StepValidation>& results,
                     const sim::StepValidationSummary& s, bool markdown) {
  Table t;
  for (const char* h : {"run", "framework", "layout", "measured s", "source", "predicted s",
                        "error %", "status"}) {
    const std::string name = h;
    t.add_column(h, name == "run" || name == "layout" || name == "status" ||
                            name == "framework" || name == "source"
                        ? Table::Align::kLeft
                        : Table::Align::kRight);
  }
  std::string md = "| run | framework | layout | measured s | predicted s | error % |\n"
                   "|---|---|---|---:|---:|---:|\n";
  for (const auto& r : results) {
    const bool ok = r.status == StepValidation::Status::kSimulated;
    const std::string status = ok ? ""
                               : (r.status == StepValidation::Status::kSkipped ? "skipped: "
                                                                               : "rejected: ") +
                                     r.reason;
    t.add_row({r.run->id, sim::to_string(r.run->framework), r.layout,
               r.measured_s > 0 ? fmt::format("{:.3f}", r.measured_s) : "-", r.measured_source,
               ok ? fmt::format("{:.3f}", r.predicted_s) : "-",
               ok ? fmt::format("{:+.1f}", r.error_pct) : "-", status});
    if (ok) {
      md += fmt::format("| {} | {} | {} | {:.3f} | {:.3f} | {:+.1f} |\n", r.run->id,
                        sim::to_string(r.run->framework), r.layout, r.measured_s, r.predicted_s,
                        r.error_pct);
    }
  }
  std::cout << (markdown ? md : t.render());
  std::cout << fmt::format("\n{} runs: {} simulated, {} skipped (see status), {} rejected\n",
                           s.total, s.simulated, s.skipped, s.rejected);
  std::cout << fmt::format("step time: MAPE {:.1f}%, mean error {:+.1f}%, max |error| {:.1f}% ({})\n",
                           s.mape_pct, s.mean_error_pct, s.max_abs_error_pct, s.max_error_run);
  for (const auto& [what, ranking] :
       {std::pair{"same model and GPU count", &s.by_model},
        std::pair{"same model, GPU count and global batch", &s.by_batch}}) {
    if (ranking->groups.empty()) continue;
    std::cout << fmt::format("ranking, {} groups of >= 3 runs with the {}: median Spearman {:.2f}, "
                             "mean regret of the top-ranked layout {:.1f}%\n",
                             ranking->groups.size(), what, ranking->median_spearman,
                             ranking->mean_regret_pct);
  }
}

void print_step_json(const std::vector<StepValidation>& results, const sim::StepValidationSummary& s) {
  nlohmann::json runs = nlohmann::json::array();
  for (const auto& r : results) {
    nlohmann::json j = {{"id", r.run->id}, {"framework", sim::to_string(r.run->framework)},
                        {"assumptions", r.run->assumptions}};
    j["status"] = r.status == StepValidation::Status::kSimulated ? "simulated"
                  : r.status == StepValidation::Status::kSkipped ? "skipped"
                                                                 : "rejected";
    if (!r.reason.empty()) j["reason"] = r.reason;
    if (r.measured_s > 0) {
      j["measured_s"] = r.measured_s;
      j["measured_source"] = r.measured_source;
    }
    if (r.status == StepValidation::Status::kSimulated) {
      j["layout"] = r.layout;
      j["predicted_s"] = r.predicted_s;
      j["error_pct"] = r.error_pct;
      j["group"] = r.batch_group_key;
    }
    runs.push_back(j);
  }
  auto ranking_json = [](const sim::StepRanking& ranking) {
    nlohmann::json groups = nlohmann::json::array();
    for (const auto& g : ranking.groups) {
      groups.push_back({{"group", g.key}, {"runs", g.runs}, {"spearman", g.spearman},
                        {"regret_pct", g.regret_pct}});
    }
    return nlohmann::json{{"groups", groups},
                          {"median_spearman", ranking.median_spearman},
                          {"mean_regret_pct", ranking.mean_regret_pct}};
  };
  std::cout << nlohmann::json{{"runs", runs},
                              {"ranking_by_model", ranking_json(s.by_model)},
                              {"ranking_by_batch", ranking_json(s.by_batch)},
                              {"summary",
                               {{"total", s.total}, {"simulated", s.simulated},
                                {"skipped", s.skipped}, {"rejected", s.rejected},
                                {"mape_pct", s.mape_pct}, {"mean_error_pct", s.mean_error_pct},
                                {"max_abs_error_pct", s.max_abs_error_pct},
                                {"max_error_run", s.max_error_run}}}}
                   .dump(2)
            << "\n";
}

}  // namespace

CommandRunner register_validate_command(CLI::App& app) {
  auto args = std::make_shared<ValidateArgs>();
  CLI::App* cmd = app.add_subcommand(
      "validate", "compare the model with published measurements (a validation YAML file)");
  cmd->add_option("--runs", args->runs,
                  "validation file (e.g. ../shared/validation/published_runs.yaml)")
      ->required();
  cmd->add_option("--metric", args->metric,
                  "what to validate: step-time (default), memory, or planner (regret of the "
                  "planner's choice among measured layouts)")
      ->check(CLI::IsMember({"memory", "step-time", "planner"}))
      ->capture_default_str();
  cmd->add_flag("--json", args->json, "print JSON");
  cmd->add_flag("--markdown", args->markdown, "print the per-run table as Markdown");
  cmd->add_option("--framework-param", args->framework_params,
                  "override a framework trait for step-time validation, FRAMEWORK.TRAIT=VALUE "
                  "(repeatable; e.g. fsdp.attention_efficiency_scale=0.6)");
  return [cmd, args]() -> core::Status {
    if (!cmd->parsed()) return core::ok_status();
    LOOM_ASSIGN_OR_RETURN(std::vector<sim::ValidationRun> runs,
                          sim::load_validation_runs(args->runs));
    const bool tty = isatty(2);
    auto progress = [tty](size_t i, size_t n, const std::string& id) {
      if (tty) std::cerr << fmt::format("\r[{}/{}] {:<60}", i + 1, n, id) << std::flush;
    };
    if (args->metric == "planner") return run_planner_validation(runs, args->json);
    if (args->metric == "step-time") {
      LOOM_ASSIGN_OR_RETURN(auto traits, parse_framework_params(args->framework_params));
      LOOM_ASSIGN_OR_RETURN(std::vector<StepValidation> steps,
                            sim::validate_step_time(runs, progress, traits));
      if (tty) std::cerr << "\r" << std::string(72, ' ') << "\r";
      const auto summary = sim::summarize(steps);
      if (args->json) {
        print_step_json(steps, summary);
      } else {
        print_step_text(steps, summary, args->markdown);
      }
      return core::ok_status();
    }
    LOOM_ASSIGN_OR_RETURN(std::vector<MemoryValidation> results, sim::validate_memory(runs, progress));
    if (tty) std::cerr << "\r" << std::string(72, ' ') << "\r";
    const auto summary = sim::summarize(results);
    if (args->json) {
      print_json(results, summary);
    } else {
      print_text(results, summary, args->markdown);
    }
    return core::ok_status();
  };
}

}  // namespace loom::cli
