// Per-block operation lists: see block_ops.h. Shapes follow Megatron-LM's tensor-parallel
// layers (column-parallel QKV and MLP-in, row-parallel attention-out and MLP-out, Shoeybi et
// al. 2019) and sequence parallelism (Korthikanti et al. 2022, Sec. 4.2.2).
#include "simulator/block_ops.h"

#include "simulator/activation_memory.h"

namespace loom::sim {

namespace {

struct Dims {
  double T;       // tokens of a micro-batch (b x s)
  double T_sp;    // tokens an element-wise op on the residual stream touches (T / tp under SP)
  double b, s, h, q, kv, f, mlp_in, heads, t, a;
};

Dims dims(const core::ModelSpec& m, const core::Layout& l) {
  Dims d;
  d.b = static_cast<double>(l.mbs);
  d.s = static_cast<double>(l.seq);
  d.T = d.b * d.s;
  d.t = static_cast<double>(l.tp);
  d.T_sp = l.sp ? d.T / d.t : d.T;
  d.h = static_cast<double>(m.hidden_size);
  d.q = static_cast<double>(m.q_dim());
  d.kv = static_cast<double>(m.kv_dim());
  d.f = static_cast<double>(m.ffn_hidden_size);
  d.mlp_in = (m.mlp == core::MlpKind::kSwiGlu ? 2.0 : 1.0) * d.f;
  d.heads = static_cast<double>(m.num_heads);
  d.a = activation_bytes(l.precision);
  return d;
}

Op gemm(const char* name, double m, double n, double k, double batch = 1) {
  Op op{name, OpKind::kGemm};
  op.m = m;
  op.n = n;
  op.k = k;
  op.batch = batch;
  op.flops = 2.0 * m * n * k * batch;
  return op;
}

Op elementwise(const char* name, double bytes) {
  Op op{name, OpKind::kElementwise};
  op.bytes = bytes;
  return op;
}

Op collective(const char* name, OpKind kind, double bytes) {
  Op op{name, kind};
  op.bytes = bytes;
  return op;
}

// Y[T, n] = X[T, k] W[k, n]: backward computes dX = dY W^T (T x k x n) and dW = X^T dY
// (k x n x T), each with the forward's FLOPs.
void add_gemm_backward(std::vector<Op>& ops, const char* dgrad, const char* wgrad, double T,
                       double n, double k) {
  ops.push_back(gemm(dgrad, T, k, n));
  ops.push_back(gemm(wgrad, k, n, T));
}

void add_attention(std::vector<Op>& ops, const Dims& d, const OpOptions& o, bool backward) {
  const double heads_local = d.heads / d.t;
  const double head_dim = d.q / d.heads;
  if (o.flash_attention) {
    // Causal flash attention skips the masked half: forward 2 GEMMs of s x s x head_dim per
    // head, half computed; backward recomputes the scores and runs 5 GEMMs (2.5 x forward;
    // Dao 2023, FlashAttention-2, Sec. 3.1).
    Op op{backward ? "attention.bwd" : "attention", OpKind::kAttention};
    const double fwd = 4.0 * d.b * heads_local * d.s * d.s * head_dim * 0.5;
    op.flops = backward ? 2.5 * fwd : fwd;
    op.backward = backward;
    ops.push_back(op);
    return;
  }
  // Unfused attention (Megatron 2021-22): batched GEMMs over b x heads, fused scaled masked
  // softmax and dropout as element-wise kernels over the full s x s scores.
  const double batch = d.b * heads_local;
  const double scores = batch * d.s * d.s;
  if (!backward) {
    ops.push_back(gemm("attention.qk", d.s, d.s, head_dim, batch));
    ops.push_back(elementwise("attention.softmax", 2.0 * d.a * scores));
    if (o.dropout) ops.push_back(elementwise("attention.dropout", (2.0 * d.a + 1.0) * scores));
    ops.push_back(gemm("attention.av", d.s, head_dim, d.s, batch));
    return;
  }
  add_gemm_backward(ops, "attention.av.dgrad", "attention.av.wgrad", d.s * batch, head_dim, d.s);
  if (o.dropout) ops.push_back(elementwise("attention.dropout.bwd", (2.0 * d.a + 1.0) * scores));
  ops.push_back(elementwise("attention.softmax.bwd", 3.0 * d.a * scores));
  add_gemm_backward(ops, "attention.qk.dgrad", "attention.qk.wgrad", d.s * batch, d.s, head_dim);
}

// Tensor-parallel collectives around a column-parallel (enter) / row-parallel (leave) pair.
void add_tp_enter(std::vector<Op>& ops, const Dims& d, const core::Layout& l, const char* name) {
  if (l.tp > 1 && l.sp) ops.push_back(collective(name, OpKind::kTpAllGather, d.a * d.T * d.h));
}
void add_tp_leave(std::vector<Op>& ops, const Dims& d, const core::Layout& l, const char* name) {
  if (l.tp == 1) return;
  ops.push_back(collective(name, l.sp ? OpKind::kTpReduceScatter : OpKind::kTpAllReduce,
                           d.a * d.T * d.h));
}

}  // namespace

std::vector<Op> block_forward_ops(const core::ModelSpec& m, const core::Layout& l,
                                  const OpOptions& o) {
  const Dims d = dims(m, l);
  const double mask = o.dropout ? d.T_sp * d.h : 0.0;  // 1-byte dropout mask written
  std::vector<Op> ops;
  ops.push_back(elementwise("norm1", 2.0 * d.a * d.h * d.T_sp));
  add_tp_enter(ops, d, l, "tp.allgather.attn");
  ops.push_back(gemm("qkv", d.T, (d.q + 2.0 * d.kv) / d.t, d.h));
  if (m.position == core::PositionKind::kRope) {
    ops.push_back(elementwise("rope", 2.0 * d.a * d.T * (d.q + d.kv) / d.t));
  }
  add_attention(ops, d, o, /*backward=*/false);
  ops.push_back(gemm("attn_out", d.T, d.h, d.q / d.t));
  add_tp_leave(ops, d, l, "tp.reduce.attn");
  ops.push_back(elementwise("residual1", 3.0 * d.a * d.h * d.T_sp + mask));
  ops.push_back(elementwise("norm2", 2.0 * d.a * d.h * d.T_sp));
  add_tp_enter(ops, d, l, "tp.allgather.mlp");
  ops.push_back(gemm("mlp_in", d.T, d.mlp_in / d.t, d.h));
  const bool swiglu = m.mlp == core::MlpKind::kSwiGlu;
  ops.push_back(elementwise(swiglu ? "swiglu" : "gelu", (swiglu ? 3.0 : 2.0) * d.a * d.T * d.f / d.t));
  ops.push_back(gemm("mlp_out", d.T, d.h, d.f / d.t));
  add_tp_leave(ops, d, l, "tp.reduce.mlp");
  ops.push_back(elementwise("residual2", 3.0 * d.a * d.h * d.T_sp + mask));
  return ops;
}

std::vector<Op> block_backward_ops(const core::ModelSpec& m, const core::Layout& l,
                                   const OpOptions& o) {
  const Dims d = dims(m, l);
  const double mask = o.dropout ? d.T_sp * d.h : 0.0;
  const bool swiglu = m.mlp == core::MlpKind::kSwiGlu;
  std::vector<Op> ops;
  ops.push_back(elementwise("residual2.bwd", 3.0 * d.a * d.h * d.T_sp + mask));
  if (l.tp > 1 && l.sp) {
    ops.push_back(collective("tp.allgather.mlp.grad", OpKind::kTpAllGather, d.a * d.T * d.h));
  }
  add_gemm_backward(ops, "mlp_out.dgrad", "mlp_out.wgrad", d.T, d.h, d.f / d.t);
  ops.push_back(elementwise(swiglu ? "swiglu.bwd" : "gelu.bwd", (swiglu ? 5.0 : 3.0) * d.a * d.T * d.f / d.t));
  // Sequence parallelism keeps the MLP input sharded and gathers it again for the wgrad.
  add_tp_enter(ops, d, l, "tp.allgather.mlp.input");
  add_gemm_backward(ops, "mlp_in.dgrad", "mlp_in.wgrad", d.T, d.mlp_in / d.t, d.h);
  add_tp_leave(ops, d, l, "tp.reduce.mlp.grad");
  ops.push_back(elementwise("norm2.bwd", 3.0 * d.a * d.h * d.T_sp));
  ops.push_back(elementwise("residual1.bwd", 3.0 * d.a * d.h * d.T_sp + mask));
  if (l.tp > 1 && l.sp) {
    ops.push_back(collective("tp.allgather.attn.grad", OpKind::kTpAllGather, d.a * d.T * d.h));
  }
  add_gemm_backward(ops, "attn_out.dgrad", "attn_out.wgrad", d.T, d.h, d.q / d.t);
  add_attention(ops, d, o, /*backward=*/true);
  if (m.position == core::PositionKind::kRope) {
    ops.push_back(elementwise("rope.bwd", 2.0 * d.a * d.T * (d.q + d.kv) / d.t));
  }
  add_tp_enter(ops, d, l, "tp.allgather.attn.input");
  add_gemm_backward(ops, "qkv.dgrad", "qkv.wgrad", d.T, (d.q + 2.0 * d.kv) / d.t, d.h);
  add_tp_leave(ops, d, l, "tp.reduce.attn.grad");
  ops.push_back(elementwise("norm1.bwd", 3.0 * d.a * d.h * d.T_sp));
  return ops;
}

std::vector<Op> block_recompute_ops(const core::ModelSpec& m, const core::Layout& l,
                                    const OpOptions& o) {
  if (l.recompute == core::Recompute::kFull) return block_forward_ops(m, l, o);
  std::vector<Op> ops;
  if (l.recompute == core::Recompute::kSelective &&
      (!o.flash_attention || o.selective_recomputes_attention)) {
    add_attention(ops, dims(m, l), o, /*backward=*/false);
  }
  return ops;
}

std::vector<Op> embedding_ops(const core::ModelSpec& m, const core::Layout& l, bool backward) {
  const Dims d = dims(m, l);
  std::vector<Op> ops;
  if (!backward) {
    // Vocab-parallel lookup: each TP rank fills the rows of its vocabulary shard, then the
    // partial embeddings are summed across TP.
    ops.push_back(elementwise("embedding", 2.0 * d.a * d.T * d.h));
    add_tp_leave(ops, d, l, "tp.reduce.embedding");
    if (m.position == core::PositionKind::kLearned) {
      ops.push_back(elementwise("position_embedding", 3.0 * d.a * d.h * d.T_sp));
    }
    if (m.embedding_norm) ops.push_back(elementwise("embedding_norm", 2.0 * d.a * d.h * d.T_sp));
    return ops;
  }
  if (m.embedding_norm) ops.push_back(elementwise("embedding_norm.bwd", 3.0 * d.a * d.h * d.T_sp));
  add_tp_enter(ops, d, l, "tp.allgather.embedding.grad");
  // Scatter-add of the token gradients into the fp32 gradient rows (read + write).
  ops.push_back(elementwise("embedding.bwd", d.a * d.T * d.h + 8.0 * d.T * d.h));
  return ops;
}

std::vector<Op> lm_head_ops(const core::ModelSpec& m, const core::Layout& l, bool backward) {
  const Dims d = dims(m, l);
  const double vocab_local = static_cast<double>(m.padded_vocab(l.tp) / l.tp);
  const double logits = d.T * vocab_local;
  std::vector<Op> ops;
  if (!backward) {
    ops.push_back(elementwise("final_norm", 2.0 * d.a * d.h * d.T_sp));
    add_tp_enter(ops, d, l, "tp.allgather.head");
    ops.push_back(gemm("lm_head", d.T, vocab_local, d.h));
    // Vocab-parallel cross-entropy in fp32: upcast, max, exp, sum, normalise (Megatron
    // _VocabParallelCrossEntropy): about 26 bytes moved per logit; the max, the sum and the
    // target logit are all-reduced over TP (3 x 4 bytes per token).
    ops.push_back(elementwise("cross_entropy", 26.0 * logits));
    if (l.tp > 1) ops.push_back(collective("tp.allreduce.loss", OpKind::kTpAllReduce, 12.0 * d.T));
    return ops;
  }
  ops.push_back(elementwise("cross_entropy.bwd", 10.0 * logits));
  add_gemm_backward(ops, "lm_head.dgrad", "lm_head.wgrad", d.T, vocab_local, d.h);
  add_tp_leave(ops, d, l, "tp.reduce.head.grad");
  ops.push_back(elementwise("final_norm.bwd", 3.0 * d.a * d.h * d.T_sp));
  return ops;
}

double total_flops(const std::vector<Op>& ops) {
  double f = 0;
  for (const auto& op : ops) f += op.flops;
  return f;
}

}  // namespace loom::sim
