// The whole model's backward pass against central finite differences, for every family
// (Llama: RMSNorm/SwiGLU/RoPE/GQA; Qwen: + QKV bias; BLOOM: LayerNorm/GeLU/ALiBi/embedding
// norm/tied; GPT: learned positions), in double (relative error < 1e-6) and in float (the
// float model's analytic gradient against double finite differences, < 1e-3), plus the
// recompute modes giving bit-identical gradients and the presets instantiating.
#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "core/model_io.h"
#include "trainer/param_layout.h"
#include "trainer/transformer.h"

namespace loom::train {
namespace {

core::ModelSpec tiny(const std::string& name) {
  auto spec = core::load_model(name);
  EXPECT_TRUE(spec.ok()) << spec.status().message();
  core::ModelSpec s = spec.value();
  s.hidden_size = 16;  // smaller than the preset: finite differences need many forward passes
  s.num_heads = 4;
  s.num_kv_heads = s.num_kv_heads == s.num_heads || s.num_kv_heads == 0 ? 4 : 2;
  s.ffn_hidden_size = s.mlp == core::MlpKind::kSwiGlu ? 24 : 64;
  s.vocab_size = 37;             // padded to 128: the padded columns must get no gradient
  s.max_seq_len = 16;
  return s;
}

std::vector<double> random_params(const ParamLayout& layout, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<double> p(layout.total());
  for (const auto& info : layout.params()) {
    for (int64_t i = 0; i < info.size; ++i) {
      // uniform in [-0.5, 0.5]; norm weights around 1 so the model is not degenerate
      const double u = static_cast<double>(rng() >> 11) / 9007199254740992.0 - 0.5;
      p[info.offset + i] = info.init == InitKind::kOnes ? 1.0 + 0.5 * u : 0.8 * u;
    }
  }
  return p;
}

std::vector<int32_t> random_tokens(int64_t b, int64_t s, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(b * (s + 1));
  for (auto& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

struct GradCheck {
  double max_rel_double = 0.0;  // per tensor: max |analytic - numeric| / max |numeric|
  double max_rel_float = 0.0;
  std::string worst;
};

// Samples up to `per_tensor` entries of every tensor (all of them for small tensors).
GradCheck check_model(const core::ModelSpec& spec, core::Recompute rc, int per_tensor) {
  const int64_t b = 2, s = 7;
  Transformer<double> md(spec, rc);
  Transformer<float> mf(spec, rc);
  const auto p = random_params(md.layout(), 7);
  const auto tokens = random_tokens(b, s, spec.vocab_size, 11);
  std::vector<double> g(p.size(), 0.0);
  md.forward_backward(p.data(), g.data(), tokens.data(), b, s, 1.0);
  std::vector<float> pf(p.begin(), p.end()), gf(p.size(), 0.f);
  mf.forward_backward(pf.data(), gf.data(), tokens.data(), b, s, 1.f);
  GradCheck out;
  std::mt19937_64 rng(3);
  auto q = p;
  for (const auto& info : md.layout().params()) {
    double max_num = 0.0, max_err_d = 0.0, max_err_f = 0.0;
    const int64_t n = std::min<int64_t>(info.size, per_tensor);
    for (int64_t k = 0; k < n; ++k) {
      const int64_t pick = n == info.size ? k : static_cast<int64_t>(rng() % info.size);
      const int64_t i = info.offset + pick;
      const double h = 1e-5;  // central differences: truncation ~h^2, rounding ~1e-16/h
      q[i] = p[i] + h;
      const double lp = md.forward_loss(q.data(), tokens.data(), b, s);
      q[i] = p[i] - h;
      const double lm = md.forward_loss(q.data(), tokens.data(), b, s);
      q[i] = p[i];
      const double num = (lp - lm) / (2 * h);
      max_num = std::max(max_num, std::abs(num));
      max_err_d = std::max(max_err_d, std::abs(g[i] - num));
      max_err_f = std::max(max_err_f, std::abs(static_cast<double>(gf[i]) - num));
    }
    // A tensor whose true gradient is zero: the key bias without RoPE (q.b is the same for
    // every key of a query, and softmax ignores a constant), unused vocabulary rows. Central
    // differences of a double loss are exact to ~1e-16 / h = 1e-11 there.
    if (max_num < 1e-9) {
      EXPECT_LT(max_err_d, 1e-9) << info.name;
      EXPECT_LT(max_err_f, 1e-5) << info.name;  // float rounding of O(1) intermediate values
      continue;
    }
    const double rd = max_err_d / max_num, rf = max_err_f / max_num;
    if (rd > out.max_rel_double) out.worst = info.name;
    out.max_rel_double = std::max(out.max_rel_double, rd);
    out.max_rel_float = std::max(out.max_rel_float, rf);
  }
  return out;
}

class FamilyGradients : public ::testing::TestWithParam<const char*> {};

TEST_P(FamilyGradients, MatchFiniteDifferences) {
  const core::ModelSpec spec = tiny(GetParam());
  const GradCheck r = check_model(spec, core::Recompute::kNone, 12);
  EXPECT_LT(r.max_rel_double, 1e-6) << GetParam() << " worst tensor " << r.worst;
  EXPECT_LT(r.max_rel_float, 1e-3) << GetParam();
  RecordProperty("max_rel_error_double", std::to_string(r.max_rel_double));
  RecordProperty("max_rel_error_float", std::to_string(r.max_rel_float));
  std::printf("%s: max relative error double %.3g, float %.3g\n", GetParam(), r.max_rel_double,
              r.max_rel_float);
}

INSTANTIATE_TEST_SUITE_P(Families, FamilyGradients,
                         ::testing::Values("tiny-llama", "tiny-qwen", "tiny-bloom", "tiny-gpt"));

TEST(Transformer, RecomputeModesGiveBitIdenticalGradients) {
  for (const char* name : {"tiny-llama", "tiny-bloom"}) {
    const core::ModelSpec spec = tiny(name);
    std::vector<std::vector<float>> grads;
    std::vector<double> losses;
    for (auto rc : {core::Recompute::kNone, core::Recompute::kSelective, core::Recompute::kFull}) {
      Transformer<float> m(spec, rc);
      const auto pd = random_params(m.layout(), 5);
      std::vector<float> p(pd.begin(), pd.end()), g(p.size(), 0.f);
      const auto tokens = random_tokens(3, 9, spec.vocab_size, 1);
      losses.push_back(m.forward_backward(p.data(), g.data(), tokens.data(), 3, 9, 0.01f));
      grads.push_back(g);
    }
    EXPECT_EQ(losses[0], losses[1]) << name;
    EXPECT_EQ(losses[0], losses[2]) << name;
    EXPECT_EQ(grads[0], grads[1]) << name << ": selective recompute changed the gradients";
    EXPECT_EQ(grads[0], grads[2]) << name << ": full recompute changed the gradients";
  }
}

TEST(Transformer, FullRecomputeKeepsLessActivationMemory) {
  core::ModelSpec spec = core::load_model("tiny-llama").value();
  spec.num_layers = 6;
  std::vector<int64_t> bytes;
  for (auto rc : {core::Recompute::kNone, core::Recompute::kSelective, core::Recompute::kFull}) {
    Transformer<float> m(spec, rc);
    std::vector<float> p(m.layout().total(), 0.01f), g(p.size(), 0.f);
    const auto tokens = random_tokens(2, 64, spec.vocab_size, 1);
    m.forward_backward(p.data(), g.data(), tokens.data(), 2, 64, 1.f);
    bytes.push_back(m.workspace_high_water_bytes());
  }
  EXPECT_LT(bytes[1], bytes[0]);
  EXPECT_LT(bytes[2], bytes[1] / 2);
}

TEST(Transformer, PaddedVocabularyColumnsGetNoGradientAndLossIsLogVocabAtZeroWeights) {
  const core::ModelSpec spec = tiny("tiny-llama");
  Transformer<double> m(spec, core::Recompute::kNone);
  std::vector<double> p(m.layout().total(), 0.0), g(p.size(), 0.0);
  for (const auto& info : m.layout().params()) {
    if (info.init == InitKind::kOnes) std::fill_n(p.begin() + info.offset, info.size, 1.0);
  }
  const auto tokens = random_tokens(2, 5, spec.vocab_size, 2);
  // All-zero weights give uniform predictions over the 37 real tokens, not the 128 padded.
  const double loss = m.forward_backward(p.data(), g.data(), tokens.data(), 2, 5, 1.0);
  EXPECT_NEAR(loss / 10.0, std::log(37.0), 1e-12);
  const auto* head = m.layout().find("lm_head.weight");
  ASSERT_NE(head, nullptr);
  for (int64_t r = spec.vocab_size; r < spec.padded_vocab(1); ++r) {
    for (int64_t c = 0; c < spec.hidden_size; ++c) {
      ASSERT_EQ(g[head->offset + r * spec.hidden_size + c], 0.0) << "padded row " << r;
    }
  }
}

TEST(ParamLayout, CountsMatchTheModelSpecForPresets) {
  for (const char* name : {"tiny-llama", "tiny-qwen", "tiny-bloom", "tiny-gpt", "llama-7b",
                           "llama2-70b", "qwen-7b", "bloom-176b", "gpt3-175b"}) {
    const core::ModelSpec spec = core::load_model(name).value();
    const ParamLayout layout(spec);
    const int64_t expected = spec.embedding_params(1, true) + spec.position_params() +
                             spec.num_layers * spec.block_params(1) + spec.final_norm_params() +
                             spec.lm_head_params(1, true);
    EXPECT_EQ(layout.total(), expected) << name;
    EXPECT_EQ(layout.find("embed.weight")->shape,
              (std::vector<int64_t>{spec.padded_vocab(1), spec.hidden_size}))
        << name;
  }
  const ParamLayout l70(core::load_model("llama2-70b").value());  // GQA: 8 KV heads of 128
  EXPECT_EQ(l70.find("layers.0.attn.wk.weight")->shape, (std::vector<int64_t>{1024, 8192}));
  EXPECT_EQ(l70.find("layers.0.mlp.w_gate.weight")->shape, (std::vector<int64_t>{28672, 8192}));
  const ParamLayout bloom(core::load_model("bloom-176b").value());  // tied: no lm_head tensor
  EXPECT_EQ(bloom.find("lm_head.weight"), nullptr);
  EXPECT_NE(bloom.find("embed_norm.bias"), nullptr);
  EXPECT_FALSE(bloom.find("layers.3.attn_norm.bias")->weight_decay);
  EXPECT_TRUE(bloom.find("layers.3.attn.wq.weight")->weight_decay);
}

}  // namespace
}  // namespace loom::train
