// `loom train --dp N --zero S` on the CPU: data-parallel training (trainer/data_parallel.h)
// with N ranks, as threads of this process (the thread backend), or as the processes of an
// `mpirun -np N` launch (the MPI backend; comm/launch_env.h detects it). Every rank draws the
// same stream of batches (as the single-process trainer does), runs its share of each global
// batch, and rank 0 prints Megatron-style iteration lines and returns the summary; with --dp 1
// it is the single-process iteration without the spike guard. Not on this path yet, and refused
// by name: checkpoints (--save / --resume), evaluation intervals, recompute other than none is
// allowed, fault injection; the spike guard is announced as not running.
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
