// Placeholder registration of `loom train` until its implementation lands (replaced by its owner).
#include "cli/commands.h"

namespace loom::cli {

CommandRunner register_train_command(CLI::App& app) {
  CLI::App* sub = app.add_subcommand("train", "(not built yet)");
  return [sub]() -> core::Status {
    if (!sub->parsed()) return core::ok_status();
    return core::Status(core::ErrorCode::kInternal, "loom train is not built yet");
  };
}

}  // namespace loom::cli
