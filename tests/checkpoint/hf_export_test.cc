// Hugging Face export: the parameter list matches ModelSpec's counts, each family maps to the
// transformers names, BLOOM's query_key_value is fused per head as [num_heads, 3, head_dim]
// (transformers BloomAttention._split_heads), config.json reads back through
// core::model_from_hf_config to the same architecture, sharding writes a consistent index, and
// bad inputs are refused with the parameter's name.
#include "checkpoint/hf_export.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "core/model_io.h"

namespace loom::ckpt {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("loom_hf_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p;
}

core::ModelSpec tiny_llama() {
  core::ModelSpec m;
  m.name = "tiny";
  m.family = "llama";
  m.num_layers = 2;
  m.hidden_size = 32;
  m.num_heads = 4;
  m.num_kv_heads = 2;
  m.ffn_hidden_size = 64;
  m.vocab_size = 97;  // padded to 128 (make_vocab_size_divisible_by)
  m.max_seq_len = 64;
  m.norm = core::NormKind::kRmsNorm;
  m.norm_bias = false;
  m.norm_eps = 1e-6;
  m.mlp = core::MlpKind::kSwiGlu;
  m.position = core::PositionKind::kRope;
  m.rope_theta = 10000.0;
  return m;
}

core::ModelSpec tiny_qwen2() {
  core::ModelSpec m = tiny_llama();
  m.family = "qwen";
  m.qkv_bias = true;
  m.rope_theta = 1e6;
  return m;
}

core::ModelSpec tiny_bloom() {
  core::ModelSpec m = tiny_llama();
  m.family = "bloom";
  m.num_kv_heads = m.num_heads;
  m.ffn_hidden_size = 4 * m.hidden_size;
  m.norm = core::NormKind::kLayerNorm;
  m.norm_bias = true;
  m.norm_eps = 1e-5;
  m.mlp = core::MlpKind::kGelu;
  m.position = core::PositionKind::kAlibi;
  m.qkv_bias = m.out_bias = m.mlp_bias = true;
  m.embedding_norm = true;
  m.tied_embeddings = true;
  return m;
}

std::vector<Tensor> random_params(const core::ModelSpec& spec, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.5f);
  std::vector<Tensor> out;
  for (const ParamShape& p : loom_param_shapes(spec)) {
    int64_t n = 1;
    for (int64_t d : p.shape) n *= d;
    std::vector<float> v(static_cast<size_t>(n));
    for (float& x : v) x = normal(rng);
    out.push_back(make_f32_tensor(p.name, p.shape, v.data()));
  }
  return out;
}

std::map<std::string, Tensor> read_export(const fs::path& dir) {
  std::map<std::string, Tensor> by_name;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".safetensors") continue;
    auto ts = read_safetensors(e.path().string());
    EXPECT_TRUE(ts.ok()) << ts.status().message();
    if (!ts.ok()) continue;
    for (Tensor& t : *ts) by_name[t.name] = std::move(t);
  }
  return by_name;
}

const Tensor& find(const std::vector<Tensor>& ts, const std::string& name) {
  for (const Tensor& t : ts) {
    if (t.name == name) return t;
  }
  throw std::runtime_error("no tensor " + name);
}

TEST(HfExport, ParamShapesSumToSpecCounts) {
  for (const char* preset : {"tiny-llama", "tiny-qwen", "tiny-bloom", "tiny-gpt", "llama2-70b",
                             "bloom-176b", "qwen2-7b"}) {
    auto spec = core::load_model(preset);
    ASSERT_TRUE(spec.ok()) << spec.status().message();
    int64_t n = 0;
    for (const ParamShape& p : loom_param_shapes(*spec)) {
      int64_t e = 1;
      for (int64_t d : p.shape) e *= d;
      n += e;
    }
    const int64_t want = spec->embedding_params(1, true) + spec->position_params() +
                         spec->num_layers * spec->block_params(1) + spec->final_norm_params() +
                         spec->lm_head_params(1, true);
    EXPECT_EQ(n, want) << preset;
  }
}

