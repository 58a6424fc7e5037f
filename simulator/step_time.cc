// The step-time simulator: see step_time.h.
#include "simulator/step_time.h"

#include <algorithm>

#include "simulator/activation_memory.h"
#include "simulator/block_ops.h"
#include "simulator/compute_model.h"
#include "simulator/flops.h"
#include "simulator/stage_layout.h"

namespace loom::sim {

namespace {

using core::Layout;

// Time of an op list on one rank: kernels, and exposed tensor-parallel collectives.
struct Priced {
  double compute_s = 0;
  double tp_s = 0;
  // compute_s split by kernel kind (the overlapped TP share of compute_s is in none of them).
  double gemm_s = 0, attention_s = 0, elementwise_s = 0;
  Priced& operator+=(const Priced& o) {
    compute_s += o.compute_s;
    tp_s += o.tp_s;
    gemm_s += o.gemm_s;
    attention_s += o.attention_s;
    elementwise_s += o.elementwise_s;
    return *this;
  }
  Priced scaled(double k) const {
    return {compute_s * k, tp_s * k, gemm_s * k, attention_s * k, elementwise_s * k};
  }
  double total() const { return compute_s + tp_s; }
};

CollectiveKind collective_of(OpKind kind) {
  switch (kind) {
    case OpKind::kTpAllGather: return CollectiveKind::kAllGather;
    case OpKind::kTpReduceScatter: return CollectiveKind::kReduceScatter;
    default: return CollectiveKind::kAllReduce;
  }
}

struct Context {
  const StepTimeInput& in;
  const FrameworkTraits& fw;
  ComputeModel compute;
  CollectiveModel& comm;
  OpOptions ops;
};

// Device time of a compute op with the framework's kernel quality, floored by the host's
// dispatch cost (a GPU that finishes faster than the CPU issues waits for it). A CPU profile's
// efficiencies are Loom's own CPU kernels (`loom calibrate --measure`), the only kernels that
// run there: the framework's rates relative to the GPU reference kernels do not apply.
double kernel_time_s(const Context& x, const Op& op) {
  double t = 0;
  const double stack = x.in.software_efficiency_scale;
  const bool cpu = x.in.cluster.device.kind == "cpu";
  if (op.kind == OpKind::kGemm) {
    t = x.compute.op_time_s(op) / ((cpu ? 1.0 : x.fw.gemm_efficiency_scale) * stack);
  } else if (op.kind == OpKind::kAttention) {
    t = x.compute.op_time_s(op) / ((cpu ? 1.0 : x.fw.attention_efficiency_scale) * stack);
  } else {
    t = x.compute.elementwise_time_s(op.bytes * x.fw.elementwise_traffic_scale);
  }
  return std::max(t, x.fw.kernel_dispatch_us * 1e-6);
}

core::Result<Priced> price(Context& x, const std::vector<Op>& ops) {
  Priced p;
  for (const Op& op : ops) {
    if (op.kind == OpKind::kGemm || op.kind == OpKind::kAttention ||
        op.kind == OpKind::kElementwise) {
      const double t = kernel_time_s(x, op);
      p.compute_s += t;
      (op.kind == OpKind::kGemm        ? p.gemm_s
       : op.kind == OpKind::kAttention ? p.attention_s
                                       : p.elementwise_s) += t;
      continue;
    }
    LOOM_ASSIGN_OR_RETURN(CommCost c, x.comm.estimate_layout(x.in.layout, GroupKind::kTensor,
                                                            collective_of(op.kind), op.bytes));
    const double t = c.time_s + x.fw.collective_launch_us * 1e-6;
    p.tp_s += t * (1.0 - x.fw.tp_comm_overlap);
    p.compute_s += t * x.fw.tp_comm_overlap * x.fw.overlap_compute_slowdown;
  }
  return p;
}

// Costs of one micro-batch per model chunk, split into kernels, TP and ZeRO-3 traffic.
struct ChunkBreakdown {
  std::vector<Priced> forward, backward;
  std::vector<double> zero3_forward_s, zero3_backward_s;  // exposed parameter/gradient traffic
};

core::Result<double> grad_reduce_bytes_per_param(const FrameworkTraits& fw, const Layout& l) {
  if (l.precision == core::Precision::kFp32) return 4.0;
  return l.precision == core::Precision::kFp16 ? fw.grad_bytes_fp16 : fw.grad_bytes_bf16;
}

// ZeRO-3 gathers each block's parameters before its forward (and again for a checkpointed
// forward where the framework re-fetches) and before its backward, and reduce-scatters its
// gradients after; prefetching hides the covered share behind the block's compute.
core::Result<std::pair<double, double>> zero3_block_exposed(Context& x, const Priced& fwd,
                                                            const Priced& bwd) {
  const Layout& l = x.in.layout;
  if (l.zero < 3 || l.dp == 1) return std::pair{0.0, 0.0};
  const double params = static_cast<double>(x.in.model.block_params(l.tp));
  const double k = std::max(1.0, x.fw.zero3_collectives_per_gather);
  LOOM_ASSIGN_OR_RETURN(double grad_bytes, grad_reduce_bytes_per_param(x.fw, l));
  LOOM_ASSIGN_OR_RETURN(CommCost gather, x.comm.estimate_layout(l, GroupKind::kData,
                                                               CollectiveKind::kAllGather,
                                                               2.0 * params / k));
  LOOM_ASSIGN_OR_RETURN(CommCost scatter, x.comm.estimate_layout(l, GroupKind::kData,
                                                                CollectiveKind::kReduceScatter,
                                                                grad_bytes * params / k));
  const double per_collective_s =
      (x.fw.collective_launch_us + x.fw.zero3_per_rank_overhead_us * static_cast<double>(l.dp)) *
      1e-6;
  const double gather_s = k * (gather.time_s + per_collective_s);
  const double scatter_s = k * (scatter.time_s + per_collective_s);
  const bool regather = x.fw.zero3_regather_on_recompute && l.recompute == core::Recompute::kFull;
  const double hide = x.fw.zero3_prefetch_overlap;
  const double fwd_comm = gather_s, bwd_comm = gather_s * (regather ? 2.0 : 1.0) + scatter_s;
  // Exposed traffic, plus the slowdown the hidden part inflicts on the compute it overlaps.
  auto exposed = [&](double comm, double compute) {
    const double hidden = std::min(comm, hide * compute);
    return comm - hidden + hidden * x.fw.overlap_compute_slowdown;
  };
  return std::pair{exposed(fwd_comm, fwd.total()), exposed(bwd_comm, bwd.total())};
}

// Per-micro-batch costs of the units a chunk is made of: one block, the embedding, the head.
struct Units {
  Priced block_fwd, block_bwd, emb_fwd, emb_bwd, head_fwd, head_bwd;
  std::pair<double, double> zero3;  // exposed ZeRO-3 traffic per block, forward / backward
  double fold_s_per_param = 0;      // folding bf16 gradients into fp32, per parameter
};

core::Result<Units> unit_costs(Context& x) {
  const Layout& l = x.in.layout;
  const core::ModelSpec& m = x.in.model;
  Units u;
  LOOM_ASSIGN_OR_RETURN(u.block_fwd, price(x, block_forward_ops(m, l, x.ops)));
  LOOM_ASSIGN_OR_RETURN(Priced block_recompute, price(x, block_recompute_ops(m, l, x.ops)));
  LOOM_ASSIGN_OR_RETURN(Priced block_bwd_only, price(x, block_backward_ops(m, l, x.ops)));
  u.block_bwd = block_recompute;
  u.block_bwd += block_bwd_only;
  LOOM_ASSIGN_OR_RETURN(u.zero3, zero3_block_exposed(x, u.block_fwd, u.block_bwd));
  LOOM_ASSIGN_OR_RETURN(u.emb_fwd, price(x, embedding_ops(m, l, false)));
  LOOM_ASSIGN_OR_RETURN(u.emb_bwd, price(x, embedding_ops(m, l, true)));
  LOOM_ASSIGN_OR_RETURN(u.head_fwd, price(x, lm_head_ops(m, l, false)));
  LOOM_ASSIGN_OR_RETURN(u.head_bwd, price(x, lm_head_ops(m, l, true)));
  if (x.fw.bf16_grad_fold_bytes_per_param > 0 && l.precision == core::Precision::kBf16) {
    u.fold_s_per_param = x.compute.elementwise_time_s(x.fw.bf16_grad_fold_bytes_per_param) -
                         x.compute.elementwise_time_s(0.0);
  }
  return u;
}

// Parameters of a chunk's units whose gradients are folded.
double fold_seconds(const Context& x, const Units& u, double blocks, bool embedding, bool head) {
  if (u.fold_s_per_param == 0) return 0.0;
  const core::ModelSpec& m = x.in.model;
  const Layout& l = x.in.layout;
  double params = blocks * static_cast<double>(m.block_params(l.tp));
  if (embedding) params += static_cast<double>(m.embedding_params(l.tp, true) + m.position_params());
  if (head) params += static_cast<double>(m.lm_head_params(l.tp, true));
  return params * u.fold_s_per_param;
}

core::Result<ChunkBreakdown> chunk_costs(Context& x) {
  const Layout& l = x.in.layout;
  LOOM_ASSIGN_OR_RETURN(Units u, unit_costs(x));
  const int64_t chunks = l.num_chunks();
  ChunkBreakdown c;
  for (int64_t k = 0; k < chunks; ++k) {
    const double n = static_cast<double>(l.partition[k]);
    Priced f = u.block_fwd.scaled(n), b = u.block_bwd.scaled(n);
    if (k == 0) {
      f += u.emb_fwd;
      b += u.emb_bwd;
    }
    if (k == chunks - 1) {
      f += u.head_fwd;
      b += u.head_bwd;
    }
    const double fold = fold_seconds(x, u, n, k == 0, k == chunks - 1);
    b.compute_s += fold;
    b.elementwise_s += fold;
    c.forward.push_back(f);
    c.backward.push_back(b);
    c.zero3_forward_s.push_back(n * u.zero3.first);
    c.zero3_backward_s.push_back(n * u.zero3.second);
  }
  return c;
}

core::Result<double> p2p_time_s(Context& x) {
  const Layout& l = x.in.layout;
  if (l.pp == 1) return 0.0;
  // Megatron's scatter-gather optimisation: each TP rank sends its 1/tp slice of [s, b, h]
  // (sequence parallelism shards it anyway); without it every TP rank sends all of it.
  const double slice = x.fw.pipeline_scatter_gather || l.sp ? static_cast<double>(l.tp) : 1.0;
  const double bytes = activation_bytes(l.precision) * static_cast<double>(l.seq * l.mbs) *
                       static_cast<double>(x.in.model.hidden_size) / slice;
  LOOM_ASSIGN_OR_RETURN(CommCost c, x.comm.estimate_layout(l, GroupKind::kPipeline,
                                                           CollectiveKind::kSendRecv, bytes));
  return c.time_s;
}

// After the pipeline: gradient reduction (exposed part), optimizer, ZeRO-1/2 parameter
// all-gather, tied-embedding sync; per stage.
struct StageTail {
  double dp_s = 0;         // exposed reduction + all-gathers + tied-embedding sync
  double optimizer_s = 0;
};

core::Result<StageTail> stage_tail(Context& x, const StageContents& c, double last_backward_s) {
  const Layout& l = x.in.layout;
  const double params = static_cast<double>(c.params);
  LOOM_ASSIGN_OR_RETURN(double grad_bytes, grad_reduce_bytes_per_param(x.fw, l));
  StageTail t;
  if (l.dp > 1 && l.zero < 3) {
    const auto kind = l.zero == 0 || x.fw.zero1_gradient_allreduce ? CollectiveKind::kAllReduce
                                                                    : CollectiveKind::kReduceScatter;
    LOOM_ASSIGN_OR_RETURN(CommCost reduce, x.comm.estimate_layout(l, GroupKind::kData, kind,
                                                                 grad_bytes * params));
    const double overlap = x.in.dp_comm_overlap.value_or(x.fw.dp_comm_overlap);
    const double hidden = std::min(reduce.time_s, overlap * last_backward_s);
    t.dp_s += reduce.time_s - hidden + hidden * x.fw.overlap_compute_slowdown;
    if (l.zero >= 1) {
      LOOM_ASSIGN_OR_RETURN(CommCost gather, x.comm.estimate_layout(
                                                 l, GroupKind::kData, CollectiveKind::kAllGather,
                                                 2.0 * params));
      t.dp_s += gather.time_s;
    }
  }
  if (x.in.model.tied_embeddings && l.pp > 1 && (c.has_embedding || c.has_lm_head)) {
    // Megatron all-reduces the word-embedding gradients between the first and last stage.
    const auto groups = layout_groups(l, GroupKind::kPipeline);
    const std::vector<int64_t> pair = {groups.front().front(), groups.front().back()};
    const double emb = static_cast<double>(x.in.model.padded_vocab(l.tp) / l.tp *
                                           x.in.model.hidden_size);
    LOOM_ASSIGN_OR_RETURN(CommCost sync, x.comm.estimate(CollectiveKind::kAllReduce, pair,
                                                         grad_bytes * emb));
    t.dp_s += sync.time_s;
  }
  // Adam over the local shard: read gradient, read/write master weights, m and v, write the
  // half-precision weights (4 + 8 + 8 + 8 + 2 bytes), plus one read for the gradient norm.
  const double shard = l.zero >= 1 ? params / static_cast<double>(l.dp) : params;
  const bool mixed = l.precision != core::Precision::kFp32;
  t.optimizer_s = x.compute.elementwise_time_s(shard * ((mixed ? 30.0 : 28.0) + 4.0));
  return t;
}

core::Result<Context> make_context(const StepTimeInput& in, CollectiveModel& comm) {
  if (!in.cluster.compute.present) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "cluster profile '{}' has no 'compute' section (GEMM and attention "
                       "efficiencies), so it supports memory estimates only; add one or run "
                       "`loom calibrate`",
                       in.cluster.name);
  }
  const FrameworkTraits& fw = in.traits ? *in.traits : framework_traits(in.framework);
  LOOM_RETURN_IF_ERROR(fw.check_layout(in.layout));
  OpOptions op_options;
  op_options.flash_attention = in.flash_attention.value_or(fw.flash_attention);
  op_options.dropout = in.dropout || fw.dropout;
  op_options.selective_recomputes_attention = fw.selective_drops_attention_output;
  return Context{in, fw, ComputeModel(in.cluster, in.layout.precision), comm, op_options};
}

}  // namespace

