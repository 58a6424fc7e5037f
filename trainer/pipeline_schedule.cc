// Pipeline schedules: see pipeline_schedule.h.
#include "trainer/pipeline_schedule.h"

#include <algorithm>

namespace loom::train {

namespace {

// Interleaved 1F1B: the k-th forward (backward) of a rank runs chunk
// (k mod (pp vpp)) / pp (counted from the last chunk for backwards) on micro-batch
// (k / (pp vpp)) pp + k mod pp.
PipelineAction interleaved_action(bool forward, int64_t k, int64_t pp, int64_t vpp) {
  const int64_t group = pp * vpp;
  int64_t chunk = (k % group) / pp;
  if (!forward) chunk = vpp - 1 - chunk;
  return {forward, chunk, (k / group) * pp + k % pp};
}

}  // namespace

core::Result<std::vector<PipelineAction>> pipeline_schedule(core::PipelineSchedule kind,
                                                            int64_t pp, int64_t vpp,
                                                            int64_t microbatches, int64_t rank) {
  if (pp < 1 || vpp < 1 || microbatches < 1 || rank < 0 || rank >= pp) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "pipeline schedule: pp {} vpp {} micro-batches {} rank {} (all must be "
                       "positive, rank below pp)",
                       pp, vpp, microbatches, rank);
  }
  std::vector<PipelineAction> out;
  if (vpp == 1) {
    const int64_t warmup = kind == core::PipelineSchedule::kGPipe
                               ? microbatches
                               : std::min(pp - rank - 1, microbatches);
    int64_t next_f = 0, next_b = 0;
    for (; next_f < warmup; ++next_f) out.push_back({true, 0, next_f});
    while (next_f < microbatches) {  // steady state: one forward, one backward
      out.push_back({true, 0, next_f++});
      out.push_back({false, 0, next_b++});
    }
    while (next_b < microbatches) out.push_back({false, 0, next_b++});
    return out;
  }
  if (kind == core::PipelineSchedule::kGPipe) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "--schedule gpipe with vpp {}: interleaving is a 1F1B schedule (use "
                       "--schedule 1f1b or vpp 1)",
                       vpp);
  }
  if (microbatches % pp != 0) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "interleaved 1F1B (vpp {}) needs the micro-batches per data-parallel rank "
                       "({}) to be a multiple of pp ({}), as in Megatron-LM",
                       vpp, microbatches, pp);
  }
  const int64_t total = microbatches * vpp;
  // Megatron-LM: all forwards first when there are only pp micro-batches, else
  // 2 (pp - rank - 1) + (vpp - 1) pp warm-up forwards.
  const int64_t warmup =
      microbatches == pp ? total : std::min(total, 2 * (pp - rank - 1) + (vpp - 1) * pp);
  for (int64_t k = 0; k < warmup; ++k) out.push_back(interleaved_action(true, k, pp, vpp));
  for (int64_t k = 0; k < total - warmup; ++k) {
    out.push_back(interleaved_action(true, warmup + k, pp, vpp));
    out.push_back(interleaved_action(false, k, pp, vpp));
  }
  for (int64_t k = total - warmup; k < total; ++k)
    out.push_back(interleaved_action(false, k, pp, vpp));
  return out;
}

}  // namespace loom::train
