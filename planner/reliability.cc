// Checkpoint interval, expected wall time and run budget: see reliability.h for the model and
// its sources. expm1 keeps T_w exact when M is many orders of magnitude above tau + delta
// (a small job on a reliable cluster), where e^{x} - 1 would cancel to zero.
#include "planner/reliability.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

namespace loom::plan {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kSecondsPerHour = 3600;
constexpr double kSecondsPerDay = 86400;

core::Status invalid(const char* field, double value, const char* allowed) {
  return core::error(core::ErrorCode::kInvalidArgument, "{}: {} is not allowed (must be {})",
                     field, value, allowed);
}

bool positive(double x) { return std::isfinite(x) && x > 0; }
bool non_negative(double x) { return std::isfinite(x) && x >= 0; }

core::Status validate(const RunBudgetInput& in) {
  if (!positive(in.tokens)) return invalid("tokens", in.tokens, "a finite number > 0");
  if (!positive(in.tokens_per_s)) {
    return invalid("tokens_per_s", in.tokens_per_s, "a finite number > 0");
  }
  if (in.gpus < 1) {
    return core::error(core::ErrorCode::kInvalidArgument, "gpus: {} is not allowed (must be >= 1)",
                       in.gpus);
  }
  const double rate = in.gpu_failures_per_gpu_hour.value_or(0);
  if (!non_negative(rate)) {
    return invalid("gpu_failures_per_gpu_hour", rate, "a finite number >= 0, or absent");
  }
  if (!non_negative(in.checkpoint_write_s)) {
    return invalid("checkpoint_write_s", in.checkpoint_write_s, "a finite number >= 0");
  }
  if (rate > 0 && in.checkpoint_write_s == 0 && !in.checkpoint_interval_s) {
    return invalid("checkpoint_write_s", 0,
                   "> 0 when failures are modelled: a free checkpoint has no optimal interval");
  }
  if (!non_negative(in.restart_s)) {
    return invalid("restart_s", in.restart_s, "a finite number >= 0");
  }
  if (in.price_usd_per_gpu_hour && !non_negative(*in.price_usd_per_gpu_hour)) {
    return invalid("price_usd_per_gpu_hour", *in.price_usd_per_gpu_hour,
                   "a finite number >= 0, or absent");
  }
  if (in.checkpoint_interval_s && !positive(*in.checkpoint_interval_s)) {
    return invalid("checkpoint_interval_s", *in.checkpoint_interval_s,
                   "a finite number > 0, or absent for Daly's optimum");
  }
  return core::ok_status();
}

// Splits the expected wall time into its parts (RunBudget's fields). With failures, the
// expected number in the expected wall time is T_w / M (Poisson arrivals, Wald's identity);
// each starts a restart whose expected length is E[min(Exp(M), R)] = M (1 - e^{-R/M}).
void fill_breakdown(const RunBudgetInput& in, double mtbf_s, RunBudget& b) {
  if (b.checkpoint_interval_s) {
    b.checkpoints = b.ideal_s / *b.checkpoint_interval_s;
    b.checkpoint_total_s = b.checkpoints * in.checkpoint_write_s;
  }
  if (std::isfinite(mtbf_s)) {
    b.expected_failures = b.expected_s / mtbf_s;
    b.restart_total_s = b.expected_failures * mtbf_s * -std::expm1(-in.restart_s / mtbf_s);
  }
  // What is left is work redone after failures; clamp the rounding residue of the no-failure
  // case, where the four parts cancel exactly in exact arithmetic.
  b.lost_work_s =
      std::max(0.0, b.expected_s - b.ideal_s - b.checkpoint_total_s - b.restart_total_s);
}

}  // namespace

double job_mtbf_s(double gpu_failures_per_gpu_hour, int64_t gpus) {
  if (!(gpu_failures_per_gpu_hour >= 0) || gpus < 1) return kNaN;
  if (gpu_failures_per_gpu_hour == 0) return kInf;
  return kSecondsPerHour / (gpu_failures_per_gpu_hour * static_cast<double>(gpus));
}