core::Result<UnitCosts> micro_batch_unit_costs(const StepTimeInput& in, CollectiveModel& comm) {
  LOOM_ASSIGN_OR_RETURN(Context x, make_context(in, comm));
  LOOM_ASSIGN_OR_RETURN(Units u, unit_costs(x));
  UnitCosts out;
  out.block_s = u.block_fwd.total() + u.block_bwd.total() + u.zero3.first + u.zero3.second +
                fold_seconds(x, u, 1.0, false, false);
  out.embedding_s = u.emb_fwd.total() + u.emb_bwd.total() + fold_seconds(x, u, 0, true, false);
  out.head_s = u.head_fwd.total() + u.head_bwd.total() + fold_seconds(x, u, 0, false, true);
  return out;
}

core::Result<StepTimeReport> simulate_step(const StepTimeInput& in, CollectiveModel* shared) {
  const Layout& l = in.layout;
  std::optional<CollectiveModel> own;
  if (!shared) {
    LOOM_ASSIGN_OR_RETURN(CollectiveModel created, CollectiveModel::create(in.cluster, l.gpus));
    own.emplace(std::move(created));
  }
  LOOM_ASSIGN_OR_RETURN(Context x, make_context(in, shared ? *shared : *own));
  const FrameworkTraits& fw = x.fw;

  LOOM_ASSIGN_OR_RETURN(ChunkBreakdown chunks, chunk_costs(x));
  LOOM_ASSIGN_OR_RETURN(double p2p, p2p_time_s(x));
  ChunkCosts costs;
  const int64_t chunk_count = static_cast<int64_t>(chunks.forward.size());
  for (int64_t k = 0; k < chunk_count; ++k) {
    costs.forward_s.push_back(chunks.forward[k].total() + chunks.zero3_forward_s[k]);
    costs.backward_s.push_back(chunks.backward[k].total() + chunks.zero3_backward_s[k]);
    if (fw.pipeline_p2p_blocking) {
      // The stage itself sends its output (and receives its input) before moving on.
      const double sends = (k + 1 < chunk_count ? 1.0 : 0.0) + (k > 0 ? 1.0 : 0.0);
      costs.forward_s.back() += sends * p2p;
      costs.backward_s.back() += sends * p2p;
    }
  }
  costs.p2p_s.assign(chunks.forward.size(), p2p);
  const PipelineResult pipe = simulate_pipeline(l, costs, in.record_trace);

  StepTimeReport r;
  r.bubble_fraction = pipe.bubble_fraction;
  // Busy time per stage, split by kind.
  const double m = static_cast<double>(l.num_microbatches());
  std::vector<Priced> busy(l.pp);
  std::vector<double> zero3(l.pp, 0.0);
  r.stage_forward_s.assign(l.pp, 0.0);
  r.stage_backward_s.assign(l.pp, 0.0);
  for (int64_t k = 0; k < l.num_chunks(); ++k) {
    const int64_t s = l.stage_of_chunk(k);
    busy[s] += chunks.forward[k].scaled(m);
    busy[s] += chunks.backward[k].scaled(m);
    zero3[s] += m * (chunks.zero3_forward_s[k] + chunks.zero3_backward_s[k]);
    r.stage_forward_s[s] += costs.forward_s[k];
    r.stage_backward_s[s] += costs.backward_s[k];
  }

  double step = 0;
  int64_t last_stage = 0;
  std::vector<StageTail> tails;
  for (int64_t s = 0; s < l.pp; ++s) {
    const double last_bwd = r.stage_backward_s[s] / static_cast<double>(l.vpp);
    LOOM_ASSIGN_OR_RETURN(StageTail t, stage_tail(x, stage_contents(in.model, l, s), last_bwd));
    const double end = pipe.last_backward_end_s[s] + t.dp_s + t.optimizer_s;
    if (end > step) {
      step = end;
      last_stage = s;
    }
    tails.push_back(t);
  }
  step += fw.iteration_overhead_s;
  r.step_time_s = step;

  // Breakdown on the critical stage (most busy time).
  int64_t crit = 0;
  for (int64_t s = 1; s < l.pp; ++s) {
    if (busy[s].total() + zero3[s] > busy[crit].total() + zero3[crit]) crit = s;
  }
  r.critical_stage = crit;
  StepBreakdown& b = r.breakdown;
  b.compute = busy[crit].compute_s;
  r.compute_gemm_s = busy[crit].gemm_s;
  r.compute_attention_s = busy[crit].attention_s;
  r.compute_elementwise_s = busy[crit].elementwise_s;
  b.tp_comm = busy[crit].tp_s;
  b.dp_comm = zero3[crit] + tails[last_stage].dp_s;
  b.optimizer = tails[last_stage].optimizer_s;
  b.other = fw.iteration_overhead_s;
  const double idle = std::max(0.0, pipe.makespan_s - busy[crit].total() - zero3[crit]);
  if (l.pp > 1 && p2p > 0) {
    ChunkCosts no_p2p = costs;
    no_p2p.p2p_s.assign(costs.p2p_s.size(), 0.0);
    const double without = simulate_pipeline(l, no_p2p).makespan_s;
    b.pp_comm = std::clamp(pipe.makespan_s - without, 0.0, idle);
  }
  b.bubble = idle - b.pp_comm;
  // Whatever the stages' tails do not cover exactly (the critical stage need not be the last
  // to finish) goes to the bubble so that the parts add up.
  const double accounted = b.compute + b.tp_comm + b.pp_comm + b.dp_comm + b.bubble +
                           b.optimizer + b.other;
  b.bubble += step - accounted;

  const FlopsPerToken flops = flops_per_iteration(in.model, l);
  const double gpus = static_cast<double>(l.gpus);
  r.tokens_per_s = static_cast<double>(l.gbs * l.seq) / step;
  r.tflops_per_gpu_model = flops.model / step / gpus / 1e12;
  r.tflops_per_gpu_hardware = flops.hardware / step / gpus / 1e12;
  r.mfu = r.tflops_per_gpu_model * 1e12 / x.compute.peak_flops();

  if (in.record_trace) {
    for (const PipelineTask& t : pipe.tasks) {
      const Priced& p = t.forward ? chunks.forward[t.chunk] : chunks.backward[t.chunk];
      const std::string stage = "stage " + std::to_string(t.stage);
      const std::string what = fmt::format("{} mb{} chunk{}", t.forward ? "forward" : "backward",
                                           t.microbatch, t.chunk);
      r.trace.push_back({what, stage + " compute", t.stage, t.start_s, t.end_s - t.start_s});
      if (p.tp_s > 0) {
        r.trace.push_back({"tp " + what, stage + " tp comm", t.stage, t.end_s - p.tp_s, p.tp_s});
      }
      if (p2p > 0 && ((t.forward && t.chunk + 1 < l.num_chunks()) || (!t.forward && t.chunk > 0))) {
        r.trace.push_back({"p2p " + what, stage + " pp comm", t.stage, t.end_s, p2p});
      }
    }
    for (int64_t s = 0; s < l.pp; ++s) {
      const std::string stage = "stage " + std::to_string(s);
      const double start = pipe.last_backward_end_s[s];
      if (tails[s].dp_s > 0) {
        r.trace.push_back({"dp gradient reduction", stage + " dp comm", s, start, tails[s].dp_s});
      }
      r.trace.push_back({"optimizer", stage + " compute", s, start + tails[s].dp_s, tails[s].optimizer_s});
    }
  }
  return r;
}

nlohmann::json step_time_json(const StepTimeReport& r) {
  const StepBreakdown& b = r.breakdown;
  return {
      {"step_time_s", r.step_time_s},
      {"tokens_per_s", r.tokens_per_s},
      {"tflops_per_gpu_model", r.tflops_per_gpu_model},
      {"tflops_per_gpu_hardware", r.tflops_per_gpu_hardware},
      {"mfu", r.mfu},
      {"breakdown_s",
       {{"compute", b.compute}, {"tp_comm", b.tp_comm}, {"pp_comm", b.pp_comm},
        {"dp_comm", b.dp_comm}, {"bubble", b.bubble}, {"optimizer", b.optimizer},
        {"other", b.other}}},
      {"compute_by_kind_s",
       {{"gemm", r.compute_gemm_s}, {"attention", r.compute_attention_s},
        {"elementwise", r.compute_elementwise_s}}},
      {"critical_stage", r.critical_stage},
      {"bubble_fraction", r.bubble_fraction},
      {"stage_forward_s", r.stage_forward_s},
      {"stage_backward_s", r.stage_backward_s},
  };
}

nlohmann::json chrome_trace_json(const StepTimeReport& r) { return core::chrome_trace_json(r.trace); }

}  // namespace loom::sim
