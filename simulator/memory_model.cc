// Per-stage memory model: see memory_model.h. Sources of each term are cited inline; the
// activation terms are in activation_memory.cc, the checkpoint in checkpoint_model.cc.
#include "simulator/memory_model.h"

#include <algorithm>
#include <cmath>

#include "core/units.h"
#include "simulator/checkpoint_model.h"
#include "simulator/stage_layout.h"

namespace loom::sim {

using core::Layout;
using core::ModelSpec;
using core::Precision;

double StageMemory::item(std::string_view name) const {
  for (const auto& i : items) {
    if (name == i.name) return i.bytes;
  }
  return 0;
}

double MemoryReport::peak_gib() const { return core::bytes_to_gib(peak_bytes); }

namespace {

// Parameter state (weights, gradients, master weights, optimizer) for P local parameters.
void add_parameter_state(const FrameworkTraits& fw, const Layout& l, double params,
                         std::vector<MemoryItem>& items) {
  const double d = static_cast<double>(l.dp);
  const bool mixed = l.precision != Precision::kFp32;
  const bool fp16 = l.precision == Precision::kFp16;
  const double param_shard = l.zero >= 3 ? d : 1.0;
  const double grad_shard = l.zero >= 2 ? d : 1.0;
  const double optim_shard = l.zero >= 1 ? d : 1.0;

  if (fw.fsdp_flat_params) {
    // FSDP: the fp32 flat parameter is both the weights and the optimizer's master copy.
    items.push_back({"weights", params * 4.0 / param_shard});
    items.push_back({"gradients", params * 4.0 / grad_shard});
    items.push_back({"optimizer_states", params * 8.0 / optim_shard});
    return;
  }
  const double weight_bytes = mixed ? 2.0 : 4.0;
  items.push_back({"weights", params * weight_bytes / param_shard});
  const double grad_bytes = !mixed ? 4.0 : (fp16 ? fw.grad_bytes_fp16 : fw.grad_bytes_bf16);
  items.push_back({"gradients", params * grad_bytes / grad_shard});
  if (mixed && fw.half_grad_transient_bytes > 0 && l.zero < 2) {
    items.push_back({"half_gradients", params * fw.half_grad_transient_bytes});
  }
  if (mixed) items.push_back({"master_weights", params * 4.0 / optim_shard});
  // Adam first and second moments in fp32 (+ the fp16 path's fp32 gradient copy).
  const double optim_bytes = 8.0 + (fp16 ? fw.extra_optimizer_bytes_fp16 : 0.0);
  items.push_back({"optimizer_states", params * optim_bytes / optim_shard});
  if (l.zero == 0 && l.dp > 1 && fw.ddp_bucket_bytes > 0) {
    items.push_back({"ddp_buckets", params * fw.ddp_bucket_bytes});
  }
}

// Gathered full parameters of the current and prefetched unit, and the unsharded gradients of
// one unit before its reduce-scatter.
double zero3_buffer_bytes(const FrameworkTraits& fw, const StageContents& c) {
  const double unit = static_cast<double>(c.largest_unit_params);
  double gathered = fw.zero3_gathered_layers * unit;
  double unsharded_grads = unit;
  if (fw.zero3_max_live_params > 0) gathered = std::min(gathered, fw.zero3_max_live_params);
  if (fw.zero3_reduce_bucket_params > 0) {
    unsharded_grads = std::min(unsharded_grads, fw.zero3_reduce_bucket_params);
  }
  return gathered * fw.zero3_gather_bytes_per_param + unsharded_grads * fw.zero3_unsharded_grad_bytes;
}

// ZeRO-2 by unit: one unit's unsharded gradients before their reduce-scatter.
double zero2_buffer_bytes(const FrameworkTraits& fw, const StageContents& c) {
  return static_cast<double>(c.largest_unit_params) * fw.zero3_unsharded_grad_bytes;
}

// The reduce-scatter's landing share of the largest unit (ZeRO-2/3 by unit).
double zero_staging_bytes(const FrameworkTraits& fw, const Layout& l, const StageContents& c) {
  const double dp = static_cast<double>(l.dp);
  return std::ceil(static_cast<double>(c.largest_unit_params) / dp) * fw.zero_staging_bytes_per_param;
}

// Everything one stage computes from, shared by all stages of a layout.
struct StageInputs {
  const MemoryModelInput& in;
  const FrameworkTraits& fw;
  BlockActivations block;
  double act_bytes;      // bytes per activation element
  double tokens;         // s x b of one micro-batch
  double hidden_sharded; // h, or h / tp under sequence parallelism
};

StageMemory estimate_stage(const StageInputs& x, const StageContents& c, int64_t s) {
  const ModelSpec& m = x.in.model;
  const Layout& l = x.in.layout;
  const FrameworkTraits& fw = x.fw;
  StageMemory st;
  st.stage = s;
  st.blocks = c.blocks;
  st.has_embedding = c.has_embedding;
  st.has_lm_head = c.has_lm_head;
  if (x.in.describe_stages) st.holds = describe_stage(l, s);
  st.params_per_rank = c.params;
  st.work_block_equivalents = c.work_block_equivalents;

  add_parameter_state(fw, l, static_cast<double>(c.params), st.items);
  if (l.zero == 3) {
    st.items.push_back({"zero3_buffers", zero3_buffer_bytes(fw, c) + zero_staging_bytes(fw, l, c)});
  }
  if (l.zero == 2 && fw.zero2_unit_gradients) {
    st.items.push_back({"zero2_buffers", zero2_buffer_bytes(fw, c) + zero_staging_bytes(fw, l, c)});
  }

  // Stashed activations of the (chunk, micro-batch) pairs in flight at the first backward.
  const double boundary = x.tokens * x.act_bytes * x.hidden_sharded;  // one [s, b, h] tensor
  // One micro-batch of virtual stage `v` (chunk * pp + s).
  auto held = [&](int64_t v) {
    double bytes = static_cast<double>(l.partition[v]) * x.block.stored(l.recompute);
    if (v == 0 && m.embedding_norm) bytes += boundary;  // embedding LN input
    if (v == l.num_chunks() - 1) {
      bytes += 2.0 * boundary;  // final norm, head inputs
    } else if (fw.stage_output_kept) {
      bytes += boundary;  // the chunk's output, kept with its micro-batch
    }
    return bytes;
  };
  const std::vector<int64_t> inflight = inflight_chunks(l, s, held);
  st.microbatches_in_flight = static_cast<int64_t>(inflight.size());
  double stash = 0;
  for (int64_t chunk : inflight) stash += held(chunk);
  st.items.push_back({"activations", stash});

  // Transient phases: a block's backward, and the LM head's loss (on the last stage). With a
  // caching allocator only the larger one counts toward the peak (the logits are freed before
  // the blocks' backward); fixed arenas hold both.
  const double working = c.blocks > 0 ? x.block.backward_working(l.recompute) : 0.0;
  double logits = 0;
  if (c.has_lm_head) {
    const double vocab_local = static_cast<double>(m.padded_vocab(l.tp) / l.tp);
    const double copies = l.schedule == core::PipelineSchedule::kGPipe && !fw.fixed_arenas
                              ? static_cast<double>(l.num_microbatches())
                              : 1.0;
    double elements = x.tokens * vocab_local;
    if (fw.logits_chunk_elements > 0) {  // whole rows of the vocabulary, at least one
      const double rows = std::max(1.0, std::floor(fw.logits_chunk_elements / vocab_local));
      elements = std::min(x.tokens, rows) * vocab_local;
    }
    logits = elements * fw.logits_bytes_per_element * (x.act_bytes / 2.0) * copies;
  }
  st.items.push_back({"backward_working", working});
  st.items.push_back({"logits_and_loss", logits});

  // Communication buffers: pipeline send/recv (forward activation and backward gradient) and
  // the full-sequence all-gather buffer of sequence parallelism.
  double comm = 0;
  if (l.pp > 1) comm += fw.pipeline_buffers * boundary;
  if (l.sp) comm += x.tokens * x.act_bytes * static_cast<double>(m.hidden_size);
  st.items.push_back({"comm_buffers", comm});

  double persistent = 0;
  for (const auto& item : st.items) {
    const std::string_view name = item.name;
    if (name != "backward_working" && name != "logits_and_loss") persistent += item.bytes;
  }
  st.transient_bytes = fw.fixed_arenas ? working + logits : std::max(working, logits);
  st.allocated_bytes = persistent + st.transient_bytes;
  st.allocator_reserve_bytes = stash * fw.allocator_reserve_fraction;
  st.fixed_overhead_bytes = core::gib_to_bytes(x.in.cluster.memory.total_gib());
  st.peak_bytes = st.allocated_bytes + st.fixed_overhead_bytes;
  return st;
}

}  // namespace

core::Result<MemoryReport> estimate_memory(const MemoryModelInput& in) {
  const Layout& l = in.layout;
  const FrameworkTraits& fw = framework_traits(in.framework);
  LOOM_RETURN_IF_ERROR(fw.check_layout(l));
  if (static_cast<int64_t>(l.partition.size()) != l.num_chunks() || l.dp < 1) {
    return core::error(core::ErrorCode::kInternal, "estimate_memory needs a resolved layout");
  }
  ActivationOptions act_opts = ActivationOptions::from_framework(fw);
  if (in.flash_attention) act_opts.flash_attention = *in.flash_attention;
  act_opts.dropout = in.dropout || fw.dropout;
  const StageInputs x{in, fw, block_activations(in.model, l, act_opts),
                      activation_bytes(l.precision), static_cast<double>(l.seq * l.mbs),
                      static_cast<double>(in.model.hidden_size) / (l.sp ? l.tp : 1)};

  MemoryReport report;
  report.fixed_arenas = fw.fixed_arenas;
  report.capacity_bytes = core::gib_to_bytes(in.cluster.usable_memory_gib());
  std::vector<StageContents> contents;
  contents.reserve(l.pp);
  for (int64_t s = 0; s < l.pp; ++s) contents.push_back(stage_contents(in.model, l, s));
  for (int64_t s = 0; s < l.pp; ++s) {
    report.stages.push_back(estimate_stage(x, contents[s], s));
    if (report.stages.back().peak_bytes > report.peak_bytes) {
      report.peak_bytes = report.stages.back().peak_bytes;
      report.peak_stage = s;
    }
  }
  report.fits = report.peak_bytes <= report.capacity_bytes;
  report.checkpoint = estimate_checkpoint(contents, in.cluster, l, fw);
  if (l.tp > in.cluster.gpus_per_node) {
    report.warnings.push_back(fmt::format(
        "tp {} is larger than the {} GPUs of a node: tensor-parallel all-reduces cross the "
        "inter-node network",
        l.tp, in.cluster.gpus_per_node));
  }
  return report;
}

core::Result<std::vector<StageMemoryLine>> stage_memory_lines(const MemoryModelInput& in) {
  const Layout& l = in.layout;
  if (l.vpp != 1) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "stage_memory_lines needs vpp = 1 (got {})", l.vpp);
  }
  const FrameworkTraits& fw = framework_traits(in.framework);
  ActivationOptions act_opts = ActivationOptions::from_framework(fw);
  if (in.flash_attention) act_opts.flash_attention = *in.flash_attention;
  act_opts.dropout = in.dropout || fw.dropout;
  MemoryModelInput probe = in;
  probe.describe_stages = false;
  const StageInputs x{probe, fw, block_activations(in.model, l, act_opts),
                      activation_bytes(l.precision), static_cast<double>(l.seq * l.mbs),
                      static_cast<double>(in.model.hidden_size) / (l.sp ? l.tp : 1)};
  std::vector<StageMemoryLine> lines(l.pp);
  for (int64_t s = 0; s < l.pp; ++s) {
    double peak[3];
    for (int64_t n = 0; n < 3; ++n) {
      probe.layout.partition[s] = n;
      peak[n] = estimate_stage(x, stage_contents(in.model, probe.layout, s), s).peak_bytes;
    }
    probe.layout.partition[s] = l.partition[s];
    lines[s] = {2.0 * peak[1] - peak[2], peak[2] - peak[1], peak[0]};
  }
  return lines;
}

