// Model preset and Hugging Face config.json loaders: see model_io.h.
#include "core/model_io.h"

#include <filesystem>
#include <fstream>

#include "core/data_paths.h"
#include "core/yaml_reader.h"

namespace loom::core {

namespace fs = std::filesystem;
using nlohmann::json;

Result<ModelSpec> model_from_yaml(const YAML::Node& node, const std::string& origin) {
  ModelSpec m;
  YamlReader r(node, origin);
  LOOM_RETURN_IF_ERROR(r.required("name", m.name));
  LOOM_RETURN_IF_ERROR(r.optional("family", m.family));
  LOOM_RETURN_IF_ERROR(r.required("num_layers", m.num_layers));
  LOOM_RETURN_IF_ERROR(r.required("hidden_size", m.hidden_size));
  LOOM_RETURN_IF_ERROR(r.required("num_heads", m.num_heads));
  m.num_kv_heads = m.num_heads;
  LOOM_RETURN_IF_ERROR(r.optional("num_kv_heads", m.num_kv_heads));
  LOOM_RETURN_IF_ERROR(r.optional("head_dim", m.head_dim));
  LOOM_RETURN_IF_ERROR(r.required("ffn_hidden_size", m.ffn_hidden_size));
  LOOM_RETURN_IF_ERROR(r.required("vocab_size", m.vocab_size));
  LOOM_RETURN_IF_ERROR(r.required("max_seq_len", m.max_seq_len));
  LOOM_RETURN_IF_ERROR(r.enum_field("norm", m.norm, true, parse_norm_kind));
  LOOM_RETURN_IF_ERROR(r.optional("norm_eps", m.norm_eps));
  LOOM_RETURN_IF_ERROR(r.optional("norm_bias", m.norm_bias));
  LOOM_RETURN_IF_ERROR(r.enum_field("mlp", m.mlp, true, parse_mlp_kind));
  LOOM_RETURN_IF_ERROR(r.enum_field("position", m.position, true, parse_position_kind));
  LOOM_RETURN_IF_ERROR(r.optional("rope_theta", m.rope_theta));
  LOOM_RETURN_IF_ERROR(r.optional("rotary_fraction", m.rotary_fraction));
  LOOM_RETURN_IF_ERROR(r.optional("qkv_bias", m.qkv_bias));
  LOOM_RETURN_IF_ERROR(r.optional("out_bias", m.out_bias));
  LOOM_RETURN_IF_ERROR(r.optional("mlp_bias", m.mlp_bias));
  LOOM_RETURN_IF_ERROR(r.optional("embedding_norm", m.embedding_norm));
  LOOM_RETURN_IF_ERROR(r.optional("tied_embeddings", m.tied_embeddings));
  LOOM_RETURN_IF_ERROR(r.optional("make_vocab_size_divisible_by", m.make_vocab_size_divisible_by));
  LOOM_RETURN_IF_ERROR(r.optional("pad_vocab_size_to", m.pad_vocab_size_to));
  LOOM_RETURN_IF_ERROR(r.optional("published_params", m.published_params));
  LOOM_RETURN_IF_ERROR(r.optional("published_params_unit", m.published_params_unit));
  LOOM_RETURN_IF_ERROR(r.finish());
  if (m.norm == NormKind::kRmsNorm) m.norm_bias = false;
  LOOM_RETURN_IF_ERROR(m.validate().with_context(origin));
  return m;
}

YAML::Node model_to_yaml(const ModelSpec& m) {
  YAML::Node n;
  n["name"] = m.name;
  if (!m.family.empty()) n["family"] = m.family;
  n["num_layers"] = m.num_layers;
  n["hidden_size"] = m.hidden_size;
  n["num_heads"] = m.num_heads;
  n["num_kv_heads"] = m.num_kv_heads;
  if (m.head_dim > 0) n["head_dim"] = m.head_dim;
  n["ffn_hidden_size"] = m.ffn_hidden_size;
  n["vocab_size"] = m.vocab_size;
  n["max_seq_len"] = m.max_seq_len;
  n["norm"] = to_string(m.norm);
  n["norm_eps"] = m.norm_eps;
  if (m.norm == NormKind::kLayerNorm) n["norm_bias"] = m.norm_bias;
  n["mlp"] = to_string(m.mlp);
  n["position"] = to_string(m.position);
  if (m.position == PositionKind::kRope) {
    n["rope_theta"] = m.rope_theta;
    n["rotary_fraction"] = m.rotary_fraction;
  }
  n["qkv_bias"] = m.qkv_bias;
  n["out_bias"] = m.out_bias;
  n["mlp_bias"] = m.mlp_bias;
  n["embedding_norm"] = m.embedding_norm;
  n["tied_embeddings"] = m.tied_embeddings;
  n["make_vocab_size_divisible_by"] = m.make_vocab_size_divisible_by;
  if (m.pad_vocab_size_to > 0) n["pad_vocab_size_to"] = m.pad_vocab_size_to;
  if (m.published_params > 0) n["published_params"] = m.published_params;
  if (m.published_params_unit > 0) n["published_params_unit"] = m.published_params_unit;
  return n;
}

// --- Hugging Face config.json --------------------------------------------------------------

namespace {

// Reads the first of several spellings of a key ("n_layer", "num_hidden_layers").
class HfConfig {
 public:
  HfConfig(const json& j, std::string origin) : j_(j), origin_(std::move(origin)) {}

