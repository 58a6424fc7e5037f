// SpikeGuard: decides whether an iteration's update is applied. NaN/Inf in the loss or the
// gradient norm, or a loss or gradient-norm spike (one-sided z-score against a sliding window
// of accepted iterations) skips the update; `rollback_after` consecutive skips ask the trainer
// to roll back to the last checkpoint and skip the batches seen since (PaLM, Chowdhery et al.
// 2022, Sec. 5.1: "restarted ... and skipped roughly 200-500 data batches"). BLOOM and OPT
// babysat their runs for exactly these events. Tested in tests/trainer/spike_guard_test.cc.
#pragma once

#include <cstdint>
#include <deque>
#include <string>

#include <nlohmann/json.hpp>

namespace loom::train {

struct SpikeGuardConfig {
  bool enabled = true;
  int64_t window = 100;        // accepted iterations the statistics are taken over
  int64_t min_history = 20;    // no spike test before this many accepted iterations
  double z_threshold = 6.0;    // skip when (x - mean) / std exceeds this, for loss or grad norm
  int64_t rollback_after = 3;  // consecutive skipped iterations that trigger a rollback
};

enum class Verdict { kAccept, kSkipNonFinite, kSkipSpike, kRollback };
const char* to_string(Verdict v);

class SpikeGuard {
 public:
  explicit SpikeGuard(const SpikeGuardConfig& cfg) : cfg_(cfg) {}

  // Judges one iteration; `reason` says why when it is not accepted. Accepted values join the
  // window. kRollback is returned instead of a skip once `rollback_after` consecutive
  // iterations were skipped.
  Verdict check(double loss, double grad_norm, std::string* reason);
  // After a rollback: the consecutive-skip count starts again.
  void reset_consecutive() { consecutive_skips_ = 0; }

  nlohmann::json state() const;
  void restore(const nlohmann::json& state);

 private:
  static double z_score(const std::deque<double>& xs, double x);

  SpikeGuardConfig cfg_;
  std::deque<double> losses_, grad_norms_;
  int64_t consecutive_skips_ = 0;
};

}  // namespace loom::train
