// Registration of the loom subcommands. Each returns the Status of its run; main() turns a
// failed Status into a message on stderr and a non-zero exit code.
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

#include "core/status.h"

namespace loom::cli {

using CommandRunner = std::function<core::Status()>;

CommandRunner register_memory_command(CLI::App& app);
CommandRunner register_models_command(CLI::App& app);
CommandRunner register_clusters_command(CLI::App& app);
CommandRunner register_validate_command(CLI::App& app);
CommandRunner register_devices_command(CLI::App& app);
CommandRunner register_simulate_command(CLI::App& app);
CommandRunner register_export_command(CLI::App& app);
CommandRunner register_plan_command(CLI::App& app);
CommandRunner register_budget_command(CLI::App& app);
CommandRunner register_data_command(CLI::App& app);       // loom data prepare | synth | info
CommandRunner register_export_hf_command(CLI::App& app);  // loom export-hf
CommandRunner register_train_command(CLI::App& app);      // loom train
CommandRunner register_eval_command(CLI::App& app);       // loom eval
CommandRunner register_calibrate_command(CLI::App& app);  // loom calibrate
CommandRunner register_run_command(CLI::App& app);        // loom run

}  // namespace loom::cli
