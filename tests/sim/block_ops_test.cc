// Operation lists against the FLOP convention: a block's GEMMs forward + backward are
// 6 x (block matmul parameters / tp) x tokens, the LM head's 6 V h / tp per token; attention
// FLOPs are the s^2 terms (halved for causal flash attention); tensor-parallel collectives
// appear 2 + 2 per block without sequence parallelism (Shoeybi et al. 2019) and as
// all-gather / reduce-scatter pairs with it.
#include "simulator/block_ops.h"

#include <gtest/gtest.h>

#include "core/model_io.h"

namespace loom::sim {
namespace {

double gemm_flops(const std::vector<Op>& ops) {
  double f = 0;
  for (const auto& op : ops) {
    if (op.kind == OpKind::kGemm && std::string(op.name).rfind("attention", 0) != 0) f += op.flops;
  }
  return f;
}

int count(const std::vector<Op>& ops, OpKind kind) {
  int n = 0;
  for (const auto& op : ops) n += op.kind == kind;
  return n;
}

core::Layout layout(int64_t tp, bool sp) {
  core::Layout l;
  l.tp = tp;
  l.sp = sp;
  l.mbs = 2;
  l.seq = 2048;
  return l;
}

TEST(BlockOps, GemmFlopsAreSixTimesMatmulParameters) {
  for (const char* name : {"llama2-70b", "gpt3-175b", "qwen-7b"}) {
    const auto m = core::load_model(name).value();
    const auto l = layout(8, true);
    const double tokens = 2.0 * 2048;
    const double block_matmul =
        static_cast<double>(m.matmul_params() - m.vocab_size * m.hidden_size) / m.num_layers;
    OpOptions o;
    const double fwd = gemm_flops(block_forward_ops(m, l, o));
    const double bwd = gemm_flops(block_backward_ops(m, l, o));
    EXPECT_NEAR(fwd, 2.0 * block_matmul / 8 * tokens, 1e-6 * fwd) << name;
    EXPECT_NEAR(bwd, 2.0 * fwd, 1e-6 * fwd) << name;
    const double head = gemm_flops(lm_head_ops(m, l, false)) + gemm_flops(lm_head_ops(m, l, true));
    EXPECT_NEAR(head, 6.0 * m.padded_vocab(8) / 8 * m.hidden_size * tokens, 1e-6 * head) << name;
  }
}

TEST(BlockOps, Gpt3LayerForwardFlopsByHand) {
  // One GPT-3 175B layer, one 2048-token sequence, no TP: QKV 3h^2, output h^2, MLP 8h^2 -> 24 s h^2
  // GEMM FLOPs; QK^T and attention-over-V 2 x 2 s^2 h (Narayanan et al. 2021, Sec. 5.1 / App.).
  const auto m = core::load_model("gpt3-175b").value();
  core::Layout l;
  l.mbs = 1;
  l.seq = 2048;
  OpOptions eager;
  eager.flash_attention = false;
  double gemm = 0, attention = 0;
  for (const auto& op : block_forward_ops(m, l, eager)) {
    if (std::string(op.name).rfind("attention", 0) == 0) attention += op.flops;
    else gemm += op.flops;
  }
  const double s = 2048, h = 12288;
  EXPECT_DOUBLE_EQ(gemm, 24 * s * h * h);  // 7.42e12
  EXPECT_DOUBLE_EQ(attention, 4 * s * s * h);
}

TEST(BlockOps, AttentionFlops) {
  const auto m = core::load_model("gpt3-175b").value();
  const auto l = layout(8, false);
  const double full = 4.0 * 2 * 2048.0 * 2048 * 12288 / 8;  // 4 b s^2 h / t
  OpOptions flash;
  const auto fwd = block_forward_ops(m, l, flash);
  double attention = 0;
  for (const auto& op : fwd) attention += op.kind == OpKind::kAttention ? op.flops : 0;
  EXPECT_NEAR(attention, 0.5 * full, 1e-6 * full);  // causal: half the tiles
  OpOptions eager;
  eager.flash_attention = false;
  double unfused = 0;
  for (const auto& op : block_forward_ops(m, l, eager)) {
    if (std::string(op.name).rfind("attention", 0) == 0) unfused += op.flops;
  }
  EXPECT_NEAR(unfused, full, 1e-6 * full);
}

TEST(BlockOps, TensorParallelCollectives) {
  const auto m = core::load_model("gpt3-175b").value();
  OpOptions o;
  const auto no_sp_fwd = block_forward_ops(m, layout(8, false), o);
  const auto no_sp_bwd = block_backward_ops(m, layout(8, false), o);
  EXPECT_EQ(count(no_sp_fwd, OpKind::kTpAllReduce), 2);
  EXPECT_EQ(count(no_sp_bwd, OpKind::kTpAllReduce), 2);
  const auto sp_fwd = block_forward_ops(m, layout(8, true), o);
  EXPECT_EQ(count(sp_fwd, OpKind::kTpAllGather), 2);
  EXPECT_EQ(count(sp_fwd, OpKind::kTpReduceScatter), 2);
  EXPECT_EQ(count(sp_fwd, OpKind::kTpAllReduce), 0);
  EXPECT_EQ(count(block_forward_ops(m, layout(1, false), o), OpKind::kTpAllReduce), 0);
}

TEST(BlockOps, RecomputeRepeatsTheForward) {
  const auto m = core::load_model("llama-7b").value();
  auto l = layout(1, false);
  OpOptions o;
  l.recompute = core::Recompute::kFull;
  EXPECT_DOUBLE_EQ(total_flops(block_recompute_ops(m, l, o)),
                   total_flops(block_forward_ops(m, l, o)));
  l.recompute = core::Recompute::kSelective;
  EXPECT_TRUE(block_recompute_ops(m, l, o).empty());  // flash attention recomputes internally
  o.flash_attention = false;
  EXPECT_GT(total_flops(block_recompute_ops(m, l, o)), 0);
}

}  // namespace
}  // namespace loom::sim
