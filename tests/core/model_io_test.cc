// Hugging Face config.json loading: real config files of each family give the published
// parameter counts and agree with Loom's own presets; older and newer key spellings both load;
// bad files fail with errors that name the key.
#include "core/model_io.h"

#include <gtest/gtest.h>

#include <fstream>

namespace loom::core {
namespace {

const std::string kDir = std::string(LOOM_TEST_DATA_DIR) + "/hf_configs/";

struct HfCase {
  const char* file;
  const char* preset;       // the Loom preset describing the same model ("" if none)
  double published_params;  // from tests/data/hf_configs/README.md (HF safetensors totals, cards)
};

class HfConfigFamilies : public ::testing::TestWithParam<HfCase> {};

TEST_P(HfConfigFamilies, LoadsWithPublishedCountAndMatchesPreset) {
  const HfCase& c = GetParam();
  auto spec = load_model(kDir + c.file);
  ASSERT_TRUE(spec.ok()) << spec.status().message();
  // Safetensors totals include rotary inv_freq buffers (a few thousand values): 1e-5 relative.
  EXPECT_NEAR(static_cast<double>(spec->total_params()), c.published_params, 1e-5 * c.published_params)
      << c.file;
  if (std::string(c.preset).empty()) return;
  auto preset = load_model(c.preset);
  ASSERT_TRUE(preset.ok()) << preset.status().message();
  EXPECT_EQ(spec->total_params(), preset->total_params()) << c.file << " vs " << c.preset;
  EXPECT_EQ(spec->num_layers, preset->num_layers);
  EXPECT_EQ(spec->ffn_hidden_size, preset->ffn_hidden_size);
  EXPECT_EQ(spec->num_kv_heads, preset->num_kv_heads);
  EXPECT_EQ(spec->norm, preset->norm);
  EXPECT_EQ(spec->mlp, preset->mlp);
  EXPECT_EQ(spec->position, preset->position);
  EXPECT_EQ(spec->tied_embeddings, preset->tied_embeddings);
  EXPECT_EQ(spec->qkv_bias, preset->qkv_bias);
}

INSTANTIATE_TEST_SUITE_P(
    Families, HfConfigFamilies,
    ::testing::Values(HfCase{"llama2-7b.json", "llama2-7b", 6738417664.0},
                      HfCase{"llama2-7b-rope-parameters.json", "llama2-7b", 6738417664.0},
                      HfCase{"llama2-70b.json", "llama2-70b", 68976653312.0},
                      HfCase{"qwen-7b.json", "qwen-7b", 7721324544.0},
                      HfCase{"qwen2-7b.json", "qwen2-7b", 7615616512.0},
                      HfCase{"bloom.json", "bloom-176b", 176247271424.0},
                      HfCase{"gpt2.json", "", 124439808.0},
                      HfCase{"gpt-neox-20b.json", "gpt-neox-20b", 20554567680.0}));

TEST(HfConfig, OldAndNewRopeThetaSpellings) {
  auto old_style = model_from_hf_config(
      nlohmann::json::parse(R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 172,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 256, "max_position_embeddings": 128, "rope_theta": 500000.0})"),
      "old/config.json");
  ASSERT_TRUE(old_style.ok()) << old_style.status().message();
  EXPECT_DOUBLE_EQ(old_style->rope_theta, 500000.0);
  auto new_style = model_from_hf_config(
      nlohmann::json::parse(R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 172,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 256, "max_position_embeddings": 128,
        "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}})"),
      "new/config.json");
  ASSERT_TRUE(new_style.ok()) << new_style.status().message();
  EXPECT_DOUBLE_EQ(new_style->rope_theta, 500000.0);
  EXPECT_EQ(new_style->name, "new");  // a checkpoint folder's config.json takes the folder name
}

TEST(HfConfig, BloomLegacyKeysAndQwenV1DoubledIntermediate) {
  auto bloom = load_model(kDir + "bloom.json");
  ASSERT_TRUE(bloom.ok()) << bloom.status().message();
  EXPECT_EQ(bloom->hidden_size, 14336);  // from n_embed
  EXPECT_EQ(bloom->position, PositionKind::kAlibi);
  EXPECT_TRUE(bloom->embedding_norm);
  auto qwen = load_model(kDir + "qwen-7b.json");
  ASSERT_TRUE(qwen.ok()) << qwen.status().message();
  EXPECT_EQ(qwen->ffn_hidden_size, 11008);  // intermediate_size 22016 / 2
}

TEST(HfConfig, UnknownModelTypeListsSupportedOnes) {
  auto spec = model_from_hf_config(nlohmann::json::parse(R"({"model_type": "t5"})"), "x/config.json");
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find("model_type 't5' is not supported"), std::string::npos);
  EXPECT_NE(spec.status().message().find("llama"), std::string::npos);
}

