// `loom export --plan plan.yaml --format megatron|deepspeed [--out FILE]`: a plan as the
// arguments of Megatron-LM's pretrain_gpt.py (one option per line, shell continuation style)
// or as a DeepSpeed config JSON (with the Megatron-DeepSpeed layout arguments inside). The
// exports themselves live in planner/export.h and are tested in tests/planner/export_test.cc.
#include <fstream>
#include <iostream>
#include <memory>

#include "cli/commands.h"
#include "planner/export.h"
#include "planner/plan.h"

namespace loom::cli {

namespace {

struct ExportArgs {
  std::string plan;
  std::string format;
  std::string out;
};

core::Status write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  if (!f) return core::error(core::ErrorCode::kIo, "--out: cannot write '{}'", path);
  f << text;
  f.flush();
  if (!f) return core::error(core::ErrorCode::kIo, "--out: writing '{}' failed", path);
  return core::ok_status();
}

// The predictions in a plan hold for the framework it was simulated with; say so when the
// export targets another one (the layout still runs, its memory and step time may differ).
void note_framework(const plan::Plan& p, sim::Framework target) {
  if (p.framework == target) return;
  std::cerr << "note: the plan's predictions are for framework '" << sim::to_string(p.framework)
            << "'; this export runs it under '" << sim::to_string(target) << "'\n";
}

core::Status run_export(const ExportArgs& args) {
  LOOM_ASSIGN_OR_RETURN(plan::Plan p, plan::load_plan(args.plan));
  std::string text;
  if (args.format == "megatron") {
    note_framework(p, sim::Framework::kMegatron);
    LOOM_ASSIGN_OR_RETURN(auto argv, plan::megatron_arguments(p));
    text = plan::shell_continuation_lines(argv) + "\n";
  } else {
    note_framework(p, sim::Framework::kMegatronDeepSpeed);
    const std::string config_path = args.out.empty() ? "ds_config.json" : args.out;
    LOOM_ASSIGN_OR_RETURN(nlohmann::json config, plan::deepspeed_config(p, config_path));
    text = config.dump(2) + "\n";
  }
  if (args.out.empty()) {
    std::cout << text;
    return core::ok_status();
  }
  LOOM_RETURN_IF_ERROR(write_text(args.out, text));
  std::cerr << "wrote " << args.out << "\n";
  return core::ok_status();
}

}  // namespace

CommandRunner register_export_command(CLI::App& app) {
  auto args = std::make_shared<ExportArgs>();
  CLI::App* cmd = app.add_subcommand(
      "export", "a plan as Megatron-LM arguments or a DeepSpeed config (+ Megatron-DeepSpeed "
                "arguments)");
  cmd->add_option("--plan", args->plan, "plan file (loom plan --out)")->required();
  cmd->add_option("--format", args->format,
                  "megatron: pretrain_gpt.py arguments; deepspeed: ds_config JSON whose "
                  "megatron_deepspeed_arguments hold the layout flags")
      ->required()
      ->check(CLI::IsMember({"megatron", "deepspeed"}));
  cmd->add_option("--out", args->out,
                  "write to FILE instead of stdout (deepspeed: also the --deepspeed_config path)");
  return [args, cmd]() -> core::Status {
    if (!cmd->parsed()) return core::ok_status();
    return run_export(*args);
  };
}

}  // namespace loom::cli
