// Export of a Loom model as a Hugging Face folder (config.json + model.safetensors, or shards
// + model.safetensors.index.json) for LlamaForCausalLM, Qwen2ForCausalLM or BloomForCausalLM.
// Tested in tests/checkpoint/hf_export_test.cc (names, BLOOM's fused QKV, sharding, config read
// back by core::load_model) and against the independent NumPy forward pass
// scripts/hf_reference_forward.py (tests/checkpoint/hf_reference_forward_test.cc).

// Loom's parameter names (all F32; linear weights [out, in] as in PyTorch; Vp = padded vocab):
//   embed.weight [Vp, h]; embed_norm.weight/.bias [h] (BLOOM); pos_embed.weight [T, h] (learned)
//   layers.{i}.attn_norm.weight (+.bias); layers.{i}.attn.{wq,wk,wv,wo}.weight (+.bias)
//   layers.{i}.mlp_norm.weight (+.bias); layers.{i}.mlp.{w_gate,w_up,w_down}.weight (+.bias)
//   final_norm.weight (+.bias); lm_head.weight [Vp, h] when untied.
// RoPE: Loom's wq/wk rows follow the Hugging Face "rotate half" convention (kernels/cpu
// cpu_ops.h rope_fwd), so no permutation is needed (unlike Meta's interleaved checkpoints).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "checkpoint/safetensors.h"
#include "core/model_spec.h"
#include "core/status.h"

namespace loom::ckpt {

enum class HfArch { kLlama, kQwen2, kBloom };

const char* hf_architecture_name(HfArch a);  // "LlamaForCausalLM"
const char* hf_model_type(HfArch a);         // "llama"

// The transformers architecture whose modules match the spec (norm, MLP, positions, biases);
// an error names the mismatches and what each supported architecture needs.
core::Result<HfArch> choose_hf_architecture(const core::ModelSpec& spec);

// One Loom parameter: its name and shape (see the list above).
struct ParamShape {
  std::string name;
  std::vector<int64_t> shape;
};
// Every parameter a spec has, in a fixed order (embedding, blocks, final norm, LM head). Their
// element count equals the spec's padded parameter count.
std::vector<ParamShape> loom_param_shapes(const core::ModelSpec& spec);

// config.json for `arch`: vocab_size is the padded vocabulary (the exported embedding rows).
nlohmann::json hf_config_json(const core::ModelSpec& spec, HfArch arch, DType dtype);

// What export_hf wrote (file names relative to out_dir).
struct HfExportReport {
  HfArch arch = HfArch::kLlama;
  std::vector<std::string> files;  // config.json, weight files, index (if sharded)
  int64_t weight_bytes = 0;        // sum of the tensors' bytes (index "total_size")
  int64_t num_tensors = 0;
};

// Writes out_dir (created if missing; earlier model*.safetensors and the index there are
// removed first). dtype: F32, BF16 or F16. max_shard_bytes <= 0 never shards. Tied models write
// only the embedding (transformers re-ties lm_head to it).
core::Status export_hf(const core::ModelSpec& spec, const std::vector<Tensor>& params,
                       const std::string& out_dir, DType dtype, int64_t max_shard_bytes,
                       HfExportReport* report = nullptr);

// "5GB" -> 5e9, "500MB", "2GiB" -> 2^31, "1000" -> 1000: the spellings of transformers'
// max_shard_size (utils/hub.py convert_file_size_to_int: KB/MB/GB decimal, KiB/MiB/GiB binary).
core::Result<int64_t> parse_byte_size(const std::string& text, const std::string& field);

}  // namespace loom::ckpt
