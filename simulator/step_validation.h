// Step-time validation over published runs: each run's measured iteration time (as published,
// or converted from its TFLOP/s or MFU with the run's own FLOP convention), the simulator's
// prediction and the error; per group of runs with the same model and GPU count, the Spearman
// rank correlation of predicted vs measured time and the regret of the layout the simulator
// ranks first. Used by `loom validate --metric step-time` and tests/sim/step_validation_test.cc.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "simulator/validation_runs.h"

namespace loom::sim {

struct StepValidation {
  const ValidationRun* run = nullptr;
  enum class Status { kSimulated, kSkipped, kRejected } status = Status::kSkipped;
  std::string reason;
  std::string layout;
  double measured_s = 0;
  std::string measured_source;  // "iter_time_s", "tflops_per_gpu (Megatron eq. 3)", ...
  double predicted_s = 0;
  double error_pct = 0;         // 100 * (predicted / measured - 1)
  std::string group_key;        // model shape, GPU count and cluster
  std::string batch_group_key;  // ... and global batch (layouts competing for the same work)
};

struct StepGroupStats {
  std::string key;
  int runs = 0;
  double spearman = 0;
  double regret_pct = 0;  // measured time of the predicted-best layout / best measured - 1
};

struct StepRanking {
  std::vector<StepGroupStats> groups;  // groups with at least 3 runs
  double median_spearman = 0, mean_regret_pct = 0;
};

struct StepValidationSummary {
  int total = 0, simulated = 0, skipped = 0, rejected = 0;
  double mape_pct = 0, max_abs_error_pct = 0, mean_error_pct = 0;
  std::string max_error_run;
  StepRanking by_model;  // runs of the same model and GPU count (any global batch)
  StepRanking by_batch;  // ... with the same global batch: what a planner chooses between
};

// The measured iteration time of a run and where it came from; nullopt when the run
// publishes nothing convertible.
std::optional<std::pair<double, std::string>> measured_iteration_time(const ValidationRun& run,
                                                                      double peak_tflops);

// `traits` replaces framework_traits() for the frameworks it names (calibration studies).
core::Result<std::vector<StepValidation>> validate_step_time(
    const std::vector<ValidationRun>& runs,
    const std::function<void(size_t, size_t, const std::string&)>& progress = {},
    const std::map<Framework, FrameworkTraits>& traits = {});

StepValidationSummary summarize(const std::vector<StepValidation>& results);

}  // namespace loom::sim
