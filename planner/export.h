// Exports of a plan to the launchers users train with: Megatron-LM (Megatron-Core's
// pretrain_gpt.py arguments) and DeepSpeed (a ds_config JSON plus the Megatron-DeepSpeed
// arguments its pipeline engine needs). Every flag and key is checked against the upstream
// source cited next to it; a plan those tools cannot reproduce is an error naming the field,
// its value and what would be allowed. Tested by parsing the output back in
// tests/planner/export_test.cc.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "planner/plan.h"

namespace loom::plan {

// Megatron-LM arguments (model shape, parallelism, batch, recompute, precision, pipeline split)
// in launch order, e.g. {"--tensor-model-parallel-size", "8", "--sequence-parallel", ...}.
// Tokenizer, data, optimizer and schedule flags are the user's to add.
core::Result<std::vector<std::string>> megatron_arguments(const Plan& plan);

// A DeepSpeed config (train_batch_size = micro x accumulation x dp, zero_optimization, bf16 /
// fp16, gradient_clipping, the pipeline keys the pipe engine reads) with one extra top-level
// key, "megatron_deepspeed_arguments": the layout flags of BigScience's Megatron-DeepSpeed
// (parallel sizes, batch, --pp-partition-method, --checkpoint-activations, --deepspeed_config
// `config_path`), which carry what no DeepSpeed key can. DeepSpeed ignores unknown top-level
// keys (deepspeedai/DeepSpeed issues #774, #1809), so the file is usable as it is.
core::Result<nlohmann::json> deepspeed_config(const Plan& plan,
                                              const std::string& config_path = "ds_config.json");

// POSIX-shell quoting: `arg` unchanged when it holds only [A-Za-z0-9_@%+=:,./-], else in single
// quotes ('\'' for a quote inside).
std::string shell_quote(const std::string& arg);
// The arguments quoted and joined by single spaces (one line, for logs and tests).
std::string shell_quote_join(const std::vector<std::string>& args);
// One option per line with its values, each line but the last ending in a backslash (the
// continuation a launch script uses), e.g. "  --tensor-model-parallel-size 8 \\" then
// "  --sequence-parallel".
std::string shell_continuation_lines(const std::vector<std::string>& args,
                                     const std::string& indent = "  ");

}  // namespace loom::plan
