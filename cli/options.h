// Command-line options shared by loom commands: the model / cluster / framework selection and
// every layout field (registered from core::visit_layout_fields, the single definition).
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "core/cluster_profile.h"
#include "core/layout.h"
#include "core/model_spec.h"
#include "simulator/framework.h"

namespace loom::cli {

struct ScenarioArgs {
  std::string model;
  std::string cluster;
  std::string framework = "megatron";
  core::Layout layout;
  bool json = false;
};

void add_scenario_options(CLI::App& app, ScenarioArgs& args);

struct Scenario {
  core::ModelSpec model;
  core::ClusterProfile cluster;
  core::Layout layout;  // resolved
  sim::Framework framework;
};

// Loads the model and the cluster profile and resolves the layout; errors name the flag.
core::Result<Scenario> load_scenario(const ScenarioArgs& args);

std::string format_gib(double bytes);

}  // namespace loom::cli