TEST(HfExport, ChoosesArchitectureFromSpec) {
  EXPECT_EQ(*choose_hf_architecture(tiny_llama()), HfArch::kLlama);
  EXPECT_EQ(*choose_hf_architecture(tiny_qwen2()), HfArch::kQwen2);
  EXPECT_EQ(*choose_hf_architecture(tiny_bloom()), HfArch::kBloom);
  auto gpt = core::load_model("tiny-gpt");
  ASSERT_TRUE(gpt.ok());
  auto refused = choose_hf_architecture(*gpt);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("position must be alibi"), std::string::npos)
      << refused.status().message();
  EXPECT_NE(refused.status().message().find("supported: LlamaForCausalLM"), std::string::npos);
}

// Exports, reads config.json back with Loom's own HF loader and compares the architecture.
void export_and_reload(const core::ModelSpec& spec, const std::string& arch_name) {
  const fs::path dir = temp_dir(spec.family);
  HfExportReport report;
  ASSERT_TRUE(export_hf(spec, random_params(spec, 1), dir.string(), DType::kF32, 0, &report).ok());
  EXPECT_EQ(report.files, (std::vector<std::string>{"config.json", "model.safetensors"}));
  const nlohmann::json config = nlohmann::json::parse(std::ifstream(dir / "config.json"));
  EXPECT_EQ(config["architectures"][0], arch_name);
  EXPECT_EQ(config["vocab_size"], 128) << "padded vocabulary";
  EXPECT_EQ(config["torch_dtype"], "float32");
  auto back = core::load_model(dir.string());
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->num_layers, spec.num_layers);
  EXPECT_EQ(back->hidden_size, spec.hidden_size);
  EXPECT_EQ(back->num_heads, spec.num_heads);
  EXPECT_EQ(back->num_kv_heads, spec.num_kv_heads);
  EXPECT_EQ(back->ffn_hidden_size, spec.ffn_hidden_size);
  EXPECT_EQ(back->norm, spec.norm);
  EXPECT_EQ(back->mlp, spec.mlp);
  EXPECT_EQ(back->position, spec.position);
  EXPECT_EQ(back->qkv_bias, spec.qkv_bias);
  EXPECT_EQ(back->out_bias, spec.out_bias);
  EXPECT_EQ(back->tied_embeddings, spec.tied_embeddings);
  EXPECT_DOUBLE_EQ(back->norm_eps, spec.norm_eps);
  EXPECT_EQ(back->max_seq_len, spec.max_seq_len);
  if (spec.position == core::PositionKind::kRope) {
    EXPECT_EQ(back->rope_theta, spec.rope_theta);
  }
  core::ModelSpec padded = spec;  // the export's vocabulary is the padded one
  padded.vocab_size = spec.padded_vocab(1);
  EXPECT_EQ(back->total_params(), padded.total_params());
  fs::remove_all(dir);
}

TEST(HfExport, ConfigReadsBackAsSameArchitecture) {
  export_and_reload(tiny_llama(), "LlamaForCausalLM");
  export_and_reload(tiny_qwen2(), "Qwen2ForCausalLM");
  export_and_reload(tiny_bloom(), "BloomForCausalLM");
}

