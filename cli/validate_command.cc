// `loom validate --runs FILE --metric memory`: runs the memory model on every run of a
// validation file, compares with the measured memory where the source reports it, and checks
// that every run that trained is predicted to fit. Prints a table, Markdown or JSON.
#include <unistd.h>

#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/table.h"
#include "simulator/memory_validation.h"

namespace loom::cli {

namespace {

struct ValidateArgs {
  std::string runs;
  std::string metric = "memory";
  bool json = false;
  bool markdown = false;
};

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

}  // namespace

CommandRunner register_validate_command(CLI::App& app) {
  auto args = std::make_shared<ValidateArgs>();
  CLI::App* cmd = app.add_subcommand(
      "validate", "compare the model with published measurements (a validation YAML file)");
  cmd->add_option("--runs", args->runs,
                  "validation file (e.g. ../shared/validation/published_runs.yaml)")
      ->required();
  cmd->add_option("--metric", args->metric, "what to validate: memory")
      ->check(CLI::IsMember({"memory"}))
      ->capture_default_str();
  cmd->add_flag("--json", args->json, "print JSON");
  cmd->add_flag("--markdown", args->markdown, "print the per-run table as Markdown");
  return [cmd, args]() -> core::Status {
    if (!cmd->parsed()) return core::ok_status();
    LOOM_ASSIGN_OR_RETURN(std::vector<sim::ValidationRun> runs,
                          sim::load_validation_runs(args->runs));
    const bool tty = isatty(2);
    auto progress = [tty](size_t i, size_t n, const std::string& id) {
      if (tty) std::cerr << fmt::format("\r[{}/{}] {:<60}", i + 1, n, id) << std::flush;
    };
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
