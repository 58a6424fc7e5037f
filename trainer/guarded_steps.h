// The spike guard as the multi-rank loop (parallel_run.cc) and the GPU loop (cuda_run.cc) use
// it, between an iteration's gradients and its update: the debug injections of TrainConfig
// applied to the loss and the gradient norm (a loss spike scales the loss, the norm and the
// applied gradients; a NaN gradient makes the norm NaN, which the guard never applies), the
// verdict, and what the verdict does to the iteration's record (skipped, rolled back to the last
// checkpoint). Every rank judges the same loss and norm, so all skip, apply or roll back
// together. The single-process CPU trainer (trainer.cc) does the same inline. Tested through
// both loops (tests/trainer/parallel_run_test.cc, tests/trainer/cuda_run_gpu_test.cc).
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <string>

#include "core/status.h"
#include "trainer/spike_guard.h"
#include "trainer/train_config.h"
#include "trainer/trainer.h"

namespace loom::train {

class GuardedSteps {
 public:
  explicit GuardedSteps(const TrainConfig& cfg);

  struct Judged {
    Verdict verdict = Verdict::kAccept;
    double gradient_scale = 1.0;  // the factor on the applied gradients (an injected spike)
    std::string reason;           // why the update is not applied
  };
  // Applies the injections for `step` to *loss and *grad_norm, then judges them (always
  // kAccept with --no-spike-guard).
  Judged judge(int64_t step, double* loss, double* grad_norm);

  // Marks `rec` and counts into `summary` after the verdict: a skip's reason; for kRollback,
  // load_latest(&origin) restores the last checkpoint (false: there is none) and *done is then
  // the iteration it returned to.
  core::Status record(const Judged& judged, bool have_checkpoints,
                      const std::function<core::Result<bool>(std::string* origin)>& load_latest,
                      const int64_t* done, StepRecord* rec, TrainSummary* summary);

  SpikeGuard& guard() { return guard_; }

 private:
  bool enabled_;
  int64_t nan_at_;
  SpikeGuard guard_;
  std::set<int64_t> spike_steps_, injected_;
  double spike_factor_ = 1.0;
};

}  // namespace loom::train
