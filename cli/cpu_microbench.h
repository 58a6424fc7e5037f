// Loom's own CPU microbenchmarks for `loom calibrate --measure` on a CPU profile (issue 7):
// every GEMM shape the simulator prices for a model and layout (simulator/block_ops.h: the
// blocks' forward and backward, the LM head), run through the CPU backend's matmul kernels in
// the orientation the trainer uses (forward x W^T, input gradient dy W, weight gradient dy^T x);
// the CPU flash attention forward and backward at the layout's shape; and an OpenMP copy of
// 256 MiB. Each time is the median of repeated runs after a warm-up. The result feeds
// sim::calibrate_compute like the GPU measurements do.
#pragma once

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "core/layout.h"
#include "core/model_spec.h"
#include "core/status.h"
#include "simulator/calibration.h"

namespace loom::cli {

// Every distinct GEMM the simulator prices for one block's forward and backward and the LM head
// (simulator/block_ops.h), in the trainer's orientation: 0 = x W^T (forward), 1 = dy W (input
// gradient, "dgrad"), 2 = dy^T x (weight gradient, "wgrad"); label = the simulator's op name.
// Shared with the GPU microbenchmarks (gpu_microbench.h).
struct GemmShape {
  int orientation = 0;
  int64_t m = 0, n = 0, k = 0;
  std::string label;
};
std::vector<GemmShape> simulator_gemm_shapes(const core::ModelSpec& model, const core::Layout& layout);

// layout: resolved (core::resolve_layout). progress: one line per shape, or nullptr. sync: when
// several copies measure at once (cpu_ranks.h), a barrier among them, called before every timed
// run so that the copies' kernels overlap as the ranks' do in training.
core::Result<sim::CalibrationMeasurements> measure_cpu(const core::ModelSpec& model,
                                                      const core::Layout& layout,
                                                      std::ostream* progress,
                                                      const std::function<void()>& sync = {});

}  // namespace loom::cli