TEST(HfExport, LlamaNamesAndValues) {
  const core::ModelSpec spec = tiny_llama();
  const std::vector<Tensor> params = random_params(spec, 2);
  const fs::path dir = temp_dir("llama_names");
  ASSERT_TRUE(export_hf(spec, params, dir.string(), DType::kF32, 0).ok());
  const auto out = read_export(dir);
  EXPECT_EQ(out.size(), params.size());
  const std::map<std::string, std::string> pairs = {
      {"model.embed_tokens.weight", "embed.weight"},
      {"model.layers.1.input_layernorm.weight", "layers.1.attn_norm.weight"},
      {"model.layers.1.self_attn.q_proj.weight", "layers.1.attn.wq.weight"},
      {"model.layers.0.self_attn.k_proj.weight", "layers.0.attn.wk.weight"},
      {"model.layers.0.self_attn.v_proj.weight", "layers.0.attn.wv.weight"},
      {"model.layers.0.self_attn.o_proj.weight", "layers.0.attn.wo.weight"},
      {"model.layers.0.post_attention_layernorm.weight", "layers.0.mlp_norm.weight"},
      {"model.layers.1.mlp.gate_proj.weight", "layers.1.mlp.w_gate.weight"},
      {"model.layers.1.mlp.up_proj.weight", "layers.1.mlp.w_up.weight"},
      {"model.layers.1.mlp.down_proj.weight", "layers.1.mlp.w_down.weight"},
      {"model.norm.weight", "final_norm.weight"},
      {"lm_head.weight", "lm_head.weight"}};
  for (const auto& [hf, loom] : pairs) {
    ASSERT_TRUE(out.contains(hf)) << hf;
    EXPECT_EQ(out.at(hf).shape, find(params, loom).shape) << hf;
    EXPECT_EQ(out.at(hf).bytes, find(params, loom).bytes) << hf;
  }
  fs::remove_all(dir);
}

TEST(HfExport, BloomFusesQkvPerHeadAndTiesEmbedding) {
  const core::ModelSpec spec = tiny_bloom();
  const std::vector<Tensor> params = random_params(spec, 3);
  const fs::path dir = temp_dir("bloom_qkv");
  ASSERT_TRUE(export_hf(spec, params, dir.string(), DType::kF32, 0).ok());
  const auto out = read_export(dir);
  EXPECT_FALSE(out.contains("lm_head.weight")) << "tied: transformers re-ties lm_head";
  ASSERT_TRUE(out.contains("transformer.word_embeddings_layernorm.bias"));
  ASSERT_TRUE(out.contains("transformer.ln_f.weight"));
  ASSERT_TRUE(out.contains("transformer.h.1.mlp.dense_4h_to_h.bias"));
  const int64_t heads = spec.num_heads, hd = spec.head_dim_or_default(), h = spec.hidden_size;
  for (const char* kind : {"weight", "bias"}) {
    const Tensor& fused = out.at(std::string("transformer.h.1.self_attention.query_key_value.") + kind);
    const int64_t cols = std::string(kind) == "weight" ? h : 1;
    EXPECT_EQ(fused.shape[0], 3 * h);
    const std::vector<float> f = as_f32(fused);
    const char* parts[3] = {"wq", "wk", "wv"};
    for (int p = 0; p < 3; ++p) {
      const std::vector<float> src =
          as_f32(find(params, std::string("layers.1.attn.") + parts[p] + "." + kind));
      for (int64_t n = 0; n < heads; ++n) {
        for (int64_t d = 0; d < hd; ++d) {
          for (int64_t c = 0; c < cols; ++c) {
            ASSERT_EQ(f[static_cast<size_t>(((n * 3 + p) * hd + d) * cols + c)],
                      src[static_cast<size_t>((n * hd + d) * cols + c)])
                << kind << " head " << n << " part " << p << " row " << d;
          }
        }
      }
    }
  }
  fs::remove_all(dir);
}

