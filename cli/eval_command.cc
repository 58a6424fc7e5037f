// Placeholder registration of `loom eval` until its implementation lands (replaced by its owner).
#include "cli/commands.h"

namespace loom::cli {

CommandRunner register_eval_command(CLI::App& app) {
  CLI::App* sub = app.add_subcommand("eval", "(not built yet)");
  return [sub]() -> core::Status {
    if (!sub->parsed()) return core::ok_status();
    return core::Status(core::ErrorCode::kInternal, "loom eval is not built yet");
  };
}

}  // namespace loom::cli
