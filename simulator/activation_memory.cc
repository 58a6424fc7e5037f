// Per-block activation bytes: see activation_memory.h. Units: bytes per micro-batch on one
// tensor-parallel rank; "per token" terms are multiplied by s * b at the end.
#include "simulator/activation_memory.h"

namespace loom::sim {

ActivationOptions ActivationOptions::from_framework(const FrameworkTraits& t) {
  ActivationOptions o;
  o.flash_attention = t.flash_attention;
  o.swiglu_saved_f = t.swiglu_saved_f;
  o.attention_extra_kv_copies = t.attention_extra_kv_copies;
  o.backward_h_buffers = t.backward_h_buffers;
  o.backward_q_buffers = t.backward_q_buffers;
  o.backward_kv_buffers = t.backward_kv_buffers;
  o.backward_extra_f_buffers = t.backward_extra_f_buffers;
  o.selective_drops_attention_output = t.selective_drops_attention_output;
  return o;
}

double activation_bytes(core::Precision p) { return p == core::Precision::kFp32 ? 4.0 : 2.0; }

double BlockActivations::stored(core::Recompute r) const {
  switch (r) {
    case core::Recompute::kNone: return full_bytes;
    case core::Recompute::kSelective: return selective_bytes;
    case core::Recompute::kFull: return checkpoint_bytes;
  }
  return full_bytes;
}

double BlockActivations::backward_working(core::Recompute r) const {
  switch (r) {
    case core::Recompute::kNone: return grad_working_bytes;
    case core::Recompute::kSelective: return grad_working_bytes + (full_bytes - selective_bytes);
    case core::Recompute::kFull: return grad_working_bytes + full_bytes;
  }
  return grad_working_bytes;
}

BlockActivations block_activations(const core::ModelSpec& m, const core::Layout& l,
                                   const ActivationOptions& o) {
  const double a = activation_bytes(l.precision);
  const double h = static_cast<double>(m.hidden_size);
  const double t = static_cast<double>(l.tp);
  const double sp_div = l.sp ? t : 1.0;  // sequence parallelism shards the "replicated" part
  const double tokens = static_cast<double>(l.seq) * static_cast<double>(l.mbs);
  const double f = static_cast<double>(m.ffn_hidden_size);
  const double q = static_cast<double>(m.q_dim());
  const double kv = static_cast<double>(m.kv_dim());
  const double heads = static_cast<double>(m.num_heads);
  const double s = static_cast<double>(l.seq);

  // Replicated across TP (unless SP): inputs of the two norms and of the QKV and MLP-in GEMMs
  // (Korthikanti's 4sbh of LayerNorm inputs + 2sbh + 2sbh of GEMM inputs), dropout masks.
  double replicated = 4.0 * a * h;
  if (o.dropout) replicated += 2.0 * h;  // attention-out and MLP-out dropout masks, 1 byte each

  // Sharded across TP: Q, K, V as attention saves them, the attention output (input of the
  // output projection), the MLP's intermediate tensors.
  double sharded = a * (q + 2.0 * kv) + o.attention_extra_kv_copies * a * 2.0 * kv + a * q;
  if (m.mlp == core::MlpKind::kGelu) {
    sharded += 2.0 * a * f;  // GeLU input (fc1 output) and GeLU output (fc2 input)
  } else {
    sharded += o.swiglu_saved_f * a * f;
  }
  // Attention scores: flash attention keeps only the fp32 log-sum-exp per head and token;
  // otherwise softmax output [a], dropout mask [1] and dropout output [a] of heads x s.
  double scores = 0;
  if (o.flash_attention) {
    sharded += 4.0 * heads;
  } else {
    scores = heads * s * (o.dropout ? (2.0 * a + 1.0) : a);
  }

  BlockActivations out;
  const double kept_without_scores = tokens * (replicated / sp_div + sharded / t);
  out.selective_bytes = kept_without_scores;
  // The attention output and the log-sum-exp, when selective recompute drops them too.
  if (o.selective_drops_attention_output && o.flash_attention) {
    out.selective_bytes -= tokens * (a * q + 4.0 * heads) / t;
  }
  out.full_bytes = kept_without_scores + tokens * scores / t;
  out.checkpoint_bytes = tokens * a * h / sp_div;  // the block input
  // Gradients alive during one block's backward: the residual-stream gradients (sharded
  // under SP), the gradient of the widest intermediate (MLP-in output) and whatever else the
  // framework keeps (attention gradients, the activation's gradient).
  const double mlp_in = (m.mlp == core::MlpKind::kSwiGlu ? 2.0 : 1.0) * f;
  out.grad_working_bytes =
      tokens * a *
      (o.backward_h_buffers * h / sp_div +
       (mlp_in + o.backward_extra_f_buffers * f + o.backward_q_buffers * q +
        o.backward_kv_buffers * kv) / t);
  return out;
}

}  // namespace loom::sim
