// GuardedSteps: see guarded_steps.h.
#include "trainer/guarded_steps.h"

#include <fmt/format.h>

#include <limits>

namespace loom::train {

GuardedSteps::GuardedSteps(const TrainConfig& cfg)
    : enabled_(cfg.guard.enabled), nan_at_(cfg.debug_nan_grad_at), guard_(cfg.guard) {
  loss_spike_injection(cfg, &spike_steps_, &spike_factor_);
}

GuardedSteps::Judged GuardedSteps::judge(int64_t step, double* loss, double* grad_norm) {
  Judged j;
  if (spike_steps_.count(step) > 0 && injected_.insert(step).second) {
    *loss *= spike_factor_;
    *grad_norm *= spike_factor_;
    j.gradient_scale = spike_factor_;
  }
  if (nan_at_ == step && injected_.insert(-step).second)
    *grad_norm = std::numeric_limits<double>::quiet_NaN();
  j.verdict = enabled_ ? guard_.check(*loss, *grad_norm, &j.reason) : Verdict::kAccept;
  return j;
}

core::Status GuardedSteps::record(const Judged& judged, bool have_checkpoints,
                                  const std::function<core::Result<bool>(std::string*)>& load_latest,
                                  const int64_t* done, StepRecord* rec, TrainSummary* summary) {
  if (judged.verdict == Verdict::kAccept) return core::ok_status();
  const int64_t step = rec->step;
  rec->applied = false;
  ++summary->skipped;
  rec->event = fmt::format("update skipped: {}", judged.reason);
  if (judged.verdict != Verdict::kRollback) return core::ok_status();
  guard_.reset_consecutive();
  std::string origin;
  bool rolled = false;
  if (have_checkpoints) {
    LOOM_ASSIGN_OR_RETURN(rolled, load_latest(&origin));
  }
  if (rolled) {
    rec->rolled_back = true;
    ++summary->rollbacks;
    rec->event += fmt::format("; rolled back from iteration {} to {} ({}); the batches drawn "
                              "since are skipped",
                              step, *done, origin);
  } else {
    rec->event += "; no checkpoint to roll back to (--save)";
  }
  return core::ok_status();
}

}  // namespace loom::train
