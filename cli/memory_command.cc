// `loom memory`: the per-stage memory report of one layout (table or --json).
#include <iostream>
#include <memory>

#include "cli/commands.h"
#include "cli/options.h"
#include "cli/table.h"
#include "core/units.h"
#include "simulator/memory_model.h"

namespace loom::cli {

namespace {

std::string render_memory_report(const Scenario& s, const sim::MemoryReport& r) {
  std::string out;
  out += fmt::format("Model    {} ({:.2f} B parameters, vocab {} padded to {})\n", s.model.name,
                     s.model.total_params() / 1e9, s.model.vocab_size,
                     s.model.padded_vocab(s.layout.tp));
  out += fmt::format("Cluster  {}: {} x {:.1f} GiB per node, {:.1f} GiB usable per GPU ({:.1f} GiB "
                     "headroom)\n",
                     s.cluster.name, s.cluster.device.name, s.cluster.device.memory_gib,
                     s.cluster.usable_memory_gib(), s.cluster.memory.headroom_gib);
  std::string partition;
  for (int64_t n : s.layout.partition) partition += (partition.empty() ? "" : ",") + std::to_string(n);
  out += fmt::format("Layout   {} gpus: {}, framework {}\n", s.layout.gpus, s.layout.summary(),
                     sim::to_string(s.framework));
  out += fmt::format("Pipeline {} micro-batches per iteration, blocks per stage {} ({})\n\n",
                     s.layout.num_microbatches(), partition, core::to_string(s.layout.partition_method));

  Table t;
  t.add_column("stage");
  t.add_column("holds", Table::Align::kLeft);
  t.add_column("work");
  t.add_column("params/rank");
  t.add_column("in-flight");
  t.add_column("weights");
  t.add_column("grads");
  t.add_column("optimizer");
  t.add_column("activations");
  t.add_column("bwd/logits");
  t.add_column("buffers");
  t.add_column("fixed");
  t.add_column("peak GiB");
  t.add_column("free GiB");
  t.add_column("observed");
  for (const auto& st : r.stages) {
    const double optimizer = st.item("master_weights") + st.item("optimizer_states");
    const double grads = st.item("gradients") + st.item("half_gradients") + st.item("ddp_buckets");
    const double buffers =
        st.item("comm_buffers") + st.item("zero2_buffers") + st.item("zero3_buffers");
    t.add_row({std::to_string(st.stage), st.holds, fmt::format("{:.2f}", st.work_block_equivalents),
               fmt::format("{:.0f} M", st.params_per_rank / 1e6),
               std::to_string(st.microbatches_in_flight), format_gib(st.item("weights")),
               format_gib(grads), format_gib(optimizer), format_gib(st.item("activations")),
               format_gib(st.transient_bytes), format_gib(buffers),
               format_gib(st.fixed_overhead_bytes), format_gib(st.peak_bytes),
               format_gib(r.capacity_bytes - st.peak_bytes), format_gib(st.observed_bytes())});
  }
  out += t.render();
  out += std::string("\nwork: forward compute in transformer-block equivalents (the LM head + "
                     "loss counts its share);\nbwd/logits: ") +
         (r.fixed_arenas ? "one block's backward scratch plus the LM-head logits chunk (fixed "
                           "arenas, both held);\n"
                         : "the larger transient of one block's backward and the LM-head loss;\n") +
         "fixed: CUDA context, workspaces, NCCL buffers; peak = what must fit; observed adds the\n"
         "caching allocator's reserve (what nvidia-smi shows). Memory in GiB.\n\n";
  out += fmt::format("Peak     {:.2f} GiB on stage {} of {:.2f} GiB usable: {}\n",
                     r.peak_gib(), r.peak_stage, core::bytes_to_gib(r.capacity_bytes),
                     r.fits ? "fits" : fmt::format("DOES NOT FIT (over by {:.2f} GiB)",
                                                   core::bytes_to_gib(r.peak_bytes - r.capacity_bytes)));
  const auto& c = r.checkpoint;
  out += fmt::format("Checkpoint {:.3f} TiB ({:.2f} TB) with fp32 master + Adam states; weights "
                     "only {:.1f} GiB;\n           {} writer ranks, largest {:.2f} GiB; write "
                     "time {:.0f} s at the profile's storage bandwidth\n",
                     c.bytes / core::kTiB, c.bytes / core::kTB, core::bytes_to_gib(c.weights_only_bytes),
                     c.writer_ranks, core::bytes_to_gib(c.max_rank_bytes), c.write_time_s);
  for (const auto& w : r.warnings) out += "warning: " + w + "\n";
  return out;
}

}  // namespace

CommandRunner register_memory_command(CLI::App& app) {
  auto args = std::make_shared<ScenarioArgs>();
  CLI::App* cmd = app.add_subcommand(
      "memory", "per-GPU memory of each pipeline stage for a layout, and the checkpoint size");
  add_scenario_options(*cmd, *args);
  return [args, cmd]() -> core::Status {
    if (!cmd->parsed()) return core::ok_status();
    LOOM_ASSIGN_OR_RETURN(Scenario s, load_scenario(*args));
    sim::MemoryModelInput in{s.model, s.cluster, s.layout, s.framework, std::nullopt, false};
    LOOM_ASSIGN_OR_RETURN(sim::MemoryReport report, sim::estimate_memory(in));
    if (args->json) {
      nlohmann::json j = sim::memory_report_json(report);
      j["model"] = s.model.name;
      j["cluster"] = s.cluster.name;
      j["framework"] = sim::to_string(s.framework);
      j["layout"] = s.layout.summary();
      j["partition"] = s.layout.partition;
      std::cout << j.dump(2) << "\n";
    } else {
      std::cout << render_memory_report(s, report);
    }
    return core::ok_status();
  };
}

}  // namespace loom::cli
