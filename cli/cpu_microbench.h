// Loom's own CPU microbenchmarks for `loom calibrate --measure` on a CPU profile (issue 7):
// every GEMM shape the simulator prices for a model and layout (simulator/block_ops.h: the
// blocks' forward and backward, the LM head), run through the CPU backend's matmul kernels in
// the orientation the trainer uses (forward x W^T, input gradient dy W, weight gradient dy^T x);
// the CPU flash attention forward and backward at the layout's shape; and an OpenMP copy of
// 256 MiB. Each time is the median of repeated runs after a warm-up. The result feeds
// sim::calibrate_compute like the GPU measurements do.
#pragma once

#include <functional>
#include <ostream>

#include "core/layout.h"
#include "core/model_spec.h"
#include "core/status.h"
#include "simulator/calibration.h"

namespace loom::cli {

// layout: resolved (core::resolve_layout). progress: one line per shape, or nullptr. sync: when
// several copies measure at once (cpu_ranks.h), a barrier among them, called before every timed
// run so that the copies' kernels overlap as the ranks' do in training.
core::Result<sim::CalibrationMeasurements> measure_cpu(const core::ModelSpec& model,
                                                      const core::Layout& layout,
                                                      std::ostream* progress,
                                                      const std::function<void()>& sync = {});

}  // namespace loom::cli
