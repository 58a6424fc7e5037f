// `loom validate --metric planner`: for each group of measured runs with the same model, GPU
// count and global batch, the planner chooses among the measured layouts (with its own pipeline
// partition and memory check) and the regret is the measured time of its choice over the best
// measured time. The check of issue "Planner" against vTrain's single-node runs.
#pragma once

#include <vector>

#include "core/status.h"
#include "simulator/validation_runs.h"

namespace loom::cli {

core::Status run_planner_validation(const std::vector<sim::ValidationRun>& runs, bool json);

}  // namespace loom::cli
