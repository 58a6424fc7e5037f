// Checkpoint interval and run budget against published numbers: Daly 2006 (FGCS 22(3)) Figs. 3-5
// captions give tau_opt = 117 min, 57 min and 9.1 min for M = 24 h, 6 h, 15 min with delta = 5 min,
// R = 10 min, T_s = 500 h; Young 1974's sqrt(2 delta M); BLOOM-176B (~1 GPU failure a week on 384
// GPUs, HF blog "The Technology Behind BLOOM Training"; bigscience tr11 README "checkpoint saving
// ~40sec", "1 train iteration ~100sec", and SAVE_INTERVAL=100 in tr11-176B-ml.slurm). Daly's T_w
// values are plotted, not printed, in the paper: the ones below were evaluated independently from
// T_w = M e^{R/M}(e^{(tau+delta)/M}-1) T_s/tau in Python (float64, math.expm1), and eq. (37) is
// cross-checked against a numerical minimisation of T_w.
#include "planner/reliability.h"

#include <cmath>
#include <limits>

#include <gtest/gtest.h>

namespace loom::plan {
namespace {

constexpr double kMin = 60;
constexpr double kHour = 3600;
constexpr double kInf = std::numeric_limits<double>::infinity();

// Daly 2006 Figs. 3-5: delta = 5 min, R = 10 min, T_s = 500 h.
constexpr double kDalyDelta = 5 * kMin;
constexpr double kDalyRestart = 10 * kMin;
constexpr double kDalySolve = 500 * kHour;

// Minimises T_w over tau by golden-section search on log(tau): an independent check that eq. (37)
// lands on the optimum of the wall-time model.
double numerical_optimum_s(double delta, double restart, double mtbf) {
  auto wall = [&](double log_tau) {
    return daly_wall_time_s(kDalySolve, std::exp(log_tau), delta, restart, mtbf);
  };
  double a = std::log(1.0), b = std::log(100 * mtbf);
  const double g = (std::sqrt(5.0) - 1) / 2;
  for (int i = 0; i < 200; ++i) {
    const double c = b - g * (b - a), d = a + g * (b - a);
    if (wall(c) < wall(d)) {
      b = d;
    } else {
      a = c;
    }
  }
  return std::exp((a + b) / 2);
}

TEST(Reliability, YoungIntervalFor5MinCheckpointAnd24HMtbfIs2Hours) {
  // sqrt(2 x 300 s x 86400 s) = sqrt(51,840,000) = 7200 s.
  EXPECT_DOUBLE_EQ(young_interval_s(300, 86400), 7200);
  EXPECT_DOUBLE_EQ(young_interval_s(0, 86400), 0);
  EXPECT_EQ(young_interval_s(300, kInf), kInf);
}

TEST(Reliability, DalyIntervalMatchesPublishedFigures3To5) {
  // Rounded in the captions: 117 min, 57 min (whole minutes) and 9.1 min (tenths).
  EXPECT_NEAR(daly_interval_s(kDalyDelta, 24 * kHour) / kMin, 117, 0.5);
  EXPECT_NEAR(daly_interval_s(kDalyDelta, 6 * kHour) / kMin, 57, 0.5);
  EXPECT_NEAR(daly_interval_s(kDalyDelta, 15 * kMin) / kMin, 9.1, 0.05);
}

TEST(Reliability, DalyIntervalIsMtbfWhenCheckpointTakesTwiceIt) {
  EXPECT_DOUBLE_EQ(daly_interval_s(2 * kHour, 1 * kHour), 1 * kHour);
  EXPECT_DOUBLE_EQ(daly_interval_s(5 * kHour, 1 * kHour), 1 * kHour);
  // Just below the branch point the series gives 2M (1 + 1/3 + 1/9) - 2M = 8M/9: eq. (37) is
  // discontinuous there, as published.
  EXPECT_NEAR(daly_interval_s(2 * kHour * (1 - 1e-12), kHour), 8.0 / 9 * kHour, 1e-6);
}

TEST(Reliability, DalyIntervalTendsToYoungMinusDeltaForCheapCheckpoints) {
  const double delta = 10, mtbf = 1e7;  // delta / M = 1e-6
  EXPECT_NEAR(daly_interval_s(delta, mtbf) + delta, young_interval_s(delta, mtbf),
              1e-3 * young_interval_s(delta, mtbf));
}

TEST(Reliability, DalyIntervalMinimisesDalyWallTime) {
  for (double mtbf : {24 * kHour, 6 * kHour, 15 * kMin}) {
    const double tau = daly_interval_s(kDalyDelta, mtbf);
    const double best = numerical_optimum_s(kDalyDelta, kDalyRestart, mtbf);
    const double wall = daly_wall_time_s(kDalySolve, tau, kDalyDelta, kDalyRestart, mtbf);
    const double wall_best = daly_wall_time_s(kDalySolve, best, kDalyDelta, kDalyRestart, mtbf);
    // Daly's Fig. 2: the series is within a few parts in 1e6 of the optimum's T_w here
    // (2.4e-6 at M = 15 min, where delta/M is largest).
    EXPECT_LE(wall, wall_best * (1 + 1e-5)) << "M = " << mtbf;
  }
}

TEST(Reliability, DalyWallTimeMatchesIndependentEvaluation) {
  // T_w(tau_opt) in hours for Figs. 3, 4, 5; Python float64 evaluation of the closed form.
  const struct {
    double mtbf_s, wall_h;
  } cases[] = {{24 * kHour, 547.8817824570361}, {6 * kHour, 610.2164068350066},
               {15 * kMin, 2504.1651180554018}};
  for (const auto& c : cases) {
    const double tau = daly_interval_s(kDalyDelta, c.mtbf_s);
    const double wall = daly_wall_time_s(kDalySolve, tau, kDalyDelta, kDalyRestart, c.mtbf_s);
    EXPECT_NEAR(wall / kHour, c.wall_h, 1e-9 * c.wall_h) << "M = " << c.mtbf_s;
  }
}

TEST(Reliability, DalyWallTimeLimits) {
  // No failures: only the checkpoint stalls remain.
  EXPECT_DOUBLE_EQ(daly_wall_time_s(1000, 100, 5, 60, kInf), 1050);
  EXPECT_DOUBLE_EQ(daly_wall_time_s(1000, kInf, 5, 60, kInf), 1000);
  // Rare failures: first order, each failure costs R plus half a segment,
  // T_w ~ T_s (tau+delta)/tau (1 + (R + (tau+delta)/2)/M); the error is O((L/M)^2).
  const double ts = 1e6, tau = 3600, delta = 60, r = 600, m = 1e8;
  const double first_order = ts * (tau + delta) / tau * (1 + (r + (tau + delta) / 2) / m);
  EXPECT_NEAR(daly_wall_time_s(ts, tau, delta, r, m), first_order, 1e-7 * first_order);
}

TEST(Reliability, FormulasReturnNaNOutsideTheirDomain) {
  EXPECT_TRUE(std::isnan(young_interval_s(-1, 100)));
  EXPECT_TRUE(std::isnan(young_interval_s(1, 0)));
  EXPECT_TRUE(std::isnan(daly_interval_s(1, -5)));
  EXPECT_TRUE(std::isnan(daly_wall_time_s(100, 0, 1, 1, 100)));
  EXPECT_TRUE(std::isnan(daly_wall_time_s(100, kInf, 1, 1, 100)));  // never checkpointing
  EXPECT_TRUE(std::isnan(job_mtbf_s(-1e-5, 8)));
  EXPECT_TRUE(std::isnan(job_mtbf_s(1e-5, 0)));
}

TEST(Reliability, JobMtbfOfOneFailurePerWeekOn384GpusIsOneWeek) {
  EXPECT_NEAR(job_mtbf_s(1.0 / (384 * 168), 384), 168 * kHour, 1e-6);
  EXPECT_EQ(job_mtbf_s(0, 384), kInf);
}

RunBudgetInput bloom_input() {
  RunBudgetInput in;
  in.tokens = 366e9;  // BLOOM's tokens; the interval does not depend on them
  in.tokens_per_s = 2048 * 2048 / 105.0;  // GBS 2048 x 2048 tokens at ~105 s/iteration
  in.gpus = 384;
  in.gpu_failures_per_gpu_hour = 1.0 / (384 * 168);  // ~1 GPU failure a week on 384 GPUs
  in.checkpoint_write_s = 40;                        // tr11 README: "checkpoint saving ~40sec"
  return in;
}

TEST(RunBudget, BloomCheckpointIntervalIsAFewHours) {
  const RunBudget b = compute_run_budget(bloom_input()).value();
  ASSERT_TRUE(b.checkpoint_interval_s);
  // Daly: ~1.92 h; BigScience saved every 100 iterations of ~100 s, i.e. every ~2.8 h.
  EXPECT_GT(*b.checkpoint_interval_s, 1 * kHour);
  EXPECT_LT(*b.checkpoint_interval_s, 4 * kHour);
  EXPECT_NEAR(*b.job_mtbf_s, 168 * kHour, 1e-6);
  // The optimum is flat: BigScience's interval costs under 0.2% of goodput.
  RunBudgetInput theirs = bloom_input();
  theirs.checkpoint_interval_s = 100 * 100.0;
  const RunBudget t = compute_run_budget(theirs).value();
  EXPECT_LT(t.goodput, b.goodput);
  EXPECT_GT(t.goodput, b.goodput - 0.002);
  EXPECT_GT(b.goodput, 0.98);
}

TEST(RunBudget, PartsAddUpToTheExpectedTime) {
  RunBudgetInput in = bloom_input();
  in.price_usd_per_gpu_hour = 2.0;
  const RunBudget b = compute_run_budget(in).value();
  EXPECT_NEAR(b.ideal_s + b.checkpoint_total_s + b.restart_total_s + b.lost_work_s, b.expected_s,
              1e-9 * b.expected_s);
  EXPECT_NEAR(b.expected_failures, b.expected_s / *b.job_mtbf_s, 1e-12);
  // Each failure throws away about half a segment (tau + delta)/2 (exactly
  // M - L/(e^{L/M} - 1) = L/2 - L^2/(12 M) + ..., 0.2% less here) and costs ~R of restart.
  const double segment = *b.checkpoint_interval_s + in.checkpoint_write_s;
  EXPECT_NEAR(b.lost_work_s / b.expected_failures, segment / 2, 0.01 * segment / 2);
  EXPECT_NEAR(b.restart_total_s / b.expected_failures, in.restart_s, 0.01 * in.restart_s);
  EXPECT_DOUBLE_EQ(b.days_ideal, in.tokens / in.tokens_per_s / 86400);
  EXPECT_DOUBLE_EQ(b.days_to_train, b.expected_s / 86400);
  EXPECT_DOUBLE_EQ(b.goodput, b.ideal_s / b.expected_s);
  EXPECT_DOUBLE_EQ(b.gpu_hours, 384 * b.expected_s / 3600);
  ASSERT_TRUE(b.cost_usd);
  EXPECT_DOUBLE_EQ(*b.cost_usd, 2.0 * b.gpu_hours);
}

TEST(RunBudget, WithoutFailuresGoodputIsOneAndDaysAreIdeal) {
  RunBudgetInput in = bloom_input();
  in.gpu_failures_per_gpu_hour.reset();
  const RunBudget b = compute_run_budget(in).value();
  EXPECT_DOUBLE_EQ(b.goodput, 1);
  EXPECT_DOUBLE_EQ(b.days_to_train, b.days_ideal);
  EXPECT_FALSE(b.job_mtbf_s);
  EXPECT_FALSE(b.checkpoint_interval_s);
  EXPECT_FALSE(b.cost_usd);  // no price given
  EXPECT_EQ(b.expected_failures, 0);
  EXPECT_EQ(b.lost_work_s, 0);
  EXPECT_EQ(b.restart_total_s, 0);
  // A zero rate means the same as an absent one.
  in.gpu_failures_per_gpu_hour = 0;
  EXPECT_DOUBLE_EQ(compute_run_budget(in).value().goodput, 1);
}

TEST(RunBudget, WithoutFailuresAnImposedIntervalCostsOnlyTheWrites) {
  RunBudgetInput in = bloom_input();
  in.gpu_failures_per_gpu_hour.reset();
  in.checkpoint_interval_s = 3600;
  const RunBudget b = compute_run_budget(in).value();
  EXPECT_NEAR(b.expected_s, b.ideal_s * (1 + 40.0 / 3600), 1e-9 * b.expected_s);
  EXPECT_NEAR(b.checkpoint_total_s, b.ideal_s / 3600 * 40, 1e-9 * b.checkpoint_total_s);
  EXPECT_NEAR(b.lost_work_s, 0, 1e-6 * b.expected_s);
}

void expect_invalid(const RunBudgetInput& in, const std::string& field) {
  const auto r = compute_run_budget(in);
  ASSERT_FALSE(r.ok()) << field;
  EXPECT_EQ(r.status().code(), core::ErrorCode::kInvalidArgument) << r.status().message();
  EXPECT_NE(r.status().message().find(field), std::string::npos) << r.status().message();
}

TEST(RunBudget, RejectsBadInputNamingTheField) {
  RunBudgetInput in = bloom_input();
  in.tokens_per_s = 0;
  expect_invalid(in, "tokens_per_s");
  in = bloom_input();
  in.tokens = -1;
  expect_invalid(in, "tokens");
  in = bloom_input();
  in.gpus = 0;
  expect_invalid(in, "gpus");
  in = bloom_input();
  in.gpu_failures_per_gpu_hour = -1e-5;
  expect_invalid(in, "gpu_failures_per_gpu_hour");
  in = bloom_input();
  in.checkpoint_write_s = -1;
  expect_invalid(in, "checkpoint_write_s");
  in = bloom_input();
  in.checkpoint_write_s = 0;  // free checkpoints: no optimum to report
  expect_invalid(in, "checkpoint_write_s");
  in = bloom_input();
  in.restart_s = std::nan("");
  expect_invalid(in, "restart_s");
  in = bloom_input();
  in.price_usd_per_gpu_hour = -2;
  expect_invalid(in, "price_usd_per_gpu_hour");
  in = bloom_input();
  in.checkpoint_interval_s = 0;
  expect_invalid(in, "checkpoint_interval_s");
}

TEST(RunBudget, UnboundedTimeIsInfeasible) {
  RunBudgetInput in = bloom_input();
  in.gpu_failures_per_gpu_hour = 1.0;  // every GPU fails hourly: M = 9.4 s on 384 GPUs
  in.checkpoint_write_s = 7200;        // (tau + delta)/M = 769: e^769 overflows a double
  const auto r = compute_run_budget(in);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), core::ErrorCode::kInfeasible);
}

}  // namespace
}  // namespace loom::plan
