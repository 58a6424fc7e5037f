// Pipeline schedules simulated as a graph of per-stage, per-micro-batch tasks: each stage runs
// its forward (F) and backward (B) tasks in the order its schedule prescribes (GPipe, 1F1B,
// Megatron's interleaved 1F1B); a task starts when its stage is free and its input has arrived
// (the previous chunk's F, or the next chunk's B, plus the point-to-point transfer). The step's
// pipeline time is the makespan; the bubble is the idle share. Tested against the closed forms
// (m + p - 1)(f + b) for equal 1F1B stages and m(f + b) + (p - 1)(f + b)/v interleaved.
#pragma once

#include <string>
#include <vector>

#include "core/layout.h"

namespace loom::sim {

// Costs of one micro-batch on each model chunk (pp * vpp entries, chunk c runs on stage
// c % pp), and of the transfer that follows chunk c (activations forward, gradients back).
struct ChunkCosts {
  std::vector<double> forward_s;
  std::vector<double> backward_s;  // including recompute
  std::vector<double> p2p_s;       // transfer from chunk c to chunk c + 1 (and back)
};

struct PipelineTask {
  int64_t stage = 0;
  int64_t chunk = 0;
  int64_t microbatch = 0;
  bool forward = true;
  double start_s = 0;
  double end_s = 0;
};

struct PipelineResult {
  double makespan_s = 0;
  std::vector<double> busy_s;   // per stage
  double bubble_fraction = 0;   // 1 - mean(busy) / makespan
  // When the last backward of each stage ends (DP gradient reduction can start there).
  std::vector<double> last_backward_end_s;
  std::vector<PipelineTask> tasks;  // filled when requested (Chrome trace)
};

// The order in which stage `stage` runs its tasks: (forward?, chunk, micro-batch).
struct TaskRef {
  bool forward;
  int64_t chunk;
  int64_t microbatch;
};
std::vector<TaskRef> stage_task_order(const core::Layout& layout, int64_t stage);

PipelineResult simulate_pipeline(const core::Layout& layout, const ChunkCosts& costs,
                                 bool record_tasks = false);

}  // namespace loom::sim
