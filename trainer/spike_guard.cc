// SpikeGuard: see spike_guard.h.
#include "trainer/spike_guard.h"

#include <cmath>

#include <fmt/format.h>

namespace loom::train {

const char* to_string(Verdict v) {
  switch (v) {
    case Verdict::kAccept: return "accept";
    case Verdict::kSkipNonFinite: return "skip (non-finite)";
    case Verdict::kSkipSpike: return "skip (spike)";
    case Verdict::kRollback: return "rollback";
  }
  return "?";
}

double SpikeGuard::z_score(const std::deque<double>& xs, double x) {
  double mean = 0.0;
  for (double v : xs) mean += v;
  mean /= static_cast<double>(xs.size());
  double var = 0.0;
  for (double v : xs) var += (v - mean) * (v - mean);
  var /= static_cast<double>(xs.size() - 1);
  // A floor on the spread (1% of the mean) so that a perfectly flat history does not turn
  // ordinary noise into an infinite z-score.
  const double sd = std::max(std::sqrt(var), 0.01 * std::abs(mean));
  return sd > 0.0 ? (x - mean) / sd : 0.0;
}

Verdict SpikeGuard::check(double loss, double grad_norm, std::string* reason) {
  Verdict v = Verdict::kAccept;
  if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
    v = Verdict::kSkipNonFinite;
    *reason = fmt::format("non-finite {} (loss {}, grad norm {})",
                          std::isfinite(loss) ? "gradient" : "loss", loss, grad_norm);
  } else if (cfg_.enabled && static_cast<int64_t>(losses_.size()) >= cfg_.min_history) {
    const double zl = z_score(losses_, loss);
    const double zg = z_score(grad_norms_, grad_norm);
    if (zl > cfg_.z_threshold || zg > cfg_.z_threshold) {
      v = Verdict::kSkipSpike;
      *reason = fmt::format(
          "spike: loss {:.4f} (z {:.1f}), grad norm {:.4f} (z {:.1f}); threshold z {:.1f} over "
          "the last {} accepted iterations",
          loss, zl, grad_norm, zg, cfg_.z_threshold, losses_.size());
    }
  }
  if (v == Verdict::kAccept) {
    consecutive_skips_ = 0;
    losses_.push_back(loss);
    grad_norms_.push_back(grad_norm);
    while (static_cast<int64_t>(losses_.size()) > cfg_.window) {
      losses_.pop_front();
      grad_norms_.pop_front();
    }
    return v;
  }
  ++consecutive_skips_;
  if (cfg_.rollback_after > 0 && consecutive_skips_ >= cfg_.rollback_after) {
    *reason += fmt::format("; {} consecutive skipped iterations", consecutive_skips_);
    return Verdict::kRollback;
  }
  return v;
}

nlohmann::json SpikeGuard::state() const {
  return {{"losses", std::vector<double>(losses_.begin(), losses_.end())},
          {"grad_norms", std::vector<double>(grad_norms_.begin(), grad_norms_.end())},
          {"consecutive_skips", consecutive_skips_}};
}

void SpikeGuard::restore(const nlohmann::json& state) {
  const auto l = state.at("losses").get<std::vector<double>>();
  const auto g = state.at("grad_norms").get<std::vector<double>>();
  losses_.assign(l.begin(), l.end());
  grad_norms_.assign(g.begin(), g.end());
  consecutive_skips_ = state.at("consecutive_skips").get<int64_t>();
}

}  // namespace loom::train
