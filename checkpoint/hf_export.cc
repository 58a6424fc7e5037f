// Loom parameters -> Hugging Face safetensors (+ index) and config.json: see hf_export.h.
// Names follow transformers' LlamaForCausalLM / Qwen2ForCausalLM (model.layers.{i}.self_attn.
// q_proj, ...) and BloomForCausalLM (transformer.h.{i}.self_attention.query_key_value, ...).
// Tensors are converted one shard at a time, so the extra memory is one shard, not the model.
#include "checkpoint/hf_export.h"

#include <filesystem>
#include <map>
#include <regex>
#include <set>

#include "checkpoint/file_io.h"

namespace loom::ckpt {

namespace fs = std::filesystem;
using core::ErrorCode;

namespace {

// One tensor of the export: its transformers name and shape, and the Loom tensor(s) it comes
// from (three for BLOOM's fused query_key_value: q, k, v).
struct HfTensorPlan {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<const Tensor*> sources;
  int64_t bytes = 0;  // in the export dtype
};

const std::map<std::string, std::string>& layer_names(HfArch arch) {
  static const std::map<std::string, std::string> kLlama = {
      {"attn_norm", "input_layernorm"},     {"attn.wq", "self_attn.q_proj"},
      {"attn.wk", "self_attn.k_proj"},      {"attn.wv", "self_attn.v_proj"},
      {"attn.wo", "self_attn.o_proj"},      {"mlp_norm", "post_attention_layernorm"},
      {"mlp.w_gate", "mlp.gate_proj"},      {"mlp.w_up", "mlp.up_proj"},
      {"mlp.w_down", "mlp.down_proj"}};
  // BLOOM: attn.wq stands for the fused q/k/v (wk and wv are folded into it).
  static const std::map<std::string, std::string> kBloom = {
      {"attn_norm", "input_layernorm"},     {"attn.wq", "self_attention.query_key_value"},
      {"attn.wo", "self_attention.dense"},  {"mlp_norm", "post_attention_layernorm"},
      {"mlp.w_up", "mlp.dense_h_to_4h"},    {"mlp.w_down", "mlp.dense_4h_to_h"}};
  return arch == HfArch::kBloom ? kBloom : kLlama;
}

const std::map<std::string, std::string>& global_names(HfArch arch) {
  static const std::map<std::string, std::string> kLlama = {
      {"embed", "model.embed_tokens"}, {"final_norm", "model.norm"}, {"lm_head", "lm_head"}};
  static const std::map<std::string, std::string> kBloom = {
      {"embed", "transformer.word_embeddings"},
      {"embed_norm", "transformer.word_embeddings_layernorm"},
      {"final_norm", "transformer.ln_f"},
      {"lm_head", "lm_head"}};
  return arch == HfArch::kBloom ? kBloom : kLlama;
}

// "layers.3.attn.wq.weight" -> "model.layers.3.self_attn.q_proj.weight".
core::Result<std::string> hf_name(HfArch arch, const std::string& loom) {
  static const std::regex kLayer(R"(^layers\.([0-9]+)\.(.+)\.(weight|bias)$)");
  static const std::regex kGlobal(R"(^(.+)\.(weight|bias)$)");
  std::smatch m;
  if (std::regex_match(loom, m, kLayer)) {
    auto it = layer_names(arch).find(m[2].str());
    if (it != layer_names(arch).end()) {
      const char* prefix = arch == HfArch::kBloom ? "transformer.h." : "model.layers.";
      return prefix + m[1].str() + "." + it->second + "." + m[3].str();
    }
  } else if (std::regex_match(loom, m, kGlobal)) {
    auto it = global_names(arch).find(m[1].str());
    if (it != global_names(arch).end()) return it->second + "." + m[2].str();
  }
  return core::error(ErrorCode::kInvalidArgument, "parameter '{}' has no {} name", loom,
                     hf_architecture_name(arch));
}

bool is_float(DType d) {
  return d == DType::kF32 || d == DType::kF64 || d == DType::kBF16 || d == DType::kF16;
}

// Checks that `params` holds exactly the spec's parameters with the right shapes.
core::Result<std::map<std::string, const Tensor*>> index_params(
    const core::ModelSpec& spec, const std::vector<Tensor>& params) {
  std::map<std::string, const Tensor*> by_name;
  for (const Tensor& t : params) {
    if (!by_name.emplace(t.name, &t).second) {
      return core::error(ErrorCode::kInvalidArgument, "params: '{}' appears twice", t.name);
    }
  }
  std::set<std::string> expected;
  for (const ParamShape& p : loom_param_shapes(spec)) {
    expected.insert(p.name);
    auto it = by_name.find(p.name);
    if (it == by_name.end()) {
      return core::error(ErrorCode::kInvalidArgument,
                         "params: missing '{}' {} (model '{}' has it)", p.name,
                         shape_string(p.shape), spec.name);
    }
    const Tensor& t = *it->second;
    if (t.shape != p.shape || !is_float(t.dtype)) {
      return core::error(ErrorCode::kInvalidArgument,
                         "params: '{}' is {} {} but model '{}' needs a float tensor {}", p.name,
                         dtype_name(t.dtype), shape_string(t.shape), spec.name,
                         shape_string(p.shape));
    }
  }
  for (const auto& [name, t] : by_name) {
    if (!expected.contains(name)) {
      return core::error(ErrorCode::kInvalidArgument,
                         "params: unexpected '{}' (model '{}' has no such parameter{})", name,
                         spec.name, name == "lm_head.weight" ? ": its embeddings are tied" : "");
    }
  }
  return by_name;
}

core::Result<std::vector<HfTensorPlan>> plan_tensors(const core::ModelSpec& spec, HfArch arch,
                                                     const std::vector<Tensor>& params,
                                                     DType dtype) {
  LOOM_ASSIGN_OR_RETURN(auto by_name, index_params(spec, params));
  static const std::regex kFusedKv(R"(^layers\.[0-9]+\.attn\.w[kv]\.(weight|bias)$)");
  static const std::regex kFusedQ(R"(^(layers\.[0-9]+\.attn\.)wq\.(weight|bias)$)");
  std::vector<HfTensorPlan> plans;
  for (const ParamShape& p : loom_param_shapes(spec)) {
    const bool bloom = arch == HfArch::kBloom;
    if (bloom && std::regex_match(p.name, kFusedKv)) continue;  // folded into query_key_value
    HfTensorPlan plan;
    LOOM_ASSIGN_OR_RETURN(plan.name, hf_name(arch, p.name));
    plan.shape = p.shape;
    plan.sources = {by_name.at(p.name)};
    std::smatch m;
    if (bloom && std::regex_match(p.name, m, kFusedQ)) {
      plan.sources.push_back(by_name.at(fmt::format("{}wk.{}", m[1].str(), m[2].str())));
      plan.sources.push_back(by_name.at(fmt::format("{}wv.{}", m[1].str(), m[2].str())));
      plan.shape[0] *= 3;
    }
    int64_t n = 1;
    for (int64_t d : plan.shape) n *= d;
    plan.bytes = n * dtype_size_bytes(dtype);
    plans.push_back(std::move(plan));
  }
  return plans;
}

// BLOOM's query_key_value rows are laid out [num_heads, 3, head_dim] (q, k, v interleaved per
// head): transformers BloomAttention._split_heads views the fused output as
// (batch, seq, num_heads, 3, head_dim). Bias rows likewise.
Tensor fuse_qkv_per_head(const HfTensorPlan& plan, int64_t num_heads, int64_t head_dim) {
  const std::vector<float> q = as_f32(*plan.sources[0]);
  const std::vector<float> k = as_f32(*plan.sources[1]);
  const std::vector<float> v = as_f32(*plan.sources[2]);
  const size_t cols = q.size() / static_cast<size_t>(num_heads * head_dim);
  const std::vector<float>* parts[3] = {&q, &k, &v};
  std::vector<float> fused(3 * q.size());
  for (int64_t n = 0; n < num_heads; ++n) {
    for (int64_t p = 0; p < 3; ++p) {
      for (int64_t d = 0; d < head_dim; ++d) {
        const size_t src_row = static_cast<size_t>(n * head_dim + d);
        const size_t dst_row = static_cast<size_t>((n * 3 + p) * head_dim + d);
        std::copy_n(parts[p]->data() + src_row * cols, cols, fused.data() + dst_row * cols);
      }
    }
  }
  return make_f32_tensor(plan.name, plan.shape, fused.data());
}

core::Result<Tensor> materialize(const HfTensorPlan& plan, const core::ModelSpec& spec,
                                 DType dtype) {
  Tensor t;
  if (plan.sources.size() == 3) {
    t = fuse_qkv_per_head(plan, spec.num_heads, spec.head_dim_or_default());
  } else {
    t = *plan.sources[0];
    t.name = plan.name;
  }
  return convert_tensor(t, dtype);
}

// Greedy in order, as transformers' shard_checkpoint: a new file starts when the next tensor
// would push the current one past max_shard_bytes (a single larger tensor gets its own file).
std::vector<std::vector<size_t>> group_shards(const std::vector<HfTensorPlan>& plans,
                                              int64_t max_shard_bytes) {
  std::vector<std::vector<size_t>> shards(1);
  int64_t current = 0;
  for (size_t i = 0; i < plans.size(); ++i) {
    if (max_shard_bytes > 0 && !shards.back().empty() &&
        current + plans[i].bytes > max_shard_bytes) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(i);
    current += plans[i].bytes;
  }
  return shards;
}

// Earlier weight files would be picked up by from_pretrained next to the new ones.
core::Status remove_stale_weights(const fs::path& out) {
  static const std::regex kShard(R"(^model(-[0-9]+-of-[0-9]+)?\.safetensors(\.index\.json)?$)");
  std::error_code ec;
  for (fs::directory_iterator it(out, ec), end; !ec && it != end; it.increment(ec)) {
    if (!std::regex_match(it->path().filename().string(), kShard)) continue;
    std::error_code rm;
    fs::remove(it->path(), rm);
    if (rm) {
      return core::error(ErrorCode::kIo, "--out: cannot remove the old '{}': {}",
                         it->path().string(), rm.message());
    }
  }
  return core::ok_status();
}

}  // namespace

core::Status export_hf(const core::ModelSpec& spec, const std::vector<Tensor>& params,
                       const std::string& out_dir, DType dtype, int64_t max_shard_bytes,
                       HfExportReport* report) {
  LOOM_RETURN_IF_ERROR(spec.validate());
  if (dtype != DType::kF32 && dtype != DType::kBF16 && dtype != DType::kF16) {
    return core::error(ErrorCode::kInvalidArgument,
                       "export dtype {} is not supported (allowed: F32, BF16, F16)",
                       dtype_name(dtype));
  }
  LOOM_ASSIGN_OR_RETURN(const HfArch arch, choose_hf_architecture(spec));
  LOOM_ASSIGN_OR_RETURN(const std::vector<HfTensorPlan> plans,
                        plan_tensors(spec, arch, params, dtype));
  const fs::path out(out_dir);
  std::error_code ec;
  fs::create_directories(out, ec);
  if (ec) {
    return core::error(ErrorCode::kIo, "--out: cannot create '{}': {}", out_dir, ec.message());
  }
  LOOM_RETURN_IF_ERROR(remove_stale_weights(out));

  HfExportReport r;
  r.arch = arch;
  r.num_tensors = static_cast<int64_t>(plans.size());
  for (const HfTensorPlan& p : plans) r.weight_bytes += p.bytes;
  const bool sharded = max_shard_bytes > 0 && r.weight_bytes > max_shard_bytes;
  const auto shards = sharded ? group_shards(plans, max_shard_bytes)
                              : std::vector<std::vector<size_t>>{group_shards(plans, 0)};
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  const std::map<std::string, std::string> kMeta = {{"format", "pt"}};  // from_pretrained needs it
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file =
        sharded ? fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards.size())
                : std::string("model.safetensors");
    std::vector<Tensor> tensors;
    for (size_t i : shards[s]) {
      LOOM_ASSIGN_OR_RETURN(Tensor t, materialize(plans[i], spec, dtype));
      tensors.push_back(std::move(t));
      weight_map[plans[i].name] = file;
    }
    LOOM_RETURN_IF_ERROR(write_safetensors((out / file).string(), tensors, kMeta));
    r.files.push_back(file);
  }
  if (sharded) {
    const nlohmann::ordered_json index = {{"metadata", {{"total_size", r.weight_bytes}}},
                                          {"weight_map", weight_map}};
    LOOM_RETURN_IF_ERROR(write_file_durable((out / "model.safetensors.index.json").string(),
                                            index.dump(2) + "\n"));
    r.files.push_back("model.safetensors.index.json");
  }
  const nlohmann::json config = hf_config_json(spec, arch, dtype);
  LOOM_RETURN_IF_ERROR(write_file_durable((out / "config.json").string(), config.dump(2) + "\n"));
  r.files.insert(r.files.begin(), "config.json");
  LOOM_RETURN_IF_ERROR(fsync_directory(out.string()));
  if (report) *report = std::move(r);
  return core::ok_status();
}

}  // namespace loom::ckpt
