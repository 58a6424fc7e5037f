// The step-time simulator: one training iteration of a layout on a cluster profile. Prices
// every op of every stage (compute_model.h), every collective on the cluster graph
// (collectives.h), runs the pipeline schedule as a task graph (pipeline_schedule.h), then adds
// the data-parallel gradient reduction, ZeRO traffic and the optimizer step. The breakdown
// sums to the step time. Validated against published runs in docs/validation/step-time.md.
//
//   StepTimeInput in{model, cluster, layout, Framework::kMegatron};
//   LOOM_ASSIGN_OR_RETURN(StepTimeReport r, simulate_step(in));
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/chrome_trace.h"
#include "core/cluster_profile.h"
#include "core/layout.h"
#include "core/model_spec.h"
#include "simulator/collectives.h"
#include "simulator/framework.h"
#include "simulator/pipeline_schedule.h"

namespace loom::sim {

struct StepTimeInput {
  core::ModelSpec model;
  core::ClusterProfile cluster;
  core::Layout layout;  // resolved
  Framework framework = Framework::kMegatron;
  // Overrides of framework defaults (what a published run states about itself).
  std::optional<bool> flash_attention;
  std::optional<double> dp_comm_overlap;
  // Multiplies the GEMM and attention rates on top of the framework's: an older software
  // stack (CUDA / cuBLAS / PyTorch) on the same GPU.
  double software_efficiency_scale = 1.0;
  bool dropout = false;
  bool record_trace = false;
  // Replaces framework_traits(framework) (what-if studies, calibration).
  std::optional<FrameworkTraits> traits;
};

// Seconds; the parts add up to the step time.
struct StepBreakdown {
  double compute = 0;    // kernels on the critical pipeline stage
  double tp_comm = 0;    // exposed tensor-parallel collectives on that stage
  double pp_comm = 0;    // waiting for pipeline transfers
  double dp_comm = 0;    // exposed gradient reduction, ZeRO gathers, tied-embedding sync
  double bubble = 0;     // pipeline fill and drain, stage imbalance
  double optimizer = 0;  // optimizer step over the local shard
  double other = 0;      // framework overhead per iteration
};

using TraceEvent = core::TraceSpan;  // core/chrome_trace.h

struct StepTimeReport {
  double step_time_s = 0;
  double tokens_per_s = 0;
  double tflops_per_gpu_model = 0;
  double tflops_per_gpu_hardware = 0;
  double mfu = 0;
  StepBreakdown breakdown;
  // breakdown.compute of the critical stage by kernel kind (GEMMs, flash or unfused attention
  // cores, memory-bound kernels incl. gradient folding); the rest of it is TP traffic that
  // overlaps compute. For comparison with a profiler's kernel sums.
  double compute_gemm_s = 0, compute_attention_s = 0, compute_elementwise_s = 0;
  int64_t critical_stage = 0;
  std::vector<double> stage_forward_s;   // one micro-batch, per stage (summed over its chunks)
  std::vector<double> stage_backward_s;
  double bubble_fraction = 0;
  std::vector<TraceEvent> trace;
};

// Seconds of one micro-batch's forward + backward (with recompute and exposed TP / ZeRO-3
// traffic) per unit, independent of the partition: what a pipeline partitioner balances.
struct UnitCosts {
  double block_s = 0;      // one transformer block
  double embedding_s = 0;  // the embedding (first stage)
  double head_s = 0;       // final norm, LM head and loss (last stage)
};
core::Result<UnitCosts> micro_batch_unit_costs(const StepTimeInput& input,
                                               CollectiveModel& collectives);

// `collectives` may be shared across calls for the same profile and GPU count (the planner);
// when null a model is built for this call.
core::Result<StepTimeReport> simulate_step(const StepTimeInput& input,
                                           CollectiveModel* collectives = nullptr);

nlohmann::json step_time_json(const StepTimeReport& report);
// Chrome trace format (chrome://tracing, Perfetto): one track per stage and stream.
nlohmann::json chrome_trace_json(const StepTimeReport& report);

}  // namespace loom::sim
