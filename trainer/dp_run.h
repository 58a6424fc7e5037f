// `loom train --dp N --zero S` on the CPU: data-parallel training (trainer/data_parallel.h)
// with N ranks, as threads of this process (the thread backend), or as the processes of an
// `mpirun -np N` launch (the MPI backend; comm/launch_env.h detects it). Every rank draws the
// same stream of batches (as the single-process trainer does), runs its share of each global
// batch, and rank 0 prints Megatron-style iteration lines and returns the summary; with --dp 1
// it is the single-process iteration without the spike guard. Checkpoints (--save,
// --save-interval, --resume): the moments are gathered from the ZeRO shards and rank 0 writes
// the single-process format, so a run resumes under any --dp / --zero, or on the single-process
// trainer (and the other way round); --debug-kill-at N kills the last rank after iteration N.
// Not on this path yet, and refused by name: evaluation intervals and the spike guard's fault
// injection; the guard is announced as not running.
#pragma once

#include <cstdint>
#include <ostream>

#include "core/status.h"
#include "trainer/train_config.h"
#include "trainer/trainer.h"

namespace loom::train {

// dp >= 1; zero 0, 1 or 2. Fills this process's summary (rank 0's under the thread backend);
// *reporting is false on the MPI ranks other than 0, which print nothing.
core::Status run_data_parallel_training(const TrainConfig& cfg, int64_t dp, int zero,
                                        std::ostream* out, TrainSummary* summary, bool* reporting);

}  // namespace loom::train
