// Placeholder registration of `loom export-hf` until its implementation lands (replaced by its owner).
#include "cli/commands.h"

namespace loom::cli {

CommandRunner register_export_hf_command(CLI::App& app) {
  CLI::App* sub = app.add_subcommand("export-hf", "(not built yet)");
  return [sub]() -> core::Status {
    if (!sub->parsed()) return core::ok_status();
    return core::Status(core::ErrorCode::kInternal, "loom export-hf is not built yet");
  };
}

}  // namespace loom::cli
