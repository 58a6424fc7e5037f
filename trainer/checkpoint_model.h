// Loading a trained model back from a Loom checkpoint for evaluation (`loom eval`): the spec
// stored in the checkpoint, its weights in the model's flat layout and the resolved config of
// the run that wrote it.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "checkpoint/checkpoint_store.h"
#include "core/model_spec.h"
#include "core/status.h"

namespace loom::train {

struct CheckpointModel {
  core::ModelSpec spec;
  std::vector<float> params;  // ParamLayout(spec) order
  nlohmann::json config;      // the run's resolved TrainConfig
  int64_t step = 0;
};

// `path`: one checkpoint directory (holding manifest.json), or a --save root (its newest
// complete checkpoint; corrupt ones are skipped with a line in *warnings).
core::Result<CheckpointModel> load_checkpoint_model(const std::string& path,
                                                    std::vector<std::string>* warnings);

// The whole model's tensors (ParamLayout(spec) names and shapes) of a checkpoint read with its
// "model*" shards: the "model" shard of the single-process format, or the pieces of a sharded
// one assembled through its manifest (ckpt::ModelTensors for `loom export-hf`).
core::Result<std::vector<ckpt::Tensor>> checkpoint_model_tensors(const ckpt::CheckpointData& d,
                                                                 const core::ModelSpec& spec);

}  // namespace loom::train
