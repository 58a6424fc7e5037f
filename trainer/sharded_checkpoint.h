// Sharded training checkpoints of the parallel trainer (issue 7). No rank ever holds the whole
// model: the data-parallel rank 0 of every (tp, pp) position writes its model-parallel shard
// -- model-t<T>-p<P>.safetensors (its weights) and optimizer-t<T>-p<P>.safetensors (its Adam
// moments, gathered over data parallelism), every tensor in its local shape, copies kept by
// other ranks left out -- and world rank 0 commits the step with a global manifest: for every
// tensor its global shape and the pieces that hold it (file, local shape, the dimension it is
// cut along and where its slice starts). Any layout reads any other's checkpoint through that
// manifest (assemble_sharded), as does the single-process trainer, `loom eval` and
// `loom export-hf`. Publication is checkpoint_store.h's: staged, fsynced, renamed into place,
// COMPLETE marker last. Tested in tests/trainer/parallel_run_test.cc (TP2 PP2 <-> single
// process, DP4 ZeRO-3 -> DP2 ZeRO-1, kill -9 resume under mpirun).
#pragma once

#include <string>

#include "checkpoint/checkpoint_store.h"
#include "comm/process_groups.h"
#include "core/layout.h"
#include "core/model_spec.h"
#include "core/status.h"
#include "trainer/param_layout.h"
#include "trainer/parallel_trainer.h"
#include "trainer/train_config.h"
#include "trainer/trainer.h"

namespace loom::train {

inline constexpr const char* kShardedFormat = "loom-train-sharded-v1";

// Writes the run's checkpoint of iteration state.step under cfg.save (state: everything but the
// tensors, which come from `trainer`). Collective over `world` (every rank calls it); a failure
// on any rank fails it on every rank.
core::Status save_sharded_trainer_state(const TrainConfig& cfg, const core::ModelSpec& spec,
                                        const core::Layout& layout, ParallelTrainer& trainer,
                                        const comm::ProcessGroups& groups,
                                        comm::Communicator& world, const TrainerState& state,
                                        const std::string& why);

// Fills `flat` (the whole model, `full`'s order) with the tensors named prefix + name ("" for
// the weights, "exp_avg." and "exp_avg_sq." for the moments) of a sharded checkpoint `d`, read
// through its manifest; errors name the tensor that is missing, misshapen or not covered.
core::Status assemble_sharded(const ckpt::CheckpointData& d, const ParamLayout& full,
                              const std::string& prefix, const std::string& origin, float* flat);

}  // namespace loom::train
