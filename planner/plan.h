// A plan: everything needed to run a layout (model, cluster, framework, resolved layout with
// its pipeline partition) and what Loom predicted for it. `loom plan --out plan.yaml` writes
// it, `loom export` and the trainer read exactly this file. Round-trip tested in
// tests/planner/plan_test.cc.
#pragma once

#include <string>

#include <yaml-cpp/yaml.h>

#include "core/layout.h"
#include "core/model_spec.h"
#include "core/status.h"
#include "simulator/framework.h"

namespace loom::plan {

inline constexpr const char* kLoomVersion = "0.1.0";

struct Prediction {
  double step_time_s = 0;
  double tokens_per_s = 0;
  double mfu = 0;
  double tflops_per_gpu_model = 0;
  double peak_gib = 0;        // the fullest rank (what must fit)
  int64_t peak_stage = 0;
  double bubble_fraction = 0;
  double exposed_comm_s = 0;  // tp + pp + dp communication on the critical path
  double checkpoint_bytes = 0;
  double checkpoint_write_s = 0;
};

struct Plan {
  std::string loom_version = kLoomVersion;
  core::ModelSpec model;
  std::string cluster;  // profile name or path, as given
  sim::Framework framework = sim::Framework::kMegatron;
  core::Layout layout;  // resolved: dp, seq and partition filled
  Prediction predicted;
};

YAML::Node plan_to_yaml(const Plan& plan);
core::Result<Plan> plan_from_yaml(const YAML::Node& node, const std::string& origin);
core::Status save_plan(const Plan& plan, const std::string& path);  // atomic (temp + rename)
core::Result<Plan> load_plan(const std::string& path);

}  // namespace loom::plan