  const json* find(std::initializer_list<const char*> keys) const {
    for (const char* k : keys) {
      auto it = j_.find(k);
      if (it != j_.end() && !it->is_null()) return &*it;
    }
    return nullptr;
  }
  static std::string spellings(std::initializer_list<const char*> keys) {
    std::string s;
    for (const char* k : keys) s += (s.empty() ? "'" : " or '") + std::string(k) + "'";
    return s;
  }
  Status integer(std::initializer_list<const char*> keys, int64_t& out, bool required) const {
    const json* v = find(keys);
    if (!v) {
      if (!required) return ok_status();
      return error(ErrorCode::kInvalidArgument, "{}: missing {} (a {} config needs it)", origin_,
                   spellings(keys), model_type());
    }
    if (!v->is_number_integer()) {
      return error(ErrorCode::kInvalidArgument, "{}: {} = {} is not an integer", origin_,
                   spellings(keys), v->dump());
    }
    out = v->get<int64_t>();
    return ok_status();
  }
  Status number(std::initializer_list<const char*> keys, double& out) const {
    const json* v = find(keys);
    if (!v) return ok_status();
    if (!v->is_number()) {
      return error(ErrorCode::kInvalidArgument, "{}: {} = {} is not a number", origin_,
                   spellings(keys), v->dump());
    }
    out = v->get<double>();
    return ok_status();
  }
  Status boolean(std::initializer_list<const char*> keys, bool& out) const {
    const json* v = find(keys);
    if (!v) return ok_status();
    if (!v->is_boolean()) {
      return error(ErrorCode::kInvalidArgument, "{}: {} = {} is not true/false", origin_,
                   spellings(keys), v->dump());
    }
    out = v->get<bool>();
    return ok_status();
  }
  // rope_theta moved into rope_parameters (transformers >= 4.56/v5); older files have it at
  // the top level (or rotary_emb_base for GPT-NeoX and Qwen v1).
  Status rope_theta(double& out) const {
    if (const json* rp = find({"rope_parameters"}); rp && rp->is_object()) {
      auto it = rp->find("rope_theta");
      if (it != rp->end() && it->is_number()) {
        out = it->get<double>();
        return ok_status();
      }
    }
    return number({"rope_theta", "rotary_emb_base", "rotary_base"}, out);
  }
  std::string model_type() const { return j_.value("model_type", std::string("?")); }
  const std::string& origin() const { return origin_; }

