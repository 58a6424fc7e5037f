// Every shipped model preset loads and its exact parameter count matches the count its authors
// publish (within 1%, or within half a unit of the printed figure), and the BLOOM facts users
// know hold: embedding 7.19e9 bytes in bf16, one block 4.93e9 bytes, 176.2e9 parameters.
#include <cmath>

#include <gtest/gtest.h>

#include "core/data_paths.h"
#include "core/model_io.h"

namespace loom::core {
namespace {

TEST(ModelPresets, AllRequiredPresetsExist) {
  const auto names = list_data_files("models");
  for (const char* required :
       {"gpt3-175b", "bloom-176b", "llama-7b", "llama-13b", "llama-33b", "llama-65b", "llama2-7b",
        "llama2-13b", "llama2-70b", "qwen-7b", "qwen-14b", "qwen-72b", "mt-nlg-530b",
        "megatron-1.7b", "megatron-3.6b", "megatron-7.5b", "megatron-18.4b", "megatron-39.1b",
        "megatron-76.1b", "megatron-145.6b", "megatron-310.1b", "megatron-529.6b", "megatron-1t",
        "tiny-llama", "tiny-qwen", "tiny-bloom", "tiny-gpt"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), required), names.end()) << required;
  }
}

TEST(ModelPresets, ParameterCountsMatchPublishedFigures) {
  int checked = 0;
  for (const auto& name : list_data_files("models")) {
    auto spec = load_model(name);
    ASSERT_TRUE(spec.ok()) << spec.status().message();
    EXPECT_EQ(spec->name, name) << "preset name must equal its file name";
    if (name.rfind("tiny-", 0) == 0) continue;
    ASSERT_GT(spec->published_params, 0) << name << " has no published_params";
    const double computed = static_cast<double>(spec->total_params());
    const double tolerance = std::max(0.01 * spec->published_params, spec->published_params_unit / 2);
    EXPECT_NEAR(computed, spec->published_params, tolerance) << name;
    ++checked;
  }
  EXPECT_GE(checked, 23);
}

TEST(ModelPresets, TinyModelsAreSmallAndTensorParallelisable) {
  for (const char* name : {"tiny-llama", "tiny-qwen", "tiny-bloom", "tiny-gpt"}) {
    auto spec = load_model(name);
    ASSERT_TRUE(spec.ok()) << spec.status().message();
    EXPECT_LT(spec->total_params(), 2'000'000) << name;
    EXPECT_EQ(spec->num_heads % 2, 0) << name;
    EXPECT_EQ(spec->num_kv_heads % 2, 0) << name;
  }
}

TEST(ModelPresets, BloomEmbeddingIs7_2GBAndBiggerThanABlock) {
  auto bloom = load_model("bloom-176b");
  ASSERT_TRUE(bloom.ok()) << bloom.status().message();
  // 250,880 x 14,336 x 2 bytes = 7.193e9 (the word-embedding matrix alone).
  EXPECT_EQ(bloom->padded_vocab(4) * bloom->hidden_size * 2, int64_t{250880} * 14336 * 2);
  EXPECT_NEAR(bloom->padded_vocab(4) * bloom->hidden_size * 2.0, 7.19e9, 0.005e9);
  // One block: 12h^2 + 13h parameters (BigScience README formula) = 4.93e9 bytes in bf16.
  const int64_t h = 14336;
  EXPECT_EQ(bloom->block_params(1), 12 * h * h + 13 * h);
  EXPECT_NEAR(bloom->block_params(1) * 2.0, 4.93e9, 0.005e9);
  EXPECT_GT(bloom->embedding_params(1, true), bloom->block_params(1));
  EXPECT_NEAR(bloom->total_params(), 176.2e9, 0.01 * 176.2e9);
}

TEST(ModelPresets, LlamaFamilyConventions) {
  auto llama = load_model("llama-7b");
  ASSERT_TRUE(llama.ok());
  EXPECT_EQ(llama->norm, NormKind::kRmsNorm);
  EXPECT_EQ(llama->mlp, MlpKind::kSwiGlu);
  EXPECT_EQ(llama->position, PositionKind::kRope);
  EXPECT_FALSE(llama->tied_embeddings);
  // SwiGLU width 2/3 x 4h rounded up to a multiple of 256 (LLaMA paper, Sec. 2.2).
  EXPECT_EQ(llama->ffn_hidden_size, ((2 * 4 * 4096 / 3) + 255) / 256 * 256);
  auto llama2_70b = load_model("llama2-70b");
  ASSERT_TRUE(llama2_70b.ok());
  EXPECT_EQ(llama2_70b->num_kv_heads, 8);  // grouped-query attention
  auto qwen = load_model("qwen-7b");
  ASSERT_TRUE(qwen.ok());
  EXPECT_TRUE(qwen->qkv_bias);
  EXPECT_FALSE(qwen->out_bias);
}

}  // namespace
}  // namespace loom::core
