// Checkpoint -> Hugging Face folder: see export_checkpoint.h. Only the "model" shard(s) are
// read, so an export does not load (or need intact) the optimizer state. Tested in
// tests/checkpoint/export_checkpoint_test.cc.
#include "checkpoint/export_checkpoint.h"

#include <yaml-cpp/yaml.h>

#include "checkpoint/checkpoint_store.h"
#include "core/model_io.h"

namespace loom::ckpt {

using core::ErrorCode;

core::Result<core::ModelSpec> spec_from_checkpoint_meta(const nlohmann::json& meta,
                                                        const std::string& origin) {
  const std::string where = origin + ": meta." + kModelYamlKey;
  if (!meta.is_object() || !meta.contains(kModelYamlKey) || !meta[kModelYamlKey].is_string()) {
    return core::error(ErrorCode::kInvalidArgument,
                       "{}: missing (the checkpoint meta needs the model's preset YAML as a "
                       "string, as core::model_to_yaml writes it)",
                       where);
  }
  YAML::Node node;
  try {
    node = YAML::Load(meta[kModelYamlKey].get<std::string>());
  } catch (const YAML::Exception& e) {
    return core::error(ErrorCode::kParse, "{}: YAML syntax error: {}", where, e.what());
  }
  return core::model_from_yaml(node, where);
}

core::Result<CheckpointExport> export_hf_from_checkpoint(const std::string& checkpoint,
                                                         const std::string& out_dir, DType dtype,
                                                         int64_t max_shard_bytes,
                                                         const ModelTensors& model_tensors) {
  CheckpointExport result;
  const std::string weights = model_tensors ? std::string(kModelShard) + "*" : kModelShard;
  LOOM_ASSIGN_OR_RETURN(CheckpointData data,
                        load_checkpoint_at(checkpoint, &result.warnings, {weights}));
  result.checkpoint_dir = data.dir;
  result.step = data.step;
  LOOM_ASSIGN_OR_RETURN(result.spec, spec_from_checkpoint_meta(data.meta, result.checkpoint_dir));
  std::vector<Tensor> tensors;
  if (model_tensors) {
    LOOM_ASSIGN_OR_RETURN(tensors, model_tensors(data, result.spec));
  } else {
    tensors = std::move(data.shards.at(kModelShard));
  }
  const core::Status st =
      export_hf(result.spec, tensors, out_dir, dtype, max_shard_bytes, &result.report);
  LOOM_RETURN_IF_ERROR(st.with_context("exporting " + result.checkpoint_dir));
  return result;
}

}  // namespace loom::ckpt
