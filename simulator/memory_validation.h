// Runs the memory model on validation runs (see validation_runs.h): the predicted peak, whether
// it fits, and, where the source measured memory, the model's figure for the same quantity
// and its error. Used by `loom validate --metric memory` and tests/sim/memory_validation_test.cc.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "simulator/validation_runs.h"

namespace loom::sim {

struct MemoryValidation {
  const ValidationRun* run = nullptr;
  enum class Status { kSimulated, kSkipped, kRejected } status = Status::kSkipped;
  std::string reason;  // why skipped or rejected
  std::string layout;  // resolved layout summary
  double peak_gib = 0;
  double capacity_gib = 0;
  bool fits = false;
  std::optional<double> predicted_gib;  // the model's counterpart of the measured figure
  std::optional<double> error_pct;      // 100 * (predicted / measured - 1)
};

struct MemoryValidationSummary {
  int total = 0, simulated = 0, skipped = 0, rejected = 0, not_fitting = 0, with_memory = 0;
  double mean_abs_error_pct = 0, mean_error_pct = 0, max_abs_error_pct = 0;
  std::string max_error_run;
};

// `progress(i, n, id)` is called before each run (for a progress line); may be empty.
core::Result<std::vector<MemoryValidation>> validate_memory(
    const std::vector<ValidationRun>& runs,
    const std::function<void(size_t, size_t, const std::string&)>& progress = {});

MemoryValidationSummary summarize(const std::vector<MemoryValidation>& results);

}  // namespace loom::sim
