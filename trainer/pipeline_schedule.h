// The order in which one pipeline rank runs the forward and backward passes of its
// micro-batches: GPipe (all forwards, then all backwards), 1F1B (PipeDream-Flush, Narayanan et
// al. 2021 Sec. 2.2: pp - rank - 1 warm-up forwards, then one forward / one backward, then the
// remaining backwards), and interleaved 1F1B over vpp model chunks per rank (Narayanan et al.
// 2021 Sec. 2.2, Megatron-LM's forward_backward_pipelining_with_interleaving: micro-batches go
// through the chunks in groups of pp). Tested in tests/trainer/pipeline_schedule_test.cc by
// running every rank's list against the data dependencies of the pipeline (no deadlock, each
// backward after its forward) and by counting the micro-batches in flight.
#pragma once

#include <cstdint>
#include <vector>

#include "core/layout.h"
#include "core/status.h"

namespace loom::train {

struct PipelineAction {
  bool forward = true;
  int64_t chunk = 0;        // model chunk on this rank (virtual stage chunk * pp + rank)
  int64_t microbatch = 0;   // 0 .. microbatches - 1
};

// The actions of pipeline rank `rank` of `pp` for `microbatches` micro-batches over `vpp`
// chunks. Interleaving (vpp > 1) needs the micro-batch count to be a multiple of pp (as in
// Megatron-LM); an error says so.
core::Result<std::vector<PipelineAction>> pipeline_schedule(core::PipelineSchedule kind,
                                                            int64_t pp, int64_t vpp,
                                                            int64_t microbatches, int64_t rank);

}  // namespace loom::train
