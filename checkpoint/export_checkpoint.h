// `loom export-hf` minus the command line: reads a Loom checkpoint (a step directory, or a root
// whose newest complete checkpoint is taken), rebuilds the ModelSpec from meta["model_yaml"]
// (written by core::model_to_yaml) and exports its "model" shard with export_hf. Lives in the
// library so that it is tested without the loom binary (tests/checkpoint/
// export_checkpoint_test.cc); cli/export_hf_command.cc only parses flags and prints.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "checkpoint/checkpoint_store.h"
#include "checkpoint/hf_export.h"
#include "core/model_spec.h"
#include "core/status.h"

namespace loom::ckpt {

// The shard that holds the model parameters, under Loom's names (see hf_export.h).
inline constexpr const char* kModelShard = "model";
// The checkpoint meta key holding the model's preset YAML (core::model_to_yaml).
inline constexpr const char* kModelYamlKey = "model_yaml";

struct CheckpointExport {
  std::string checkpoint_dir;  // the step directory that was exported
  int64_t step = 0;
  core::ModelSpec spec;
  HfExportReport report;
  std::vector<std::string> warnings;  // newer checkpoints skipped as corrupt or incomplete
};

// The ModelSpec in a checkpoint's meta: meta["model_yaml"] is a YAML string. `origin` names
// the checkpoint in errors.
core::Result<core::ModelSpec> spec_from_checkpoint_meta(const nlohmann::json& meta,
                                                        const std::string& origin);

// The model's tensors under Loom's names from a loaded checkpoint (its "model*" shards).
using ModelTensors = std::function<core::Result<std::vector<Tensor>>(const CheckpointData&,
                                                                     const core::ModelSpec&)>;

// `checkpoint`: a step directory (it holds manifest.json or COMPLETE) or a checkpoint root.
// `model_tensors` turns what was read into the model's tensors; empty: the "model" shard as it
// is (a sharded checkpoint needs the trainer's assembly, train::checkpoint_model_tensors).
core::Result<CheckpointExport> export_hf_from_checkpoint(const std::string& checkpoint,
                                                         const std::string& out_dir, DType dtype,
                                                         int64_t max_shard_bytes,
                                                         const ModelTensors& model_tensors = {});

}  // namespace loom::ckpt