double young_interval_s(double checkpoint_write_s, double mtbf_s) {
  if (!(checkpoint_write_s >= 0) || !(mtbf_s > 0)) return kNaN;
  return std::sqrt(2 * checkpoint_write_s * mtbf_s);
}

double daly_interval_s(double checkpoint_write_s, double mtbf_s) {
  const double delta = checkpoint_write_s;
  const double m = mtbf_s;
  if (!(delta >= 0) || !(m > 0) || std::isinf(delta)) return kNaN;
  if (delta >= 2 * m) return m;  // Daly 2006 eq. (37), second branch
  const double x = delta / (2 * m);
  return std::sqrt(2 * delta * m) * (1 + std::sqrt(x) / 3 + x / 9) - delta;
}

double daly_wall_time_s(double solve_s, double interval_s, double checkpoint_write_s,
                        double restart_s, double mtbf_s) {
  const double ts = solve_s, tau = interval_s, delta = checkpoint_write_s, r = restart_s,
               m = mtbf_s;
  if (!(ts >= 0) || !(tau > 0) || !(delta >= 0) || !(r >= 0) || !(m > 0)) return kNaN;
  if (std::isinf(m)) {
    if (std::isinf(tau)) return ts;  // never checkpoint, never fail
    return ts * (tau + delta) / tau;
  }
  if (std::isinf(tau)) return kNaN;  // never checkpointing with failures: outside the model
  // Daly 2006, Sec. 3: T_w = M e^{R/M} (e^{(tau+delta)/M} - 1) T_s / tau.
  return m * std::exp(r / m) * std::expm1((tau + delta) / m) * ts / tau;
}

core::Result<RunBudget> compute_run_budget(const RunBudgetInput& in) {
  LOOM_RETURN_IF_ERROR(validate(in));
  RunBudget b;
  b.ideal_s = in.tokens / in.tokens_per_s;
  if (!std::isfinite(b.ideal_s)) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "tokens / tokens_per_s: {} / {} overflows; check the units", in.tokens,
                       in.tokens_per_s);
  }
  b.days_ideal = b.ideal_s / kSecondsPerDay;
  const double mtbf_s = job_mtbf_s(in.gpu_failures_per_gpu_hour.value_or(0), in.gpus);
  if (std::isfinite(mtbf_s)) b.job_mtbf_s = mtbf_s;
  if (in.checkpoint_interval_s) {
    b.checkpoint_interval_s = *in.checkpoint_interval_s;
  } else if (std::isfinite(mtbf_s)) {
    b.checkpoint_interval_s = daly_interval_s(in.checkpoint_write_s, mtbf_s);
  }
  b.expected_s = daly_wall_time_s(b.ideal_s, b.checkpoint_interval_s.value_or(kInf),
                                  in.checkpoint_write_s, in.restart_s, mtbf_s);
  if (!std::isfinite(b.expected_s)) {
    return core::error(core::ErrorCode::kInfeasible,
                       "expected training time is unbounded: checkpoint_write_s {} s and "
                       "restart_s {} s against a job MTBF of {:.4g} s ({} GPUs); the job would "
                       "almost never finish a checkpoint interval between failures",
                       in.checkpoint_write_s, in.restart_s, mtbf_s, in.gpus);
  }
  fill_breakdown(in, mtbf_s, b);
  b.goodput = b.ideal_s / b.expected_s;
  b.days_to_train = b.expected_s / kSecondsPerDay;
  b.gpu_hours = static_cast<double>(in.gpus) * b.expected_s / kSecondsPerHour;
  if (in.price_usd_per_gpu_hour) b.cost_usd = b.gpu_hours * *in.price_usd_per_gpu_hour;
  return b;
}

}  // namespace loom::plan
