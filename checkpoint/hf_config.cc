// Choosing the transformers architecture for a ModelSpec, its config.json, Loom's parameter
// list and the --max-shard-size parser: see hf_export.h. Config keys follow transformers'
// LlamaConfig, Qwen2Config and BloomConfig; tests/checkpoint/hf_export_test.cc reads each
// config back with core::model_from_hf_config.
#include <cmath>
#include <regex>

#include "checkpoint/hf_export.h"

namespace loom::ckpt {

namespace {

using core::ModelSpec;

std::vector<std::string> rope_family_mismatches(const ModelSpec& m) {
  std::vector<std::string> out;
  if (m.mlp != core::MlpKind::kSwiGlu) out.push_back("mlp must be swiglu");
  if (m.position != core::PositionKind::kRope) out.push_back("position must be rope");
  if (m.rotary_fraction != 1.0) out.push_back("rotary_fraction must be 1.0 (got " +
                                              fmt::format("{}", m.rotary_fraction) + ")");
  if (m.embedding_norm) out.push_back("embedding_norm must be false");
  if (!m.qkv_bias && m.out_bias) out.push_back("an o_proj bias needs q/k/v biases too");
  if (m.qkv_bias && !m.out_bias && m.mlp_bias) out.push_back("Qwen2 has no mlp_bias");
  return out;
}

std::vector<std::string> bloom_mismatches(const ModelSpec& m) {
  std::vector<std::string> out;
  if (!m.norm_bias) out.push_back("norm_bias must be true");
  if (m.mlp != core::MlpKind::kGelu) out.push_back("mlp must be gelu");
  if (m.position != core::PositionKind::kAlibi) out.push_back("position must be alibi");
  if (!m.embedding_norm) out.push_back("embedding_norm must be true");
  if (!m.qkv_bias || !m.out_bias || !m.mlp_bias) {
    out.push_back("qkv_bias, out_bias and mlp_bias must all be true");
  }
  if (m.ffn_hidden_size != 4 * m.hidden_size) {
    out.push_back(fmt::format("ffn_hidden_size must be 4 * hidden_size = {} (BloomMLP), got {}",
                              4 * m.hidden_size, m.ffn_hidden_size));
  }
  if (m.num_kv_heads != m.num_heads) out.push_back("num_kv_heads must equal num_heads");
  if (m.q_dim() != m.hidden_size) out.push_back("head_dim must be hidden_size / num_heads");
  return out;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "; " : "") + v[i];
  return s;
}

const char* torch_dtype_name(DType d) {
  switch (d) {
    case DType::kBF16: return "bfloat16";
    case DType::kF16: return "float16";
    case DType::kF64: return "float64";
    default: return "float32";
  }
}

}  // namespace

const char* hf_architecture_name(HfArch a) {
  switch (a) {
    case HfArch::kLlama: return "LlamaForCausalLM";
    case HfArch::kQwen2: return "Qwen2ForCausalLM";
    case HfArch::kBloom: return "BloomForCausalLM";
  }
  return "?";
}

const char* hf_model_type(HfArch a) {
  switch (a) {
    case HfArch::kLlama: return "llama";
    case HfArch::kQwen2: return "qwen2";
    case HfArch::kBloom: return "bloom";
  }
  return "?";
}

core::Result<HfArch> choose_hf_architecture(const ModelSpec& m) {
  constexpr const char* kSupported =
      "supported: LlamaForCausalLM = rmsnorm + swiglu + rope with q/k/v/o biases all on or all "
      "off; Qwen2ForCausalLM = the same with q/k/v biases and no o_proj bias; "
      "BloomForCausalLM = layernorm (with bias) + gelu (ffn = 4h) + alibi + embedding LayerNorm "
      "+ biases on every projection";
  const bool rms = m.norm == core::NormKind::kRmsNorm;
  const std::vector<std::string> bad = rms ? rope_family_mismatches(m) : bloom_mismatches(m);
  if (!bad.empty()) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "model '{}' (norm {}, mlp {}, position {}) has no Hugging Face export: "
                       "{} ({})",
                       m.name, core::to_string(m.norm), core::to_string(m.mlp),
                       core::to_string(m.position), join(bad), kSupported);
  }
  if (!rms) return HfArch::kBloom;
  return m.qkv_bias && !m.out_bias ? HfArch::kQwen2 : HfArch::kLlama;
}

