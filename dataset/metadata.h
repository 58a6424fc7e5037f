// PREFIX.json: the small metadata file Loom writes beside PREFIX.bin/.idx (tokenizer, vocabulary
// size, end-of-document id, counts; for synthetic data the chain and its entropy rate). Megatron
// ignores it; Loom's loader uses "vocab_size" as the model's vocabulary hint. Written atomically.
// Tested through tests/dataset/markov_source_test.cc and prepare_test.cc.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace loom::data {

std::string metadata_path(const std::string& prefix);
// kNotFound when PREFIX.json is absent; kParse (naming the file) when it is not a JSON object.
core::Result<nlohmann::json> read_metadata(const std::string& prefix);
// Writes PREFIX.json.tmp.<pid> and renames it into place.
core::Status write_metadata(const std::string& prefix, const nlohmann::json& metadata);

}  // namespace loom::data
