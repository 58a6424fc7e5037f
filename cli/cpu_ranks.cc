// One CPU as several devices for calibration: see cpu_ranks.h.
#include "cli/cpu_ranks.h"

#include <omp.h>

#include <algorithm>
#include <barrier>
#include <functional>
#include <chrono>
#include <cmath>
#include <numeric>
#include <thread>

#include <fmt/format.h>

#include "cli/cpu_microbench.h"
#include "comm/thread_comm.h"
#include "simulator/collectives.h"

namespace loom::cli {

using core::ErrorCode;

core::Result<int> threads_per_rank(int ranks) {
  const int cores = omp_get_num_procs();
  if (ranks < 1 || ranks > cores || cores % ranks != 0) {
    return core::error(ErrorCode::kInvalidArgument,
                       "--ranks {}: this machine has {} cores; allowed: a divisor of {} (each "
                       "rank gets the same number of cores)",
                       ranks, cores, cores);
  }
  return cores / ranks;
}

core::Status split_profile(core::ClusterProfile& p, int ranks) {
  if (p.device.kind != "cpu") {
    return core::error(ErrorCode::kInvalidArgument,
                       "--ranks {}: cluster '{}' is a {} profile; only a CPU profile splits into "
                       "ranks",
                       ranks, p.name, p.device.kind);
  }
  if (p.gpus_per_node != 1) {
    return core::error(ErrorCode::kInvalidArgument,
                       "--ranks {}: cluster '{}' already has {} devices per node (split the "
                       "whole-machine profile, gpus_per_node 1)",
                       ranks, p.name, p.gpus_per_node);
  }
  if (p.compute.sm_count % ranks != 0) {
    return core::error(ErrorCode::kInvalidArgument,
                       "--ranks {}: the profile's {} cores (compute.sm_count) do not divide into "
                       "{} ranks",
                       ranks, p.compute.sm_count, ranks);
  }
  const double r = ranks;
  p.gpus_per_node = ranks;
  p.device.memory_gib /= r;
  p.memory.headroom_gib /= r;
  p.device.peak_tflops_bf16 /= r;
  p.device.peak_tflops_fp16 /= r;
  p.device.peak_tflops_fp32 /= r;
  p.device.memory_bandwidth_gb_s /= r;
  p.compute.sm_count /= ranks;
  p.intra_node.collective_efficiency = 1.0;
  return core::ok_status();
}

core::Result<sim::CalibrationMeasurements> measure_cpu_ranks(const core::ModelSpec& model,
                                                            const core::Layout& layout, int ranks,
                                                            std::ostream* progress) {
  LOOM_ASSIGN_OR_RETURN(const int threads, threads_per_rank(ranks));
  std::vector<core::Result<sim::CalibrationMeasurements>> out(
      ranks, core::error(ErrorCode::kInternal, "not measured"));
  std::barrier<> together(ranks);
  const std::function<void()> sync = [&together] { together.arrive_and_wait(); };
  std::vector<std::thread> copies;
  for (int r = 0; r < ranks; ++r) {
    copies.emplace_back([&, r] {
      omp_set_num_threads(threads);
      out[r] = measure_cpu(model, layout, r == 0 ? progress : nullptr, sync);
    });
  }
  for (auto& c : copies) c.join();
  for (auto& m : out) LOOM_RETURN_IF_ERROR(m.status());
  sim::CalibrationMeasurements first = std::move(out[0]).value();
  first.source = fmt::format("{} (one of {} copies running at once, one per rank)", first.source, ranks);
  return first;
}

core::Result<std::vector<CollectiveTiming>> measure_thread_all_reduce(int ranks,
                                                                      const std::vector<double>& sizes) {
  auto world = comm::make_thread_world(ranks);
  std::vector<CollectiveTiming> out;
  for (const double bytes : sizes) {
    const auto count = static_cast<int64_t>(bytes / sizeof(float));
    constexpr int kRepeats = 9;
    std::vector<std::vector<double>> seconds(ranks);
    std::vector<core::Status> status(ranks, core::ok_status());
    std::vector<std::thread> threads;
    for (int r = 0; r < ranks; ++r) {
      threads.emplace_back([&, r] {
        std::vector<float> data(static_cast<size_t>(count), 1.f);
        for (int i = 0; i <= kRepeats && status[r].ok(); ++i) {  // the first is a warm-up
          status[r] = world[r]->barrier();
          const auto t0 = std::chrono::steady_clock::now();
          if (status[r].ok()) status[r] = world[r]->all_reduce(data.data(), count, comm::ReduceOp::kSum);
          const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          if (i > 0) seconds[r].push_back(s);
        }
      });
    }
    for (auto& t : threads) t.join();
    for (const auto& s : status) LOOM_RETURN_IF_ERROR(s);
    // A collective ends when its slowest rank is done: the largest of the ranks' medians.
    double worst = 0;
    for (auto& s : seconds) {
      std::sort(s.begin(), s.end());
      worst = std::max(worst, s[s.size() / 2]);
    }
    out.push_back({static_cast<double>(count) * sizeof(float), worst});
  }
  return out;
}

core::Result<IntraNodeFit> fit_intra_node(const core::ClusterProfile& profile, int ranks,
                                          const std::vector<CollectiveTiming>& timings) {
  if (!(profile.intra_node.latency_us > 0) || !(profile.intra_node.bandwidth_gb_s > 0)) {
    return core::error(ErrorCode::kInvalidArgument,
                       "cluster '{}': intra_node latency_us and bandwidth_gb_s must be positive "
                       "to be calibrated",
                       profile.name);
  }
  LOOM_ASSIGN_OR_RETURN(sim::CollectiveModel model, sim::CollectiveModel::create(profile, ranks));
  std::vector<int64_t> group(ranks);
  std::iota(group.begin(), group.end(), 0);
  // Least squares of sum_i ((a_i x + b_i y) / t_i - 1)^2: a_i, b_i the model's latency and
  // bandwidth terms at the profile's values, x and y the factors on the latency and on the
  // inverse bandwidth.
  double aa = 0, ab = 0, bb = 0, a1 = 0, b1 = 0;
  std::vector<std::pair<double, double>> terms;
  for (const CollectiveTiming& t : timings) {
    LOOM_ASSIGN_OR_RETURN(const sim::CommCost c,
                          model.estimate(sim::CollectiveKind::kAllReduce, group, t.bytes));
    const double a = c.latency_s / t.seconds, b = c.bandwidth_s / t.seconds;
    terms.emplace_back(c.latency_s, c.bandwidth_s);
    aa += a * a, ab += a * b, bb += b * b, a1 += a, b1 += b;
  }
  const double det = aa * bb - ab * ab;
  double x = (a1 * bb - b1 * ab) / det, y = (aa * b1 - ab * a1) / det;
  if (!(det > 0) || !(x > 0) || !(y > 0)) {  // degenerate or negative: fit one term at a time
    x = std::max(a1 / aa, 1e-3);
    y = std::max((b1 - x * ab) / bb, 1e-3);
  }
  IntraNodeFit fit;
  fit.latency_us = profile.intra_node.latency_us * x;
  fit.bandwidth_gb_s = profile.intra_node.bandwidth_gb_s / y;
  for (size_t i = 0; i < timings.size(); ++i) {
    const double predicted = terms[i].first * x + terms[i].second * y;
    fit.max_error = std::max(fit.max_error, std::abs(predicted / timings[i].seconds - 1.0));
  }
  return fit;
}

}  // namespace loom::cli