TEST(HfExport, ShardsWithIndexAndRemovesStaleShards) {
  const core::ModelSpec spec = tiny_qwen2();
  const std::vector<Tensor> params = random_params(spec, 4);
  const fs::path dir = temp_dir("shards");
  const int64_t max_shard = 20000;  // bytes: embedding (16 KiB) + a few layer tensors per file
  HfExportReport report;
  ASSERT_TRUE(export_hf(spec, params, dir.string(), DType::kF32, max_shard, &report).ok());
  const int64_t num_files = static_cast<int64_t>(report.files.size()) - 2;  // config, index
  ASSERT_GT(num_files, 2);
  const nlohmann::json index =
      nlohmann::json::parse(std::ifstream(dir / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"].get<int64_t>(), report.weight_bytes);
  EXPECT_EQ(index["weight_map"].size(), params.size());
  int64_t total = 0;
  for (int64_t k = 1; k <= num_files; ++k) {
    const std::string file = fmt::format("model-{:05d}-of-{:05d}.safetensors", k, num_files);
    auto ts = read_safetensors((dir / file).string());
    ASSERT_TRUE(ts.ok()) << file;
    int64_t bytes = 0;
    for (const Tensor& t : *ts) {
      EXPECT_EQ(index["weight_map"][t.name], file) << t.name;
      bytes += static_cast<int64_t>(t.bytes.size());
    }
    EXPECT_TRUE(bytes <= max_shard || ts->size() == 1) << file << " holds " << bytes;
    total += bytes;
  }
  EXPECT_EQ(total, report.weight_bytes);
  ASSERT_TRUE(export_hf(spec, params, dir.string(), DType::kF32, 0).ok());  // unsharded again
  int64_t weight_files = 0;
  for (const auto& e : fs::directory_iterator(dir)) weight_files += e.path().extension() == ".safetensors";
  EXPECT_EQ(weight_files, 1);
  EXPECT_FALSE(fs::exists(dir / "model.safetensors.index.json"));
  fs::remove_all(dir);
}

TEST(HfExport, Bf16ExportRoundsEveryValue) {
  const core::ModelSpec spec = tiny_llama();
  const std::vector<Tensor> params = random_params(spec, 5);
  const fs::path dir = temp_dir("bf16");
  ASSERT_TRUE(export_hf(spec, params, dir.string(), DType::kBF16, 0).ok());
  const auto out = read_export(dir);
  const Tensor& q = out.at("model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(q.dtype, DType::kBF16);
  const std::vector<float> src = as_f32(find(params, "layers.0.attn.wq.weight"));
  const std::vector<float> got = as_f32(q);
  for (size_t i = 0; i < src.size(); ++i) ASSERT_EQ(got[i], bf16_to_float(float_to_bf16(src[i])));
  const nlohmann::json config = nlohmann::json::parse(std::ifstream(dir / "config.json"));
  EXPECT_EQ(config["torch_dtype"], "bfloat16");
  fs::remove_all(dir);
}

TEST(HfExport, RefusesMissingExtraAndMisshapenParams) {
  const core::ModelSpec spec = tiny_llama();
  const fs::path dir = temp_dir("refuse");
  std::vector<Tensor> missing = random_params(spec, 6);
  missing.erase(missing.begin() + 3);  // embed, attn_norm, wq, wk
  auto st = export_hf(spec, missing, dir.string(), DType::kF32, 0);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("missing 'layers.0.attn.wk.weight'"), std::string::npos)
      << st.message();

  core::ModelSpec tied = spec;
  tied.tied_embeddings = true;
  st = export_hf(tied, random_params(spec, 6), dir.string(), DType::kF32, 0);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("unexpected 'lm_head.weight'"), std::string::npos) << st.message();

  std::vector<Tensor> misshapen = random_params(spec, 6);
  misshapen[0].shape = {97, 32};  // the unpadded vocabulary
  st = export_hf(spec, misshapen, dir.string(), DType::kF32, 0);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("'embed.weight'"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("[128, 32]"), std::string::npos) << st.message();
  fs::remove_all(dir);
}

TEST(HfExport, ParsesShardSizes) {
  EXPECT_EQ(*parse_byte_size("5GB", "--max-shard-size"), 5'000'000'000);
  EXPECT_EQ(*parse_byte_size("500MB", "x"), 500'000'000);
  EXPECT_EQ(*parse_byte_size("2GiB", "x"), int64_t{2} << 30);
  EXPECT_EQ(*parse_byte_size("1.5kb", "x"), 1500);
  EXPECT_EQ(*parse_byte_size("4096", "x"), 4096);
  auto bad = parse_byte_size("5 parsecs", "--max-shard-size");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("--max-shard-size '5 parsecs'"), std::string::npos);
  EXPECT_FALSE(parse_byte_size("0", "x").ok());
}

}  // namespace
}  // namespace loom::ckpt