TEST(HfConfig, MissingKeyNamesBothSpellings) {
  auto spec = model_from_hf_config(
      nlohmann::json::parse(R"({"model_type": "bloom", "n_embed": 64, "n_head": 4, "vocab_size": 256})"),
      "b/config.json");
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find("'n_layer' or 'num_hidden_layers'"), std::string::npos)
      << spec.status().message();
}

TEST(HfConfig, WrongTypeIsRejected) {
  auto spec = model_from_hf_config(
      nlohmann::json::parse(R"({"model_type": "gpt2", "n_embd": "big", "n_layer": 2, "n_head": 2,
        "vocab_size": 256, "n_positions": 64})"),
      "g/config.json");
  ASSERT_FALSE(spec.ok());
  EXPECT_NE(spec.status().message().find("'n_embd'"), std::string::npos) << spec.status().message();
}

TEST(HfConfig, MalformedJsonIsAParseError) {
  const std::string path = ::testing::TempDir() + "/broken_config.json";
  std::ofstream(path) << "{\"model_type\": \"llama\", ";
  auto spec = load_model(path);
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), ErrorCode::kParse);
  EXPECT_NE(spec.status().message().find(path), std::string::npos);
}

TEST(ModelLoading, UnknownPresetListsAvailableOnes) {
  auto spec = load_model("llama-8b");
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), ErrorCode::kNotFound);
  EXPECT_NE(spec.status().message().find("unknown model preset 'llama-8b'"), std::string::npos);
  EXPECT_NE(spec.status().message().find("llama-7b"), std::string::npos);
}

TEST(ModelLoading, MissingFileIsNotFound) {
  auto spec = load_model("/no/such/model.yaml");
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), ErrorCode::kNotFound);
}

TEST(ModelLoading, PresetRoundTripsThroughYaml) {
  auto spec = load_model("qwen-7b");
  ASSERT_TRUE(spec.ok());
  auto again = model_from_yaml(model_to_yaml(*spec), "roundtrip");
  ASSERT_TRUE(again.ok()) << again.status().message();
  EXPECT_EQ(again->total_params(), spec->total_params());
  EXPECT_EQ(again->qkv_bias, spec->qkv_bias);
}

TEST(ModelSpecValidation, RejectsInconsistentShapes) {
  ModelSpec m;
  m.name = "bad";
  m.num_layers = 2;
  m.hidden_size = 64;
  m.num_heads = 6;  // 64 % 6 != 0
  m.num_kv_heads = 6;
  m.ffn_hidden_size = 256;
  m.vocab_size = 256;
  m.max_seq_len = 128;
  Status st = m.validate();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("not divisible by num_heads 6"), std::string::npos);
  m.num_heads = 4;
  m.num_kv_heads = 3;
  st = m.validate();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("num_kv_heads 3"), std::string::npos);
  m.num_kv_heads = 4;
  m.num_layers = 0;
  st = m.validate();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("'num_layers' = 0"), std::string::npos);
}

}  // namespace
}  // namespace loom::core
