// `loom train --tp T --pp P --dp D --zero S` on the CPU: the parallel trainer
// (trainer/parallel_trainer.h) with T x P x D ranks in Megatron's rank order, as threads of
// this process (the thread backend), or as the processes of an `mpirun -np N` launch (the MPI
// backend; comm/launch_env.h detects it). Every rank draws the same stream of batches (as the
// single-process trainer does), runs its part of each global batch, and rank 0 prints
// Megatron-style iteration lines and returns the summary. Checkpoints (--save,
// --save-interval, --resume) are sharded with a global manifest (sharded_checkpoint.h), so a run
// resumes under any layout, or on the single-process trainer (and the other way round: every
// layout reads the single-process format too); --debug-kill-at N kills the last rank after
// iteration N, --debug-hang-at N makes it stop answering (MPI launches only). The spike guard
// runs as in the single-process trainer (every rank judges the same loss and gradient norm:
// skips, rollbacks to the last sharded checkpoint), and so do --eval-interval and the final
// validation loss (forward only through the pipeline, batches shared by the DP ranks).
#pragma once

#include <cstdint>
#include <ostream>

#include "core/layout.h"
#include "core/status.h"
#include "trainer/train_config.h"
#include "trainer/trainer.h"

namespace loom::train {

// layout: tp, pp, vpp, dp, zero, schedule, partition_method / partition (mbs, gbs, seq and
// recompute come from cfg; the layout is resolved here against the model). Fills this process's
// summary (rank 0's under the thread backend); *reporting is false on the MPI ranks other than
// 0, which print nothing. *resolved (optional) receives the resolved layout.
core::Status run_parallel_training(const TrainConfig& cfg, const core::Layout& layout,
                                   std::ostream* out, TrainSummary* summary, bool* reporting,
                                   core::Layout* resolved = nullptr);

}  // namespace loom::train
