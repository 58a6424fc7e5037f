// Loading ModelSpecs: Loom's YAML presets (models/<name>.yaml) and Hugging Face config.json
// files of the Llama, Qwen (v1), Qwen2, Bloom, GPT-2 and GPT-NeoX families, accepting the key
// spellings of older and newer transformers releases (n_layer / num_hidden_layers,
// rope_theta / rope_parameters.rope_theta, ...). Tested in tests/core/model_io_test.cc.
#pragma once

#include <string>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "core/model_spec.h"

namespace loom::core {

// `name_or_path`: a preset name ("llama-7b"), a preset YAML path, a config.json path, or a
// directory holding a config.json (a Hugging Face checkpoint folder).
Result<ModelSpec> load_model(const std::string& name_or_path);

Result<ModelSpec> model_from_yaml(const YAML::Node& node, const std::string& origin);
Result<ModelSpec> model_from_hf_config(const nlohmann::json& config, const std::string& origin);

// The preset form of a spec (what plan files and checkpoints embed).
YAML::Node model_to_yaml(const ModelSpec& spec);

}  // namespace loom::core
