// Plan files: see plan.h. The model is embedded in full (so a plan runs without the preset),
// the layout uses the same keys as every layout YAML (core::layout_to_yaml).
#include "planner/plan.h"

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/model_io.h"
#include "core/yaml_reader.h"

namespace loom::plan {

YAML::Node plan_to_yaml(const Plan& p) {
  YAML::Node n;
  n["loom_version"] = p.loom_version;
  n["model"] = core::model_to_yaml(p.model);
  n["cluster"] = p.cluster;
  n["framework"] = sim::to_string(p.framework);
  n["layout"] = core::layout_to_yaml(p.layout);
  YAML::Node pred;
  const Prediction& r = p.predicted;
  pred["step_time_s"] = r.step_time_s;
  pred["tokens_per_s"] = r.tokens_per_s;
  pred["mfu"] = r.mfu;
  pred["tflops_per_gpu_model"] = r.tflops_per_gpu_model;
  pred["peak_gib"] = r.peak_gib;
  pred["peak_stage"] = r.peak_stage;
  pred["bubble_fraction"] = r.bubble_fraction;
  pred["exposed_comm_s"] = r.exposed_comm_s;
  pred["checkpoint_bytes"] = r.checkpoint_bytes;
  pred["checkpoint_write_s"] = r.checkpoint_write_s;
  n["predicted"] = pred;
  return n;
}

core::Result<Plan> plan_from_yaml(const YAML::Node& node, const std::string& origin) {
  Plan p;
  core::YamlReader r(node, origin);
  LOOM_RETURN_IF_ERROR(r.required("loom_version", p.loom_version));
  LOOM_ASSIGN_OR_RETURN(YAML::Node model, r.required_node("model"));
  LOOM_ASSIGN_OR_RETURN(p.model, core::model_from_yaml(model, origin + " (model)"));
  LOOM_RETURN_IF_ERROR(r.required("cluster", p.cluster));
  LOOM_RETURN_IF_ERROR(r.enum_field("framework", p.framework, true, sim::parse_framework));
  LOOM_ASSIGN_OR_RETURN(YAML::Node layout_node, r.required_node("layout"));
  LOOM_ASSIGN_OR_RETURN(core::Layout layout, core::layout_from_yaml(layout_node, origin + " (layout)"));
  LOOM_ASSIGN_OR_RETURN(p.layout, core::resolve_layout(layout, p.model));
  core::YamlReader pred = r.child("predicted", false);
  Prediction& x = p.predicted;
  LOOM_RETURN_IF_ERROR(pred.optional("step_time_s", x.step_time_s));
  LOOM_RETURN_IF_ERROR(pred.optional("tokens_per_s", x.tokens_per_s));
  LOOM_RETURN_IF_ERROR(pred.optional("mfu", x.mfu));
  LOOM_RETURN_IF_ERROR(pred.optional("tflops_per_gpu_model", x.tflops_per_gpu_model));
  LOOM_RETURN_IF_ERROR(pred.optional("peak_gib", x.peak_gib));
  LOOM_RETURN_IF_ERROR(pred.optional("peak_stage", x.peak_stage));
  LOOM_RETURN_IF_ERROR(pred.optional("bubble_fraction", x.bubble_fraction));
  LOOM_RETURN_IF_ERROR(pred.optional("exposed_comm_s", x.exposed_comm_s));
  LOOM_RETURN_IF_ERROR(pred.optional("checkpoint_bytes", x.checkpoint_bytes));
  LOOM_RETURN_IF_ERROR(pred.optional("checkpoint_write_s", x.checkpoint_write_s));
  LOOM_RETURN_IF_ERROR(pred.finish());
  LOOM_RETURN_IF_ERROR(r.finish());
  return p;
}

core::Status save_plan(const Plan& plan, const std::string& path) {
  YAML::Emitter out;
  out << YAML::Comment("Loom plan: `loom export --plan` and `loom train --plan` read this file");
  out << plan_to_yaml(plan);
  // Write to a temporary file next to the target and rename: a crash never leaves half a plan.
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp);
    if (!f) return core::error(core::ErrorCode::kIo, "--out: cannot write '{}'", tmp);
    f << out.c_str() << "\n";
    f.flush();
    if (!f) return core::error(core::ErrorCode::kIo, "--out: writing '{}' failed", tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    return core::error(core::ErrorCode::kIo, "--out: cannot rename '{}' to '{}': {}", tmp, path,
                       ec.message());
  }
  return core::ok_status();
}

core::Result<Plan> load_plan(const std::string& path) {
  LOOM_ASSIGN_OR_RETURN(YAML::Node node, core::load_yaml_file(path));
  return plan_from_yaml(node, path);
}

}  // namespace loom::plan
