// `loom simulate`: the predicted time of one iteration with its breakdown, the per-stage
// times, the memory report and the checkpoint; --trace writes the simulated iteration as a
// Chrome trace (Perfetto), --json the stable figures.
#include <fstream>
#include <iostream>
#include <memory>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/table.h"
#include "core/units.h"
#include "simulator/memory_model.h"
#include "simulator/step_time.h"

namespace loom::cli {

namespace {

struct SimulateArgs {
  ScenarioArgs scenario;
  std::string trace;
};

std::string render(const Scenario& s, const sim::StepTimeReport& r, const sim::MemoryReport& mem) {
  const auto& b = r.breakdown;
  std::string out = fmt::format("Model    {} on {} ({} gpus), framework {}\nLayout   {}\n\n",
                                s.model.name, s.cluster.name, s.layout.gpus,
                                sim::to_string(s.framework), s.layout.summary());
  out += fmt::format("Step time   {:.3f} s   ({:.0f} tokens/s, {:.1f} model TFLOP/s per GPU, "
                     "{:.1f} hardware, MFU {:.1f}%)\n\n",
                     r.step_time_s, r.tokens_per_s, r.tflops_per_gpu_model,
                     r.tflops_per_gpu_hardware, 100 * r.mfu);
  Table t;
  t.add_column("part", Table::Align::kLeft);
  t.add_column("seconds");
  t.add_column("share");
  for (const auto& [name, v] :
       {std::pair{"compute", b.compute}, std::pair{"tp comm", b.tp_comm},
        std::pair{"pp comm", b.pp_comm}, std::pair{"dp comm", b.dp_comm},
        std::pair{"bubble", b.bubble}, std::pair{"optimizer", b.optimizer},
        std::pair{"other", b.other}}) {
    t.add_row({name, fmt::format("{:.3f}", v), fmt::format("{:.1f}%", 100 * v / r.step_time_s)});
  }
  out += t.render();
  out += fmt::format("(compute and tp comm of the busiest stage, {}; bubble {:.1f}% of the "
                     "pipeline)\n\n",
                     r.critical_stage, 100 * r.bubble_fraction);
  Table st;
  for (const char* h : {"stage", "holds", "fwd ms/mb", "bwd ms/mb", "peak GiB"}) st.add_column(h);
  for (size_t i = 0; i < r.stage_forward_s.size(); ++i) {
    st.add_row({std::to_string(i), mem.stages[i].holds, fmt::format("{:.2f}", 1e3 * r.stage_forward_s[i]),
                fmt::format("{:.2f}", 1e3 * r.stage_backward_s[i]),
                fmt::format("{:.2f}", core::bytes_to_gib(mem.stages[i].peak_bytes))});
  }
  out += st.render();
  out += fmt::format("\nMemory   peak {:.2f} GiB of {:.2f} usable: {}\n", mem.peak_gib(),
                     core::bytes_to_gib(mem.capacity_bytes), mem.fits ? "fits" : "DOES NOT FIT");
  out += fmt::format("Checkpoint {:.3f} TiB, write {:.0f} s\n", mem.checkpoint.bytes / core::kTiB,
                     mem.checkpoint.write_time_s);
  return out;
}

}  // namespace

CommandRunner register_simulate_command(CLI::App& app) {
  auto args = std::make_shared<SimulateArgs>();
  CLI::App* cmd = app.add_subcommand(
      "simulate", "predict one iteration: step time and its breakdown, memory, checkpoint");
  add_scenario_options(*cmd, args->scenario);
  cmd->add_option("--trace", args->trace, "write the simulated iteration as a Chrome trace JSON");
  return [cmd, args]() -> core::Status {
    if (!cmd->parsed()) return core::ok_status();
    LOOM_ASSIGN_OR_RETURN(Scenario s, load_scenario(args->scenario));
    sim::StepTimeInput in;
    in.model = s.model;
    in.cluster = s.cluster;
    in.layout = s.layout;
    in.framework = s.framework;
    in.record_trace = !args->trace.empty();
    LOOM_ASSIGN_OR_RETURN(sim::StepTimeReport report, sim::simulate_step(in));
    sim::MemoryModelInput mem_in{s.model, s.cluster, s.layout, s.framework, std::nullopt, false};
    LOOM_ASSIGN_OR_RETURN(sim::MemoryReport mem, sim::estimate_memory(mem_in));
    if (!args->trace.empty()) {
      std::ofstream f(args->trace);
      if (!f) return core::error(core::ErrorCode::kIo, "--trace: cannot write '{}'", args->trace);
      f << sim::chrome_trace_json(report).dump() << "\n";
      if (!f) return core::error(core::ErrorCode::kIo, "--trace: writing '{}' failed", args->trace);
    }
    if (args->scenario.json) {
      nlohmann::json j = sim::step_time_json(report);
      nlohmann::json m = sim::memory_report_json(mem);
      j["memory"] = {{"peak_gib", m["peak_gib"]}, {"fits", m["fits"]}, {"per_stage", m["per_stage"]}};
      j["checkpoint"] = m["checkpoint"];
      j["model"] = s.model.name;
      j["cluster"] = s.cluster.name;
      j["framework"] = sim::to_string(s.framework);
      j["layout"] = s.layout.summary();
      std::cout << j.dump(2) << "\n";
    } else {
      std::cout << render(s, report, mem);
    }
    return core::ok_status();
  };
}

}  // namespace loom::cli
