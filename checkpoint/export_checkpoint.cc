// Checkpoint -> Hugging Face folder: see export_checkpoint.h. Only the "model" shard is read,
// so an export does not load (or need intact) the optimizer state. Tested in
// tests/checkpoint/export_checkpoint_test.cc.
#include "checkpoint/export_checkpoint.h"

#include <filesystem>

#include <yaml-cpp/yaml.h>

#include "checkpoint/checkpoint_store.h"
#include "core/model_io.h"

namespace loom::ckpt {

namespace fs = std::filesystem;
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
                                                         int64_t max_shard_bytes) {
  CheckpointExport result;
  const fs::path path(checkpoint);
  std::error_code ec;
  const bool step_dir =
      fs::exists(path / "manifest.json", ec) || fs::exists(path / "COMPLETE", ec);
  const std::vector<std::string> only = {kModelShard};
  CheckpointData data;
  if (step_dir) {
    LOOM_ASSIGN_OR_RETURN(data, load_checkpoint_dir(checkpoint, only));
    result.checkpoint_dir = checkpoint;
  } else {
    LOOM_ASSIGN_OR_RETURN(data, load_latest_checkpoint(checkpoint, &result.warnings, only));
    result.checkpoint_dir = (path / checkpoint_dir_name(data.step)).string();
  }
  result.step = data.step;
  LOOM_ASSIGN_OR_RETURN(result.spec, spec_from_checkpoint_meta(data.meta, result.checkpoint_dir));
  const core::Status st = export_hf(result.spec, data.shards.at(kModelShard), out_dir, dtype,
                                    max_shard_bytes, &result.report);
  LOOM_RETURN_IF_ERROR(st.with_context("exporting " + result.checkpoint_dir));
  return result;
}

}  // namespace loom::ckpt
