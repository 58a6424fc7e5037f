// Shared loom command-line options: see options.h.
#include "cli/options.h"

#include "core/model_io.h"
#include "core/units.h"

namespace loom::cli {

namespace {

// Registers each layout field with CLI11 (see core::visit_layout_fields).
struct CliLayoutRegistrar {
  CLI::App& app;
  void integer(const char*, const char* flags, const char* help, int64_t& v) {
    app.add_option(flags, v, help)->check(CLI::NonNegativeNumber);
  }
  void zero_stage(const char*, const char* flags, const char* help, int& v) {
    app.add_option(flags, v, help);  // range checked by resolve_layout with a clear message
  }
  void flag(const char*, const char* flags, const char* help, bool& v) {
    app.add_flag(flags, v, help);
  }
  void text(const char*, const char* flags, const char* help, std::string& v) {
    app.add_option(flags, v, help)->capture_default_str();
  }
  void int_list(const char*, const char* flags, const char* help, std::vector<int64_t>& v) {
    app.add_option_function<std::string>(
        flags,
        [&v](const std::string& s) {
          auto parsed = core::parse_partition(s);
          if (!parsed.ok()) throw CLI::ValidationError(parsed.status().message());
          v = *parsed;
        },
        help);
  }
  template <typename E>
  void enumeration(const char*, const char* flags, const char* help, E& v,
                   core::Result<E> (*parse)(const std::string&)) {
    app.add_option_function<std::string>(
        flags,
        [&v, parse](const std::string& s) {
          auto parsed = parse(s);
          if (!parsed.ok()) throw CLI::ValidationError(parsed.status().message());
          v = *parsed;
        },
        help);
  }
};

}  // namespace

void add_scenario_options(CLI::App& app, ScenarioArgs& args) {
  app.add_option("--model", args.model,
                 "model preset name (see `loom models`), preset YAML, or Hugging Face config.json")
      ->required();
  app.add_option("--cluster", args.cluster,
                 "cluster profile name (see `loom clusters`) or profile YAML")
      ->required();
  app.add_option("--framework", args.framework,
                 "framework whose memory habits to model: megatron, megatron-deepspeed, fsdp, "
                 "nanotron, loom")
      ->capture_default_str();
  CliLayoutRegistrar registrar{app};
  core::visit_layout_fields(args.layout, registrar);
  app.add_flag("--json", args.json, "print JSON instead of a table");
}

core::Result<Scenario> load_scenario(const ScenarioArgs& args) {
  Scenario s;
  LOOM_ASSIGN_OR_RETURN(s.model, core::load_model(args.model));
  LOOM_ASSIGN_OR_RETURN(s.cluster, core::load_cluster_profile(args.cluster));
  LOOM_ASSIGN_OR_RETURN(s.framework, sim::parse_framework(args.framework));
  LOOM_ASSIGN_OR_RETURN(s.layout, core::resolve_layout(args.layout, s.model));
  return s;
}

std::string format_gib(double bytes) { return fmt::format("{:.2f}", core::bytes_to_gib(bytes)); }

}  // namespace loom::cli
