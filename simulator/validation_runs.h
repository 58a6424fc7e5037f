// Published training runs as simulator inputs. Reads the validation files
// (published_runs.yaml, vtrain_single_node.yaml: one entry per measured run) and turns each
// into a model spec, a layout, a framework and the measured figures. What a source leaves
// out is filled by one documented convention per framework/group (never per run) and listed
// in `assumptions`; runs whose layout cannot be reconstructed are kept with a skip reason.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/cluster_profile.h"
#include "core/layout.h"
#include "core/model_spec.h"
#include "simulator/framework.h"

namespace loom::sim {

struct ValidationRun {
  std::string id;
  std::string group;
  std::string source;            // source.ref
  std::string framework_text;    // as the file states it
  std::string cluster_profile;   // empty when null
  double params_b = 0;           // model.params_b as published

  Framework framework = Framework::kMegatron;
  std::optional<bool> flash_attention;  // convention of the run's era
  bool dropout = false;
  core::ModelSpec model;
  core::Layout layout;           // unresolved (core::resolve_layout validates it)

  std::optional<double> measured_memory_gib;
  std::string memory_semantics;  // what the measured figure counts
  std::optional<double> measured_iter_time_s;    // measured.iter_time_s
  std::optional<double> derived_iter_time_s;     // derived.iter_time_s* (the file's arithmetic)
  std::optional<double> measured_tflops_per_gpu;
  std::optional<double> measured_mfu;
  std::string flops_convention;                  // how the source counts FLOPs
  // Settings the source states about its step (override framework defaults).
  std::optional<double> dp_comm_overlap;
  // GEMM/attention rate of the run's software stack relative to today's (2021-22 stacks).
  double software_efficiency_scale = 1.0;

  std::vector<std::string> assumptions;
  std::string skip_reason;       // non-empty: the run cannot be simulated
};

core::Result<std::vector<ValidationRun>> load_validation_runs(const std::string& path);

// Cluster profiles by name, each loaded once (a validation file names a handful of profiles
// across hundreds of runs).
class ProfileCache {
 public:
  core::Result<const core::ClusterProfile*> get(const std::string& name);

 private:
  std::map<std::string, core::ClusterProfile> profiles_;
};

}  // namespace loom::sim