std::vector<ParamShape> loom_param_shapes(const ModelSpec& m) {
  const int64_t h = m.hidden_size, vp = m.padded_vocab(1), f = m.ffn_hidden_size;
  const int64_t q = m.q_dim(), kv = m.kv_dim();
  const bool norm_bias = m.norm == core::NormKind::kLayerNorm && m.norm_bias;
  std::vector<ParamShape> out;
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    out.push_back({std::move(name), std::move(shape)});
  };
  auto add_norm = [&](const std::string& prefix) {
    add(prefix + ".weight", {h});
    if (norm_bias) add(prefix + ".bias", {h});
  };
  auto add_linear = [&](const std::string& prefix, int64_t out_dim, int64_t in_dim, bool bias) {
    add(prefix + ".weight", {out_dim, in_dim});
    if (bias) add(prefix + ".bias", {out_dim});
  };
  add("embed.weight", {vp, h});
  if (m.embedding_norm) add_norm("embed_norm");
  if (m.position == core::PositionKind::kLearned) add("pos_embed.weight", {m.max_seq_len, h});
  for (int64_t i = 0; i < m.num_layers; ++i) {
    const std::string p = "layers." + std::to_string(i);
    add_norm(p + ".attn_norm");
    add_linear(p + ".attn.wq", q, h, m.qkv_bias);
    add_linear(p + ".attn.wk", kv, h, m.qkv_bias);
    add_linear(p + ".attn.wv", kv, h, m.qkv_bias);
    add_linear(p + ".attn.wo", h, q, m.out_bias);
    add_norm(p + ".mlp_norm");
    if (m.mlp == core::MlpKind::kSwiGlu) add_linear(p + ".mlp.w_gate", f, h, m.mlp_bias);
    add_linear(p + ".mlp.w_up", f, h, m.mlp_bias);
    add_linear(p + ".mlp.w_down", h, f, m.mlp_bias);
  }
  add_norm("final_norm");
  if (!m.tied_embeddings) add("lm_head.weight", {vp, h});
  return out;
}

nlohmann::json hf_config_json(const ModelSpec& m, HfArch arch, DType dtype) {
  nlohmann::ordered_json c;
  c["architectures"] = {hf_architecture_name(arch)};
  c["model_type"] = hf_model_type(arch);
  c["vocab_size"] = m.padded_vocab(1);
  c["hidden_size"] = m.hidden_size;
  if (arch == HfArch::kBloom) {
    // BloomConfig spells layers and heads n_layer / n_head (attribute_map gives the long names).
    c["n_layer"] = m.num_layers;
    c["n_head"] = m.num_heads;
    c["layer_norm_epsilon"] = m.norm_eps;
    c["apply_residual_connection_post_layernorm"] = false;
    c["pretraining_tp"] = 1;  // 1: plain nn.Linear, no slicing into TP chunks at inference
    c["slow_but_exact"] = false;
    c["hidden_dropout"] = 0.0;
    c["attention_dropout"] = 0.0;
    c["seq_length"] = m.max_seq_len;  // informational: ALiBi has no position table
  } else {
    c["intermediate_size"] = m.ffn_hidden_size;
    c["num_hidden_layers"] = m.num_layers;
    c["num_attention_heads"] = m.num_heads;
    c["num_key_value_heads"] = m.num_kv_heads;
    c["head_dim"] = m.head_dim_or_default();
    c["hidden_act"] = "silu";
    c["max_position_embeddings"] = m.max_seq_len;
    c["rms_norm_eps"] = m.norm_eps;
    c["rope_theta"] = m.rope_theta;
    c["rope_scaling"] = nullptr;
    c["attention_dropout"] = 0.0;
    if (arch == HfArch::kLlama) {
      c["attention_bias"] = m.qkv_bias;
      c["mlp_bias"] = m.mlp_bias;
    } else {
      c["use_sliding_window"] = false;
      c["max_window_layers"] = m.num_layers;
    }
  }
  c["tie_word_embeddings"] = m.tied_embeddings;
  c["torch_dtype"] = torch_dtype_name(dtype);
  c["use_cache"] = true;
  c["initializer_range"] = 0.02;  // transformers' default; only used to initialise new weights
  return nlohmann::json::parse(c.dump());
}

core::Result<int64_t> parse_byte_size(const std::string& text, const std::string& field) {
  static const std::regex kPattern(R"(^\s*([0-9]+(\.[0-9]+)?)\s*([A-Za-z]*)\s*$)");
  std::smatch m;
  auto bad = [&]() {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "{} '{}' is not a size (use bytes or a number with KB, MB, GB, TB "
                       "(powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), e.g. 5GB)",
                       field, text);
  };
  if (!std::regex_match(text, m, kPattern)) return bad();
  std::string unit = m[3].str();
  for (char& ch : unit) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  double scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "KB") scale = 1e3;
  else if (unit == "MB") scale = 1e6;
  else if (unit == "GB") scale = 1e9;
  else if (unit == "TB") scale = 1e12;
  else if (unit == "KIB") scale = 1024.0;
  else if (unit == "MIB") scale = 1024.0 * 1024;
  else if (unit == "GIB") scale = 1024.0 * 1024 * 1024;
  else if (unit == "TIB") scale = 1024.0 * 1024 * 1024 * 1024;
  else return bad();
  const double bytes = std::stod(m[1].str()) * scale;
  if (bytes < 1 || bytes > 9e18) return bad();
  return static_cast<int64_t>(std::llround(bytes));
}

}  // namespace loom::ckpt
