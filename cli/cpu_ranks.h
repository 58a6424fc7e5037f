// One CPU as several devices: what `loom calibrate --measure --ranks R` needs so that the
// simulator prices the R ranks of `loom run` (threads of one process, each on cores / R OpenMP
// threads, talking through the thread communicator) the way it prices R GPUs of a node:
// - split_profile: the profile's device becomes one R-th of the machine (peak FLOP/s, memory
//   bandwidth, memory, cores as "SMs"), R devices per node;
// - measure_cpu_ranks: Loom's CPU kernels timed by R copies at once, each on its share of the
//   cores (the ranks compete for caches and memory bandwidth as they do in training);
// - measure_thread_all_reduce / fit_intra_node: the thread backend's fp32 all-reduce among the
//   R ranks at several sizes, and the intra-node latency and bandwidth that make the
//   simulator's collective model (simulator/collectives.h) reproduce those times.
// Tested in tests/cli/cli_test.cc (CliCalibrate.*) and by `loom run` on the result.
#pragma once

#include <ostream>
#include <vector>

#include "core/cluster_profile.h"
#include "core/layout.h"
#include "core/model_spec.h"
#include "core/status.h"
#include "simulator/calibration.h"

namespace loom::cli {

// The machine's cores (OpenMP's processor count) divided among `ranks`; an error naming
// --ranks when they do not divide evenly or exceed the cores.
core::Result<int> threads_per_rank(int ranks);

// `profile` (a CPU profile describing the whole machine as one device) as `ranks` devices.
core::Status split_profile(core::ClusterProfile& profile, int ranks);

// measure_cpu (cpu_microbench.h) run by `ranks` threads at once, each with threads_per_rank
// OpenMP threads; the figures of the first copy (progress from it only).
core::Result<sim::CalibrationMeasurements> measure_cpu_ranks(const core::ModelSpec& model,
                                                            const core::Layout& layout, int ranks,
                                                            std::ostream* progress);

struct CollectiveTiming {
  double bytes = 0;    // the all-reduce buffer (nccl-tests' size)
  double seconds = 0;  // median over repeats
};
// The thread communicator's fp32 sum all-reduce among `ranks` ranks (one std::thread each) at
// each size in `sizes` (bytes).
core::Result<std::vector<CollectiveTiming>> measure_thread_all_reduce(int ranks,
                                                                      const std::vector<double>& sizes);

struct IntraNodeFit {
  double latency_us = 0;
  double bandwidth_gb_s = 0;
  double max_error = 0;  // worst |predicted / measured - 1| over the timings, after the fit
};
// The profile's intra_node latency and bandwidth (collective_efficiency 1) for which the
// collective model's all-reduce among the first `ranks` ranks matches `timings`: the model's
// time is latency-linear plus inverse-bandwidth-linear, so two scale factors are fitted by least
// squares in relative error. `profile`: already split (gpus_per_node = ranks).
core::Result<IntraNodeFit> fit_intra_node(const core::ClusterProfile& profile, int ranks,
                                          const std::vector<CollectiveTiming>& timings);

}  // namespace loom::cli