nlohmann::json memory_report_json(const MemoryReport& r) {
  using nlohmann::json;
  json stages = json::array();
  for (const auto& s : r.stages) {
    json items = json::object();
    for (const auto& i : s.items) {
      items[i.name] = {{"bytes", i.bytes}, {"gib", core::bytes_to_gib(i.bytes)}};
    }
    stages.push_back({
        {"stage", s.stage},
        {"holds", s.holds},
        {"blocks", s.blocks},
        {"has_embedding", s.has_embedding},
        {"has_lm_head", s.has_lm_head},
        {"params_per_rank", s.params_per_rank},
        {"microbatches_in_flight", s.microbatches_in_flight},
        {"work_block_equivalents", s.work_block_equivalents},
        {"items", items},
        {"allocated_bytes", s.allocated_bytes},
        {"allocated_gib", core::bytes_to_gib(s.allocated_bytes)},
        {"allocator_reserve_bytes", s.allocator_reserve_bytes},
        {"fixed_overhead_bytes", s.fixed_overhead_bytes},
        {"peak_bytes", s.peak_bytes},
        {"peak_gib", core::bytes_to_gib(s.peak_bytes)},
        {"observed_gib", core::bytes_to_gib(s.observed_bytes())},
    });
  }
  return {
      {"peak_gib", r.peak_gib()},
      {"peak_bytes", r.peak_bytes},
      {"peak_stage", r.peak_stage},
      {"capacity_gib", core::bytes_to_gib(r.capacity_bytes)},
      {"fits", r.fits},
      {"per_stage", stages},
      {"checkpoint",
       {{"bytes", r.checkpoint.bytes},
        {"tib", r.checkpoint.bytes / core::kTiB},
        {"weights_only_bytes", r.checkpoint.weights_only_bytes},
        {"max_rank_bytes", r.checkpoint.max_rank_bytes},
        {"writer_ranks", r.checkpoint.writer_ranks},
        {"write_time_s", r.checkpoint.write_time_s}}},
      {"warnings", r.warnings},
      {"note",
       std::string("peak = allocated + fixed overheads (what must fit); observed adds the "
                   "caching allocator's reserve (what nvidia-smi shows; released under memory "
                   "pressure). Items backward_working and logits_and_loss ") +
           (r.fixed_arenas ? "are fixed arenas: both count"
                           : "are transient phases: only the larger counts")},
  };
}

}  // namespace loom::sim