 private:
  const json& j_;
  std::string origin_;
};

Status read_llama_like(const HfConfig& c, ModelSpec& m) {
  m.norm = NormKind::kRmsNorm;
  m.norm_bias = false;
  m.mlp = MlpKind::kSwiGlu;
  m.position = PositionKind::kRope;
  LOOM_RETURN_IF_ERROR(c.integer({"num_hidden_layers", "n_layer"}, m.num_layers, true));
  LOOM_RETURN_IF_ERROR(c.integer({"hidden_size"}, m.hidden_size, true));
  LOOM_RETURN_IF_ERROR(c.integer({"num_attention_heads"}, m.num_heads, true));
  m.num_kv_heads = m.num_heads;
  LOOM_RETURN_IF_ERROR(c.integer({"num_key_value_heads"}, m.num_kv_heads, false));
  LOOM_RETURN_IF_ERROR(c.integer({"head_dim"}, m.head_dim, false));
  LOOM_RETURN_IF_ERROR(c.integer({"intermediate_size"}, m.ffn_hidden_size, true));
  LOOM_RETURN_IF_ERROR(c.integer({"vocab_size"}, m.vocab_size, true));
  LOOM_RETURN_IF_ERROR(c.integer({"max_position_embeddings"}, m.max_seq_len, true));
  LOOM_RETURN_IF_ERROR(c.number({"rms_norm_eps"}, m.norm_eps));
  LOOM_RETURN_IF_ERROR(c.rope_theta(m.rope_theta));
  LOOM_RETURN_IF_ERROR(c.boolean({"tie_word_embeddings"}, m.tied_embeddings));
  bool attention_bias = false;
  LOOM_RETURN_IF_ERROR(c.boolean({"attention_bias"}, attention_bias));
  m.qkv_bias = m.out_bias = attention_bias;
  LOOM_RETURN_IF_ERROR(c.boolean({"mlp_bias"}, m.mlp_bias));
  return ok_status();
}

// Qwen v1 (model_type "qwen", remote code): intermediate_size is twice the SwiGLU width
// (QWenMLP uses intermediate_size // 2 for w1 and w2); c_attn always has a bias.
Status read_qwen_v1(const HfConfig& c, ModelSpec& m) {
  m.norm = NormKind::kRmsNorm;
  m.norm_bias = false;
  m.mlp = MlpKind::kSwiGlu;
  m.position = PositionKind::kRope;
  LOOM_RETURN_IF_ERROR(c.integer({"num_hidden_layers", "n_layer"}, m.num_layers, true));
  LOOM_RETURN_IF_ERROR(c.integer({"hidden_size"}, m.hidden_size, true));
  LOOM_RETURN_IF_ERROR(c.integer({"num_attention_heads"}, m.num_heads, true));
  m.num_kv_heads = m.num_heads;
  int64_t intermediate = 0;
  LOOM_RETURN_IF_ERROR(c.integer({"intermediate_size"}, intermediate, true));
  m.ffn_hidden_size = intermediate / 2;
  LOOM_RETURN_IF_ERROR(c.integer({"vocab_size"}, m.vocab_size, true));
  LOOM_RETURN_IF_ERROR(c.integer({"seq_length", "max_position_embeddings"}, m.max_seq_len, true));
  LOOM_RETURN_IF_ERROR(c.number({"layer_norm_epsilon"}, m.norm_eps));
  LOOM_RETURN_IF_ERROR(c.rope_theta(m.rope_theta));
  LOOM_RETURN_IF_ERROR(c.boolean({"tie_word_embeddings"}, m.tied_embeddings));
  bool no_bias = true;
  LOOM_RETURN_IF_ERROR(c.boolean({"no_bias"}, no_bias));
  m.qkv_bias = true;
  m.out_bias = m.mlp_bias = !no_bias;
  return ok_status();
}

Status read_bloom(const HfConfig& c, ModelSpec& m) {
  m.norm = NormKind::kLayerNorm;
  m.mlp = MlpKind::kGelu;
  m.position = PositionKind::kAlibi;
  m.qkv_bias = m.out_bias = m.mlp_bias = true;
  m.embedding_norm = true;
  m.tied_embeddings = true;
  LOOM_RETURN_IF_ERROR(c.integer({"n_layer", "num_hidden_layers"}, m.num_layers, true));
  LOOM_RETURN_IF_ERROR(c.integer({"hidden_size", "n_embed"}, m.hidden_size, true));
  LOOM_RETURN_IF_ERROR(c.integer({"n_head", "num_attention_heads"}, m.num_heads, true));
  m.num_kv_heads = m.num_heads;
  m.ffn_hidden_size = 4 * m.hidden_size;  // BloomMLP: dense_h_to_4h
  LOOM_RETURN_IF_ERROR(c.integer({"vocab_size"}, m.vocab_size, true));
  // ALiBi has no position table; BLOOM trained at 2048 tokens (BLOOM paper, Table 3).
  m.max_seq_len = 2048;
  LOOM_RETURN_IF_ERROR(c.integer({"seq_length", "n_positions"}, m.max_seq_len, false));
  LOOM_RETURN_IF_ERROR(c.number({"layer_norm_epsilon"}, m.norm_eps));
  LOOM_RETURN_IF_ERROR(c.boolean({"tie_word_embeddings"}, m.tied_embeddings));
  return ok_status();
}

Status read_gpt2(const HfConfig& c, ModelSpec& m) {
  m.norm = NormKind::kLayerNorm;
  m.mlp = MlpKind::kGelu;
  m.position = PositionKind::kLearned;
  m.qkv_bias = m.out_bias = m.mlp_bias = true;
  m.tied_embeddings = true;
  LOOM_RETURN_IF_ERROR(c.integer({"n_layer", "num_hidden_layers"}, m.num_layers, true));
  LOOM_RETURN_IF_ERROR(c.integer({"n_embd", "hidden_size"}, m.hidden_size, true));
  LOOM_RETURN_IF_ERROR(c.integer({"n_head", "num_attention_heads"}, m.num_heads, true));
  m.num_kv_heads = m.num_heads;
  m.ffn_hidden_size = 4 * m.hidden_size;  // n_inner: null means 4 * n_embd (GPT2MLP)
  LOOM_RETURN_IF_ERROR(c.integer({"n_inner"}, m.ffn_hidden_size, false));
  LOOM_RETURN_IF_ERROR(c.integer({"vocab_size"}, m.vocab_size, true));
  LOOM_RETURN_IF_ERROR(c.integer({"n_positions", "n_ctx", "max_position_embeddings"},
                                 m.max_seq_len, true));
  LOOM_RETURN_IF_ERROR(c.number({"layer_norm_epsilon"}, m.norm_eps));
  LOOM_RETURN_IF_ERROR(c.boolean({"tie_word_embeddings"}, m.tied_embeddings));
  return ok_status();
}

Status read_gpt_neox(const HfConfig& c, ModelSpec& m) {
  m.norm = NormKind::kLayerNorm;
  m.mlp = MlpKind::kGelu;
  m.position = PositionKind::kRope;
  m.qkv_bias = m.out_bias = m.mlp_bias = true;
  LOOM_RETURN_IF_ERROR(c.integer({"num_hidden_layers"}, m.num_layers, true));
  LOOM_RETURN_IF_ERROR(c.integer({"hidden_size"}, m.hidden_size, true));
  LOOM_RETURN_IF_ERROR(c.integer({"num_attention_heads"}, m.num_heads, true));
  m.num_kv_heads = m.num_heads;
  LOOM_RETURN_IF_ERROR(c.integer({"intermediate_size"}, m.ffn_hidden_size, true));
  LOOM_RETURN_IF_ERROR(c.integer({"vocab_size"}, m.vocab_size, true));
  LOOM_RETURN_IF_ERROR(c.integer({"max_position_embeddings"}, m.max_seq_len, true));
  LOOM_RETURN_IF_ERROR(c.number({"layer_norm_eps"}, m.norm_eps));
  LOOM_RETURN_IF_ERROR(c.rope_theta(m.rope_theta));
  LOOM_RETURN_IF_ERROR(c.number({"rotary_pct", "partial_rotary_factor"}, m.rotary_fraction));
  if (const json* rp = c.find({"rope_parameters"}); rp && rp->is_object()) {
    auto it = rp->find("partial_rotary_factor");
    if (it != rp->end() && it->is_number()) m.rotary_fraction = it->get<double>();
  }
  LOOM_RETURN_IF_ERROR(c.boolean({"tie_word_embeddings"}, m.tied_embeddings));
  bool attention_bias = true;
  LOOM_RETURN_IF_ERROR(c.boolean({"attention_bias"}, attention_bias));
  m.qkv_bias = m.out_bias = attention_bias;
  return ok_status();
}

}  // namespace

Result<ModelSpec> model_from_hf_config(const json& config, const std::string& origin) {
  if (!config.is_object()) {
    return error(ErrorCode::kInvalidArgument, "{}: a config.json must be a JSON object", origin);
  }
  HfConfig c(config, origin);
  const std::string type = c.model_type();
  ModelSpec m;
  // A checkpoint folder's config.json is named after its folder; any other file after itself.
  const fs::path origin_path(origin);
  m.name = origin_path.stem() == "config" ? origin_path.parent_path().filename().string()
                                          : origin_path.stem().string();
  if (m.name.empty()) m.name = type;
  m.family = type;
  Status st;
  if (type == "llama" || type == "mistral") {
    st = read_llama_like(c, m);
    m.family = "llama";
  } else if (type == "qwen2") {
    st = read_llama_like(c, m);
    m.qkv_bias = true;  // Qwen2Attention: q/k/v_proj bias=True, o_proj bias=False
    m.out_bias = false;
    m.family = "qwen";
  } else if (type == "qwen") {
    st = read_qwen_v1(c, m);
  } else if (type == "bloom") {
    st = read_bloom(c, m);
  } else if (type == "gpt2") {
    st = read_gpt2(c, m);
    m.family = "gpt";
  } else if (type == "gpt_neox") {
    st = read_gpt_neox(c, m);
    m.family = "gpt-neox";
  } else {
    return error(ErrorCode::kInvalidArgument,
                 "{}: model_type '{}' is not supported (allowed: llama, mistral, qwen, qwen2, "
                 "bloom, gpt2, gpt_neox)",
                 origin, type);
  }
  LOOM_RETURN_IF_ERROR(st);
  LOOM_RETURN_IF_ERROR(m.validate().with_context(origin));
  return m;
}

Result<ModelSpec> load_model(const std::string& name_or_path) {
  std::error_code ec;
  std::string path = name_or_path;
  if (fs::is_directory(path, ec)) {
    path = (fs::path(path) / "config.json").string();
    if (!fs::is_regular_file(path, ec)) {
      return error(ErrorCode::kNotFound, "model directory '{}' has no config.json", name_or_path);
    }
  }
  if (path.ends_with(".json")) {
    std::ifstream in(path);
    if (!in) return error(ErrorCode::kNotFound, "model config '{}' does not exist", path);
    json j;
    try {
      in >> j;
    } catch (const json::parse_error& e) {
      return error(ErrorCode::kParse, "{}: JSON syntax error at byte {}: {}", path, e.byte,
                   e.what());
    }
    return model_from_hf_config(j, path);
  }
  LOOM_ASSIGN_OR_RETURN(std::string file, resolve_data_file("models", path, "model preset"));
  LOOM_ASSIGN_OR_RETURN(YAML::Node node, load_yaml_file(file));
  return model_from_yaml(node, file);
}

}  // namespace loom::core
