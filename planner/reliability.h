// Whole-run arithmetic behind `loom budget`: how often to checkpoint, what failures cost, and
// what a run of N tokens takes in days, GPU-hours and dollars. Pure functions of a plan's
// throughput and the cluster profile's failure rate; tested against Daly's published examples
// and Young's interval in tests/planner/reliability_test.cc.
//
//   RunBudgetInput in{.tokens = 300e9, .tokens_per_s = 3.9e4, .gpus = 384,
//                     .gpu_failures_per_gpu_hour = 1.55e-5, .checkpoint_write_s = 40};
//   LOOM_ASSIGN_OR_RETURN(RunBudget b, compute_run_budget(in));  // b.days_to_train, b.goodput
#pragma once

#include <cstdint>
#include <optional>

#include "core/status.h"

namespace loom::plan {

// The failure model (Young 1974, Daly 2006): failures arrive as a Poisson process with mean
// time between failures M; each one kills the job, which restarts (taking R) from the last
// checkpoint; a checkpoint stalls training for delta. Symbols: delta = checkpoint_write_s,
// M = mtbf_s, R = restart_s, tau = interval_s (compute between two checkpoints, excluding
// delta), T_s = solve_s (compute time of the whole job without checkpoints or failures).
//
// The formula functions below are pure arithmetic: outside the stated domain they return NaN
// (like std::sqrt); compute_run_budget() validates user input and returns errors instead.
// M = +infinity (no failures) is allowed everywhere.

// Job MTBF from the cluster profile's per-GPU rate: M = 3600 / (rate x gpus) seconds, the
// job dying when any of its GPUs fails. +infinity for rate 0. Domain: rate >= 0, gpus >= 1.
double job_mtbf_s(double gpu_failures_per_gpu_hour, int64_t gpus);

// Young's first-order optimum (J. W. Young, "A first order approximation to the optimum
// checkpoint interval", CACM 17(9):530-531, 1974): tau = sqrt(2 delta M).
// Domain: delta >= 0, M > 0.
double young_interval_s(double checkpoint_write_s, double mtbf_s);

// Daly's higher-order optimum (J. T. Daly, "A higher order estimate of the optimum checkpoint
// interval for restart dumps", FGCS 22(3):303-312, 2006, eq. (37)):
//   tau = sqrt(2 delta M) [1 + (1/3) sqrt(delta/(2M)) + (1/9) (delta/(2M))] - delta, delta < 2M
//   tau = M,                                                                       delta >= 2M
// Domain: delta >= 0, M > 0.
double daly_interval_s(double checkpoint_write_s, double mtbf_s);

// Daly's expected wall-clock time of a job (Daly 2006, Sec. 3, the complete model's T_w(tau)):
//   T_w = M e^{R/M} (e^{(tau + delta)/M} - 1) T_s / tau
// (T_s / tau segments of tau + delta each; a failure loses the segment in progress and a failure
// during a restart restarts the restart). For M = +infinity it is the limit T_s (1 + delta/tau).
// Domain: T_s >= 0, tau > 0, delta >= 0, R >= 0, M > 0; tau = +infinity (never checkpoint) only
// with M = +infinity, giving T_s.
double daly_wall_time_s(double solve_s, double interval_s, double checkpoint_write_s,
                        double restart_s, double mtbf_s);

// Time from a failure until training runs again: job relaunch (rescheduling, process start,
// NCCL communicator setup) plus checkpoint load. An assumption of the right order, not a
// measurement: TrainMover (Lao et al., arXiv:2412.12636) recovers a 1,024-GPU job in ~10-20 s
// and reports that as up to ~70x less downtime than checkpoint-restart, i.e. a baseline of
// the order of 10 minutes. Pass a measured value when there is one.
inline constexpr double kDefaultRestartS = 15 * 60;

struct RunBudgetInput {
  double tokens = 0;        // to train; > 0
  double tokens_per_s = 0;  // the plan's failure-free throughput; > 0
  int64_t gpus = 0;         // >= 1
  // The profile's gpu_failures_per_gpu_hour; absent (or 0): no failures, no checkpoints needed.
  std::optional<double> gpu_failures_per_gpu_hour;
  double checkpoint_write_s = 0;  // delta: training stalls this long per checkpoint; >= 0,
                                  // > 0 when failures are modelled
  double restart_s = kDefaultRestartS;  // R, per failure; >= 0
  std::optional<double> price_usd_per_gpu_hour;  // absent: no cost
  // Overrides the Daly optimum (e.g. to price the interval a team actually used); > 0.
  std::optional<double> checkpoint_interval_s;
};

struct RunBudget {
  double ideal_s = 0;     // T_s = tokens / tokens_per_s: no checkpoints, no failures
  double days_ideal = 0;  // ideal_s in days
  std::optional<double> job_mtbf_s;             // M; absent without failures
  std::optional<double> checkpoint_interval_s;  // tau (Daly eq. (37) or the override);
                                                // absent when there is nothing to checkpoint for
  double checkpoints = 0;          // expected checkpoints written, T_s / tau
  double checkpoint_total_s = 0;   // time spent writing them, checkpoints x delta
  double expected_failures = 0;    // T_w / M (Poisson arrivals over the expected wall time)
  double restart_total_s = 0;      // time in restarts, failures x M (1 - e^{-R/M}) (a failure
                                   // can cut a restart short)
  double lost_work_s = 0;          // compute and checkpoint writes thrown away by failures
  double expected_s = 0;           // T_w = ideal + checkpoint_total + restart_total + lost_work
  double goodput = 1;              // ideal_s / expected_s
  double days_to_train = 0;        // expected_s in days
  double gpu_hours = 0;            // gpus x expected_s
  std::optional<double> cost_usd;  // gpu_hours x price; absent without a price
};

// Validates the input (each error names the field, the value and what is allowed) and returns
// the budget; kInfeasible when the expected time is unbounded (checkpoint or restart far longer
// than the job MTBF).
core::Result<RunBudget> compute_run_budget(const RunBudgetInput& input);

}  // namespace loom::plan
