// Layout search: see search.h.
#include "planner/search.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <mutex>
#include <numeric>
#include <thread>

#include <fmt/format.h>

#include "core/units.h"
#include "planner/partition.h"
#include "simulator/memory_model.h"
#include "simulator/topology.h"

namespace loom::plan {

namespace {

int64_t field_value(const core::Layout& l, const std::string& field) {
  if (field == "tp") return l.tp;
  if (field == "pp") return l.pp;
  if (field == "dp") return l.dp;
  if (field == "vpp") return l.vpp;
  if (field == "zero") return l.zero;
  if (field == "mbs") return l.mbs;
  if (field == "sp") return l.sp ? 1 : 0;
  return static_cast<int64_t>(l.recompute);  // "recompute": none 0, selective 1, full 2
}

}  // namespace

core::Result<Constraint> parse_constraint(const std::string& text) {
  static const char* kOps[] = {"<=", ">=", "!=", "<", ">", "="};
  static const char* kFields[] = {"tp", "pp", "dp", "vpp", "zero", "mbs", "sp", "recompute"};
  for (const char* op : kOps) {
    const size_t at = text.find(op);
    if (at == std::string::npos) continue;
    Constraint c{text.substr(0, at), op, 0};
    if (std::find(std::begin(kFields), std::end(kFields), c.field) == std::end(kFields)) {
      return core::error(core::ErrorCode::kInvalidArgument,
                         "--constraint '{}': unknown field '{}' (allowed: tp, pp, dp, vpp, zero, "
                         "mbs, sp, recompute)",
                         text, c.field);
    }
    const std::string value = text.substr(at + std::string(op).size());
    if (c.field == "recompute") {
      LOOM_ASSIGN_OR_RETURN(core::Recompute r, core::parse_recompute(value));
      c.value = static_cast<int64_t>(r);
      return c;
    }
    try {
      size_t used = 0;
      c.value = std::stoll(value, &used);
      if (used != value.size()) throw std::invalid_argument(value);
    } catch (const std::exception&) {
      return core::error(core::ErrorCode::kInvalidArgument,
                         "--constraint '{}': '{}' is not an integer", text, value);
    }
    return c;
  }
  return core::error(core::ErrorCode::kInvalidArgument,
                     "--constraint '{}': expected FIELD OP VALUE, e.g. tp<=8, pp=4, zero>=1", text);
}

bool satisfies(const core::Layout& l, const Constraint& c) {
  const int64_t v = field_value(l, c.field);
  if (c.op == "<=") return v <= c.value;
  if (c.op == ">=") return v >= c.value;
  if (c.op == "<") return v < c.value;
  if (c.op == ">") return v > c.value;
  if (c.op == "!=") return v != c.value;
  return v == c.value;
}

namespace {

std::vector<int64_t> divisors(int64_t n, int64_t limit) {
  std::vector<int64_t> d;
  for (int64_t i = 1; i <= std::min(n, limit); ++i) {
    if (n % i == 0) d.push_back(i);
  }
  return d;
}

// A candidate without its recompute mode: recompute is tried from none to full and the first
// that fits dominates the rest (same everything, less compute).
struct Shape {
  core::Layout layout;
  bool fixed_recompute = false;  // a given layout (PlanRequest::only): keep its recompute mode
};

struct Enumeration {
  std::vector<Shape> shapes;
  std::map<std::string, int64_t> rejected;
  int64_t candidates = 0;
};

constexpr int64_t kMaxMicroBatch = 64;  // larger micro-batches only grow memory

bool allowed(const PlanRequest& r, const core::Layout& l) {
  for (const auto& c : r.constraints) {
    if (!satisfies(l, c)) return false;
  }
  return true;
}

void add_shapes_for(const PlanRequest& r, core::Layout base, Enumeration& e) {
  const core::ModelSpec& m = r.model;
  const int64_t per_dp = r.gbs / base.dp;
  for (int64_t mbs : divisors(per_dp, kMaxMicroBatch)) {
    base.mbs = mbs;
    const int64_t microbatches = per_dp / mbs;
    std::vector<int64_t> vpps = {1};
    if (base.pp > 1) {
      for (int64_t v : {2, 3, 4, 6, 8}) {
        if (m.num_layers % (base.pp * v) == 0 && microbatches % base.pp == 0) vpps.push_back(v);
      }
    }
    for (int64_t vpp : vpps) {
      base.vpp = vpp;
      for (bool sp : {false, true}) {
        if (sp && (base.tp == 1 || r.seq % base.tp != 0)) continue;
        base.sp = sp;
        // ZeRO shards over data parallelism: with dp 1 every stage is stage 0.
        for (int zero = 0; zero <= (base.dp > 1 ? 3 : 0); ++zero) {
          base.zero = zero;
          const int64_t recomputes = 3;
          e.candidates += recomputes;
          bool any = false, supported = false;
          for (auto rc : {core::Recompute::kNone, core::Recompute::kSelective, core::Recompute::kFull}) {
            base.recompute = rc;
            supported = supported || sim::framework_traits(r.framework).check_layout(base).ok();
            any = any || allowed(r, base);
          }
          if (!supported) {
            e.rejected["the framework cannot run it (ZeRO-2/3 with pp > 1, SP or vpp in DeepSpeed)"] += recomputes;
            continue;
          }
          if (!any) {
            e.rejected["excluded by --constraint"] += recomputes;
            continue;
          }
          e.shapes.push_back({base});
        }
      }
    }
  }
}

Enumeration enumerate(const PlanRequest& r) {
  Enumeration e;
  const core::ModelSpec& m = r.model;
  const int64_t max_tp = std::min<int64_t>(r.gpus, r.cluster.gpus_per_node);
  for (int64_t tp : divisors(r.gpus, r.gpus)) {
    if (tp > max_tp) break;
    if (m.num_heads % tp || m.num_kv_heads % tp || m.ffn_hidden_size % tp) {
      ++e.rejected["tp does not divide the heads, K/V heads or FFN width"];
      continue;
    }
    for (int64_t pp : divisors(r.gpus / tp, m.num_layers)) {
      core::Layout l;
      l.gpus = r.gpus;
      l.tp = tp;
      l.pp = pp;
      l.dp = r.gpus / (tp * pp);
      l.gbs = r.gbs;
      l.seq = r.seq;
      l.precision = r.precision;
      if (r.gbs % l.dp != 0) {
        ++e.rejected["global batch not divisible by dp"];
        continue;
      }
      add_shapes_for(r, l, e);
    }
  }
  return e;
}

Enumeration from_list(const PlanRequest& r) {
  Enumeration e;
  for (core::Layout l : r.only) {
    l.gpus = r.gpus;
    l.gbs = r.gbs;
    l.seq = r.seq;
    l.precision = r.precision;
    e.candidates += 1;
    e.shapes.push_back({l, true});
  }
  return e;
}

struct Outcome {
  enum class Kind { kFits, kOverMemory, kRejected } kind = Kind::kRejected;
  Evaluated eval;
  std::string reason;
  double over_bytes = 0;
};

struct Worker {
  const PlanRequest& request;
  sim::CollectiveModel comm;
};

sim::StepTimeInput step_input(const PlanRequest& r, const core::Layout& l) {
  sim::StepTimeInput in;
  in.model = r.model;
  in.cluster = r.cluster;
  in.layout = l;
  in.framework = r.framework;
  in.traits = r.traits;
  return in;
}

// Resolves the layout with the best partition (vpp = 1) or the uniform one (interleaved).
core::Result<Outcome> place(Worker& w, core::Layout l) {
  const PlanRequest& r = w.request;
  Outcome o;
  if (l.vpp == 1 && l.partition.empty()) {
    l.partition = core::partition_blocks(r.model.num_layers, l.pp, core::PartitionMethod::kUniform);
    auto resolved = core::resolve_layout(l, r.model);
    if (!resolved.ok()) return resolved.status();
    sim::MemoryModelInput mem{r.model, r.cluster, *resolved, r.framework, std::nullopt, false};
    mem.describe_stages = false;
    LOOM_ASSIGN_OR_RETURN(auto lines, sim::stage_memory_lines(mem));
    LOOM_ASSIGN_OR_RETURN(sim::UnitCosts units, sim::micro_batch_unit_costs(step_input(r, *resolved), w.comm));
    const PartitionResult part = optimal_partition(r.model.num_layers, units, lines,
                                                   core::gib_to_bytes(r.cluster.usable_memory_gib()));
    if (!part.feasible) {
      // No partition fits: report it with the blocks-only split and its fullest stage.
      const double capacity = core::gib_to_bytes(r.cluster.usable_memory_gib());
      o.kind = Outcome::Kind::kOverMemory;
      o.over_bytes = part.over_bytes;
      o.eval.layout = *resolved;
      o.eval.peak_stage = part.worst_stage;
      o.eval.capacity_gib = core::bytes_to_gib(capacity);
      o.eval.peak_gib = core::bytes_to_gib(capacity + part.over_bytes);
      return o;
    }
    l.partition = part.blocks;
  }
  auto resolved = core::resolve_layout(l, r.model);
  if (!resolved.ok()) return resolved.status();
  o.eval.layout = *resolved;
  sim::MemoryModelInput mem{r.model, r.cluster, *resolved, r.framework, std::nullopt, false};
  mem.describe_stages = false;
  LOOM_ASSIGN_OR_RETURN(sim::MemoryReport report, sim::estimate_memory(mem));
  o.eval.peak_gib = report.peak_gib();
  o.eval.peak_stage = report.peak_stage;
  o.eval.capacity_gib = core::bytes_to_gib(report.capacity_bytes);
  o.eval.checkpoint_bytes = report.checkpoint.bytes;
  o.eval.checkpoint_write_s = report.checkpoint.write_time_s;
  o.kind = report.fits ? Outcome::Kind::kFits : Outcome::Kind::kOverMemory;
  o.over_bytes = report.peak_bytes - report.capacity_bytes;
  return o;
}

}  // namespace

namespace {

struct ThreadResult {
  std::vector<Evaluated> fits;
  std::optional<Evaluated> best_rejected;
  double best_rejected_over_bytes = 0;
  std::map<std::string, int64_t> rejected;
  int64_t simulated = 0;
};

core::Status simulate_into(Worker& w, Evaluated& e, ThreadResult& out) {
  LOOM_ASSIGN_OR_RETURN(e.step, sim::simulate_step(step_input(w.request, e.layout), &w.comm));
  ++out.simulated;
  return core::ok_status();
}

// Recompute from none to full: the first mode that fits dominates the slower ones.
core::Status evaluate_shape(Worker& w, const Shape& shape, ThreadResult& out) {
  bool placed = false;
  for (auto rc : {core::Recompute::kNone, core::Recompute::kSelective, core::Recompute::kFull}) {
    core::Layout l = shape.layout;
    if (shape.fixed_recompute && rc != l.recompute) continue;
    l.recompute = rc;
    if (!allowed(w.request, l)) continue;
    if (!sim::framework_traits(w.request.framework).check_layout(l).ok()) {
      ++out.rejected["the framework cannot run it (ZeRO-2/3 with pp > 1, SP or vpp in DeepSpeed)"];
      continue;
    }
    if (placed) {
      ++out.rejected["pruned: a lighter recompute mode already fits (dominated)"];
      continue;
    }
    auto outcome = place(w, l);
    if (!outcome.ok()) {
      ++out.rejected["invalid layout: " + outcome.status().message().substr(0, 60)];
      continue;
    }
    Outcome& o = *outcome;
    if (o.kind == Outcome::Kind::kOverMemory) {
      ++out.rejected["over memory on some stage"];
      const bool candidate_for_report = rc == core::Recompute::kNone && !o.eval.layout.partition.empty();
      if (candidate_for_report && o.eval.peak_gib > 0) {
        LOOM_RETURN_IF_ERROR(simulate_into(w, o.eval, out));
        if (!out.best_rejected || o.eval.step.step_time_s < out.best_rejected->step.step_time_s) {
          out.best_rejected = o.eval;
          out.best_rejected_over_bytes = o.over_bytes;
        }
      }
      continue;
    }
    LOOM_RETURN_IF_ERROR(simulate_into(w, o.eval, out));
    out.fits.push_back(std::move(o.eval));
    placed = true;
  }
  return core::ok_status();
}

std::string component_of_difference(const sim::StepBreakdown& a, const sim::StepBreakdown& b) {
  const std::pair<const char*, double> parts[] = {
      {"compute", b.compute - a.compute}, {"tensor-parallel communication", b.tp_comm - a.tp_comm},
      {"pipeline transfers", b.pp_comm - a.pp_comm}, {"data-parallel communication", b.dp_comm - a.dp_comm},
      {"pipeline bubble", b.bubble - a.bubble}, {"optimizer", b.optimizer - a.optimizer}};
  const auto* worst = std::max_element(std::begin(parts), std::end(parts),
                                       [](const auto& x, const auto& y) { return x.second < y.second; });
  return fmt::format("+{:.3f} s of {}", worst->second, worst->first);
}

void explain(const PlanRequest& r, PlanResult& result, double over_bytes) {
  if (result.top.size() >= 2) {
    const Evaluated& best = result.top[0];
    const Evaluated& second = result.top[1];
    const double slower = 100.0 * (second.step.step_time_s / best.step.step_time_s - 1.0);
    result.runner_up_reason = fmt::format(
        "runner-up {} is {:.1f}% slower: {}", second.layout.summary(), slower,
        component_of_difference(best.step.breakdown, second.step.breakdown));
  }
  if (result.best_rejected) {
    const Evaluated& e = *result.best_rejected;
    std::string faster;
    if (!result.top.empty()) {
      const double gain = 100.0 * (1.0 - e.step.step_time_s / result.top[0].step.step_time_s);
      faster = gain > 0 ? fmt::format("; it would be {:.1f}% faster than the chosen plan", gain)
                        : fmt::format("; it would also be {:.1f}% slower", -gain);
    }
    result.best_rejected_reason = fmt::format(
        "fastest rejected {}: over memory by {:.2f} GiB on stage {} (usable {:.2f} GiB){}",
        e.layout.summary(), core::bytes_to_gib(over_bytes), e.peak_stage,
        r.cluster.usable_memory_gib(), faster);
  }
}

// The chosen plan against the same layout with only the blocks balanced (the embedding and
// the LM head on top of the first and last stage): what counting them as work buys.
core::Status compare_partition(const PlanRequest& r,
                               const std::shared_ptr<const sim::ClusterTopology>& topology,
                               PlanResult& result) {
  const Evaluated& best = result.top[0];
  if (best.layout.vpp != 1 || best.layout.pp == 1) return core::ok_status();
  core::Layout even = best.layout;
  even.partition = core::partition_blocks(r.model.num_layers, even.pp, core::PartitionMethod::kUniform);
  if (even.partition == best.layout.partition) return core::ok_status();
  Worker w{r, sim::CollectiveModel(topology)};
  sim::MemoryModelInput mem{r.model, r.cluster, even, r.framework, std::nullopt, false};
  mem.describe_stages = false;
  LOOM_ASSIGN_OR_RETURN(sim::MemoryReport report, sim::estimate_memory(mem));
  LOOM_ASSIGN_OR_RETURN(sim::StepTimeReport step, sim::simulate_step(step_input(r, even), &w.comm));
  std::string parts;
  for (int64_t n : even.partition) parts += (parts.empty() ? "" : ",") + std::to_string(n);
  result.partition_note = fmt::format(
      "blocks-only split {} would take {:.3f} s ({:+.1f}%), peak {:.1f} GiB on stage {}{}", parts,
      step.step_time_s, 100.0 * (step.step_time_s / best.step.step_time_s - 1.0),
      report.peak_gib(), report.peak_stage, report.fits ? "" : " (does not fit)");
  return core::ok_status();
}

}  // namespace

core::Result<PlanResult> search_plans(const PlanRequest& r,
                                      const std::function<void(int64_t, int64_t)>& progress) {
  const auto start = std::chrono::steady_clock::now();
  if (r.gpus <= 0 || r.gbs <= 0 || r.seq <= 0) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "--gpus {}, --gbs {} and --seq {} must all be positive", r.gpus, r.gbs, r.seq);
  }
  LOOM_ASSIGN_OR_RETURN(sim::ClusterTopology topology, sim::ClusterTopology::build(r.cluster, r.gpus));
  auto shared_topology = std::make_shared<const sim::ClusterTopology>(std::move(topology));
  Enumeration e = r.only.empty() ? enumerate(r) : from_list(r);

  const int threads = std::max(1, r.threads > 0 ? r.threads
                                                : static_cast<int>(std::thread::hardware_concurrency()));
  std::vector<ThreadResult> per_thread(threads);
  std::vector<core::Status> errors(threads);
  std::atomic<int64_t> done{0};
  std::mutex progress_mutex;
  auto run = [&](int t) {
    Worker w{r, sim::CollectiveModel(shared_topology)};
    for (size_t i = t; i < e.shapes.size(); i += threads) {
      const core::Status st = evaluate_shape(w, e.shapes[i], per_thread[t]);
      if (!st.ok() && errors[t].ok()) errors[t] = st;
      const int64_t n = ++done;
      if (progress && (n % 64 == 0 || n == static_cast<int64_t>(e.shapes.size()))) {
        std::lock_guard<std::mutex> lock(progress_mutex);
        progress(n, static_cast<int64_t>(e.shapes.size()));
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(run, t);
  run(0);
  for (auto& th : pool) th.join();
  for (const auto& st : errors) LOOM_RETURN_IF_ERROR(st);

  PlanResult result;
  result.candidates = e.candidates;
  result.rejected = e.rejected;
  double over = 0;
  std::vector<Evaluated> fits;
  for (auto& t : per_thread) {
    result.simulated += t.simulated;
    for (const auto& [k, v] : t.rejected) result.rejected[k] += v;
    for (auto& f : t.fits) fits.push_back(std::move(f));
    if (t.best_rejected && (!result.best_rejected ||
                            t.best_rejected->step.step_time_s < result.best_rejected->step.step_time_s)) {
      result.best_rejected = t.best_rejected;
      over = t.best_rejected_over_bytes;
    }
  }
  std::sort(fits.begin(), fits.end(), [](const Evaluated& a, const Evaluated& b) {
    return a.step.step_time_s < b.step.step_time_s;
  });
  if (fits.size() > static_cast<size_t>(r.top_k)) fits.resize(r.top_k);
  result.top = std::move(fits);
  explain(r, result, over);
  if (!result.top.empty()) LOOM_RETURN_IF_ERROR(compare_partition(r, shared_topology, result));
  result.wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

Plan make_plan(const PlanRequest& r, const Evaluated& e) {
  Plan p;
  p.model = r.model;
  p.cluster = r.cluster_name;
  p.framework = r.framework;
  p.layout = e.layout;
  Prediction& x = p.predicted;
  x.step_time_s = e.step.step_time_s;
  x.tokens_per_s = e.step.tokens_per_s;
  x.mfu = e.step.mfu;
  x.tflops_per_gpu_model = e.step.tflops_per_gpu_model;
  x.peak_gib = e.peak_gib;
  x.peak_stage = e.peak_stage;
  x.bubble_fraction = e.step.bubble_fraction;
  x.exposed_comm_s = e.step.breakdown.tp_comm + e.step.breakdown.pp_comm + e.step.breakdown.dp_comm;
  x.checkpoint_bytes = e.checkpoint_bytes;
  x.checkpoint_write_s = e.checkpoint_write_s;
  return p;
}

}  // namespace loom::plan
