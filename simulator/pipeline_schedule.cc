// Pipeline schedule simulation: see pipeline_schedule.h. Orders follow Megatron-LM's
// schedules.py (forward_backward_pipelining_without_interleaving / _with_interleaving).
#include "simulator/pipeline_schedule.h"

#include <algorithm>
#include <limits>

namespace loom::sim {

namespace {

constexpr double kUnset = -1.0;

// Interleaved schedule: the k-th forward (or backward) of a stage runs which model chunk and
// which micro-batch (Megatron: get_model_chunk_id, micro-batches advance in groups of pp).
TaskRef interleaved_task(const core::Layout& l, int64_t stage, int64_t k, bool forward) {
  const int64_t group = l.pp * l.vpp;
  int64_t chunk_id = (k % group) / l.pp;
  if (!forward) chunk_id = l.vpp - 1 - chunk_id;
  const int64_t microbatch = (k / group) * l.pp + k % l.pp;
  return {forward, chunk_id * l.pp + stage, microbatch};
}

}  // namespace

std::vector<TaskRef> stage_task_order(const core::Layout& l, int64_t stage) {
  const int64_t m = l.num_microbatches();
  std::vector<TaskRef> order;
  if (l.schedule == core::PipelineSchedule::kGPipe) {
    for (int64_t i = 0; i < m; ++i) order.push_back({true, stage, i});
    for (int64_t i = 0; i < m; ++i) order.push_back({false, stage, i});
    return order;
  }
  const int64_t total = m * l.vpp;
  const int64_t warmup = l.vpp == 1 ? std::min(l.pp - stage - 1, m)
                                    : std::min((l.pp - stage - 1) * 2 + (l.vpp - 1) * l.pp, total);
  auto fwd = [&](int64_t k) {
    return l.vpp == 1 ? TaskRef{true, stage, k} : interleaved_task(l, stage, k, true);
  };
  auto bwd = [&](int64_t k) {
    return l.vpp == 1 ? TaskRef{false, stage, k} : interleaved_task(l, stage, k, false);
  };
  for (int64_t k = 0; k < warmup; ++k) order.push_back(fwd(k));
  for (int64_t k = 0; k < total - warmup; ++k) {  // steady state: one forward, one backward
    order.push_back(fwd(warmup + k));
    order.push_back(bwd(k));
  }
  for (int64_t k = total - warmup; k < total; ++k) order.push_back(bwd(k));
  return order;
}

PipelineResult simulate_pipeline(const core::Layout& l, const ChunkCosts& costs, bool record_tasks) {
  const int64_t chunks = l.num_chunks();
  const int64_t m = l.num_microbatches();
  // end time of F and B of (chunk, micro-batch)
  std::vector<double> f_end(chunks * m, kUnset), b_end(chunks * m, kUnset);
  std::vector<std::vector<TaskRef>> orders(l.pp);
  for (int64_t s = 0; s < l.pp; ++s) orders[s] = stage_task_order(l, s);

  PipelineResult r;
  r.busy_s.assign(l.pp, 0.0);
  r.last_backward_end_s.assign(l.pp, 0.0);
  std::vector<size_t> next(l.pp, 0);
  std::vector<double> free_at(l.pp, 0.0);
  size_t remaining = 0;
  for (const auto& o : orders) remaining += o.size();

  // Sweep the stages, running every task whose input is ready, until all have run. Each sweep
  // makes progress because the earliest unfinished task in dependency order is always ready.
  while (remaining > 0) {
    bool progressed = false;
    for (int64_t s = 0; s < l.pp; ++s) {
      while (next[s] < orders[s].size()) {
        const TaskRef t = orders[s][next[s]];
        double ready = 0;
        if (t.forward && t.chunk > 0) {
          const double dep = f_end[(t.chunk - 1) * m + t.microbatch];
          if (dep == kUnset) break;
          ready = dep + costs.p2p_s[t.chunk - 1];
        } else if (!t.forward) {
          const bool last = t.chunk == chunks - 1;
          const double dep = last ? f_end[t.chunk * m + t.microbatch]
                                  : b_end[(t.chunk + 1) * m + t.microbatch];
          if (dep == kUnset) break;
          ready = last ? dep : dep + costs.p2p_s[t.chunk];
        }
        const double start = std::max(free_at[s], ready);
        const double duration = t.forward ? costs.forward_s[t.chunk] : costs.backward_s[t.chunk];
        const double end = start + duration;
        (t.forward ? f_end : b_end)[t.chunk * m + t.microbatch] = end;
        free_at[s] = end;
        r.busy_s[s] += duration;
        if (!t.forward) r.last_backward_end_s[s] = end;
        if (record_tasks) r.tasks.push_back({s, t.chunk, t.microbatch, t.forward, start, end});
        ++next[s];
        --remaining;
        progressed = true;
      }
    }
    if (!progressed) break;  // cannot happen for a valid schedule; guards against a bad order
  }
  r.makespan_s = *std::max_element(free_at.begin(), free_at.end());
  double busy = 0;
  for (double b : r.busy_s) busy += b;
  r.bubble_fraction = r.makespan_s > 0 ? 1.0 - busy / (static_cast<double>(l.pp) * r.makespan_s) : 0;
  return r;
}

}  // namespace loom::sim
