// Placeholder registration of `loom data` until its implementation lands (replaced by its owner).
#include "cli/commands.h"

namespace loom::cli {

CommandRunner register_data_command(CLI::App& app) {
  CLI::App* sub = app.add_subcommand("data", "(not built yet)");
  return [sub]() -> core::Status {
    if (!sub->parsed()) return core::ok_status();
    return core::Status(core::ErrorCode::kInternal, "loom data is not built yet");
  };
}

}  // namespace loom::cli
