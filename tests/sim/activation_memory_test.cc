// The generalised activation model reduces exactly to Korthikanti et al. 2022, Table 2, for a
// GPT-3-style block (MHA, GeLU 4h, dropout, no flash attention), in every recompute / TP / SP
// combination; flash attention removes the s^2 term; GQA shrinks K and V.
#include "simulator/activation_memory.h"

#include <gtest/gtest.h>

#include "core/model_io.h"

namespace loom::sim {
namespace {

struct Fixture {
  core::ModelSpec model;
  core::Layout layout;
  ActivationOptions opts;
};

Fixture gpt3(int64_t tp, bool sp) {
  Fixture f;
  f.model = core::load_model("gpt3-175b").value();
  f.layout.tp = tp;
  f.layout.sp = sp;
  f.layout.seq = 2048;
  f.layout.mbs = 1;
  f.opts.flash_attention = false;
  f.opts.dropout = true;
  return f;
}

TEST(ActivationMemory, MatchesKorthikantiTable2) {
  const double s = 2048, b = 1, h = 12288, a = 96;
  for (int64_t t : {1, 2, 8}) {
    const double sbh = s * b * h;
    {
      Fixture f = gpt3(t, false);
      const BlockActivations act = block_activations(f.model, f.layout, f.opts);
      // No parallelism extras: sbh(10 + 24/t + 5as/(ht)).
      EXPECT_DOUBLE_EQ(act.full_bytes, sbh * (10 + 24.0 / t + 5 * a * s / (h * t))) << "tp " << t;
      // Selective recompute without SP: sbh(10 + 24/t).
      EXPECT_DOUBLE_EQ(act.selective_bytes, sbh * (10 + 24.0 / t));
      // Full recompute: 2sbh per layer.
      EXPECT_DOUBLE_EQ(act.checkpoint_bytes, 2 * sbh);
    }
    if (t > 1) {
      Fixture f = gpt3(t, true);
      const BlockActivations act = block_activations(f.model, f.layout, f.opts);
      // Sequence parallel: sbh(34/t + 5as/(ht)); selective + SP: 34 sbh / t.
      EXPECT_DOUBLE_EQ(act.full_bytes, sbh * (34.0 / t + 5 * a * s / (h * t)));
      EXPECT_DOUBLE_EQ(act.selective_bytes, sbh * 34.0 / t);
      EXPECT_DOUBLE_EQ(act.checkpoint_bytes, 2 * sbh / t);
    }
  }
}

TEST(ActivationMemory, FlashAttentionDropsTheScoreMatrix) {
  Fixture f = gpt3(8, true);
  f.opts.flash_attention = true;
  const BlockActivations act = block_activations(f.model, f.layout, f.opts);
  const double sbh = 2048.0 * 12288;
  // 34 sbh / t plus the fp32 log-sum-exp (4 bytes per head and token).
  EXPECT_DOUBLE_EQ(act.full_bytes, sbh * 34.0 / 8 + 2048.0 * 4 * 96 / 8);
  EXPECT_DOUBLE_EQ(act.full_bytes, act.selective_bytes);
}

TEST(ActivationMemory, GroupedQueryAttentionStoresSmallerKeysAndValues) {
  auto mha = core::load_model("llama-65b").value();
  auto gqa = core::load_model("llama2-70b").value();  // same h, 8 kv heads
  core::Layout l;
  l.seq = 4096;
  l.mbs = 1;
  ActivationOptions o;
  o.swiglu_saved_f = 3;
  const double per_token_mha = block_activations(mha, l, o).full_bytes / 4096;
  const double per_token_gqa = block_activations(gqa, l, o).full_bytes / 4096;
  const double h = 8192, kv = 8 * 128, f_mha = 22016, f_gqa = 28672;
  // Difference = K, V (2 x (h - kv) x 2 bytes) + the SwiGLU width change (3 x 2 bytes x df).
  EXPECT_DOUBLE_EQ(per_token_mha - per_token_gqa, 2 * 2 * (h - kv) + 3 * 2 * (f_mha - f_gqa));
}

TEST(ActivationMemory, RecomputeWorkingSetsAreOrdered) {
  Fixture f = gpt3(8, true);
  const BlockActivations act = block_activations(f.model, f.layout, f.opts);
  EXPECT_LT(act.stored(core::Recompute::kFull), act.stored(core::Recompute::kSelective));
  EXPECT_LT(act.stored(core::Recompute::kSelective), act.stored(core::Recompute::kNone));
  // Full recompute re-materialises one block during its backward.
  EXPECT_DOUBLE_EQ(act.backward_working(core::Recompute::kFull),
                   act.grad_working_bytes + act.full_bytes);
}

}  // namespace
}  // namespace loom::sim
