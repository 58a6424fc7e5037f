// The single `loom` executable: parses the command line, runs the chosen subcommand and turns
// a failed Status into a message on stderr and a non-zero exit code (2 for bad input, 1 else).
#include <iostream>
#include <vector>

#include <CLI/CLI.hpp>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"Loom: plan, simulate and run large-language-model pretraining"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "loom 0.1.0");
  std::vector<loom::cli::CommandRunner> runners = {
      loom::cli::register_memory_command(app),
      loom::cli::register_simulate_command(app),
      loom::cli::register_export_command(app),
      loom::cli::register_plan_command(app),
      loom::cli::register_budget_command(app),
      loom::cli::register_data_command(app),
      loom::cli::register_train_command(app),
      loom::cli::register_eval_command(app),
      loom::cli::register_export_hf_command(app),
      loom::cli::register_models_command(app),
      loom::cli::register_clusters_command(app),
      loom::cli::register_validate_command(app),
      loom::cli::register_devices_command(app),
      loom::cli::register_calibrate_command(app),
      loom::cli::register_run_command(app),
  };
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  for (auto& run : runners) {
    loom::core::Status st;
    try {
      st = run();
    } catch (const std::exception& e) {
      st = loom::core::Status(loom::core::ErrorCode::kInternal, e.what());
    }
    if (!st.ok()) {
      std::cerr << "loom: error: " << st.message() << "\n";
      switch (st.code()) {
        case loom::core::ErrorCode::kInvalidArgument:
        case loom::core::ErrorCode::kNotFound:
        case loom::core::ErrorCode::kParse:
          return 2;
        default:
          return 1;
      }
    }
  }
  return 0;
}
