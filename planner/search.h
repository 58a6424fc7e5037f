// The layout search behind `loom plan`: every TP / PP / DP / ZeRO / micro-batch / recompute /
// sequence-parallel / interleaving combination that divides the model and the GPUs, each with
// the exact memory-constrained pipeline partition (partition.h), its memory checked and its
// iteration simulated; dominated candidates pruned; all cores used. Reports the top plans,
// why the runner-up and the best rejected plan lose, and counts by reason.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/cluster_profile.h"
#include "core/layout.h"
#include "core/model_spec.h"
#include "planner/plan.h"
#include "simulator/framework.h"
#include "simulator/step_time.h"

namespace loom::plan {

// "tp<=8", "pp=4", "zero>=1", "mbs<4", "sp=1", "vpp=1", "recompute=full".
struct Constraint {
  std::string field;
  std::string op;  // <=, <, >=, >, =, !=
  int64_t value = 0;
};
core::Result<Constraint> parse_constraint(const std::string& text);
bool satisfies(const core::Layout& layout, const Constraint& c);

struct PlanRequest {
  core::ModelSpec model;
  core::ClusterProfile cluster;
  std::string cluster_name;  // as the user gave it (written into plan files)
  int64_t gpus = 0;
  int64_t gbs = 0;
  int64_t seq = 0;
  sim::Framework framework = sim::Framework::kMegatron;
  core::Precision precision = core::Precision::kBf16;
  int top_k = 5;
  std::vector<Constraint> constraints;
  int threads = 0;  // 0: all cores
  // When set, only these layouts are candidates (e.g. the layouts a paper measured).
  std::vector<core::Layout> only;
  // Replaces framework_traits(framework) in step-time simulation (what-if studies).
  std::optional<sim::FrameworkTraits> traits;
};

struct Evaluated {
  core::Layout layout;  // resolved, with its partition
  sim::StepTimeReport step;
  double peak_gib = 0;
  int64_t peak_stage = 0;
  double capacity_gib = 0;
  double checkpoint_bytes = 0;
  double checkpoint_write_s = 0;
};

struct PlanResult {
  std::vector<Evaluated> top;               // layouts that fit, fastest first
  std::optional<Evaluated> best_rejected;   // the fastest layout that does not fit
  std::string best_rejected_reason;
  std::string runner_up_reason;
  std::string partition_note;  // the chosen partition vs a blocks-only even split
  int64_t candidates = 0;  // enumerated layouts
  int64_t simulated = 0;   // step-time simulations run
  std::map<std::string, int64_t> rejected;  // reason -> count (includes pruned)
  double wall_s = 0;
};

core::Result<PlanResult> search_plans(const PlanRequest& request,
                                      const std::function<void(int64_t, int64_t)>& progress = {});

// The plan file of one evaluated layout.
Plan make_plan(const PlanRequest& request, const Evaluated& e);

}  // namespace loom::plan
