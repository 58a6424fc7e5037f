// Transformer<T>: see transformer.h. Shapes: N = b * s tokens, h hidden, f FFN width,
// q = heads * head_dim, kv = kv_heads * head_dim; activations are row-major [N, width].
#include "trainer/transformer.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "kernels/cpu/cpu_ops.h"
#include "trainer/vocab_parallel.h"

namespace loom::train {

namespace ops = loom::kernels::cpu;

namespace {

template <typename T>
void resize(std::vector<T>& v, int64_t n) {
  v.assign(static_cast<size_t>(n), T(0));
}

template <typename T>
int64_t bytes_of(const std::vector<T>& v) {
  return static_cast<int64_t>(v.capacity() * sizeof(T));
}

// Rows of logits made at once by the loss: bounds the [rows, Vp] chunk to 2^24 elements
// (64 MiB in fp32) whatever the vocabulary, so that a 250k vocabulary costs no more memory than
// a small one (the point of fusing the LM head with the loss).
constexpr int64_t kLogitsChunkElements = int64_t{1} << 24;

}  // namespace

template <typename T>
Transformer<T>::Transformer(const core::ModelSpec& spec, core::Recompute recompute)
    : Transformer(spec, recompute, ModelShard{}, nullptr) {}

template <typename T>
Transformer<T>::Transformer(const core::ModelSpec& spec, core::Recompute recompute,
                            const ModelShard& shard, comm::Communicator* tp)
    : spec_(spec),
      shard_(shard),
      tp_(shard.tp > 1 ? tp : nullptr),
      layout_(spec, shard),
      recompute_(recompute),
      d_(spec, shard.tp),
      layers_(static_cast<int64_t>(layout_.blocks.size())),
      sp_(shard.sp && tp_ != nullptr) {
  if (spec.norm == core::NormKind::kLayerNorm && !spec.norm_bias) {
    zero_bias_.assign(d_.h, T(0));
    unused_dbias_.assign(d_.h, T(0));
  }
  if (spec.position == core::PositionKind::kAlibi) {  // the slopes of this rank's heads
    std::vector<float> all(spec.num_heads);
    ops::alibi_slopes(spec.num_heads, all.data());
    const int64_t first = shard.tp_rank * d_.heads;
    alibi_.assign(all.begin() + first, all.begin() + first + d_.heads);
  }
  // Units: the embedding's tensors come first, then each block's, then the head's
  // (param_layout.cc), so each unit is one contiguous range.
  const int64_t head_begin = shard.head ? layout_.final_norm_w : layout_.total();
  unit_bounds_.push_back(0);
  for (const BlockOffsets& b : layout_.blocks) unit_bounds_.push_back(b.attn_norm_w);
  unit_bounds_.push_back(head_begin);
  unit_bounds_.push_back(layout_.total());
  auto rel = [&](int64_t offset, int unit) { return offset < 0 ? -1 : offset - unit_bounds_[unit]; };
  for (int64_t l = 0; l < layers_; ++l) {
    const int u = static_cast<int>(l) + 1;
    BlockOffsets o = layout_.blocks[l];
    for (int64_t* f : {&o.attn_norm_w, &o.attn_norm_b, &o.wq, &o.wk, &o.wv, &o.bq, &o.bk, &o.bv,
                       &o.wo, &o.bo, &o.mlp_norm_w, &o.mlp_norm_b, &o.w_gate, &o.w_up, &o.b_up,
                       &o.w_down, &o.b_down}) {
      *f = rel(*f, u);
    }
    blocks_.push_back(o);
  }
  embed_ = rel(layout_.embed, 0);
  embed_norm_w_ = rel(layout_.embed_norm_w, 0);
  embed_norm_b_ = rel(layout_.embed_norm_b, 0);
  pos_embed_ = rel(layout_.pos_embed, 0);
  const int head = static_cast<int>(layers_) + 1;
  final_norm_w_ = rel(layout_.final_norm_w, head);
  final_norm_b_ = rel(layout_.final_norm_b, head);
  lm_head_unit_ = shard.head && layout_.lm_head == layout_.embed ? 0 : head;
  lm_head_ = rel(layout_.lm_head, lm_head_unit_);
  if (shard.tp > 1 && tp_ == nullptr) {
    comm_status_ = core::error(core::ErrorCode::kInternal,
                               "a tensor-parallel shard ({} ranks) without its communicator",
                               shard.tp);
  }
}

template <typename T>
void Transformer<T>::prepare(int64_t b, int64_t s) {
  if (b == b_ && s == s_) return;
  b_ = b;
  s_ = s;
  n_ = b * s;
  nl_ = sp_ ? n_ / shard_.tp : n_;
  if (sp_ && n_ % shard_.tp != 0 && comm_status_.ok()) {
    comm_status_ = core::error(core::ErrorCode::kInvalidArgument,
                               "sequence parallelism: {} tokens per micro-batch do not split over "
                               "{} tensor-parallel ranks",
                               n_, shard_.tp);
  }
  slots_.clear();  // sized again for the new shape when acquired
  if (recompute_ == core::Recompute::kFull) {
    size_acts(ws_->acts, true);
    resize(ws_->acts.x_in, nl_ * d_.h);  // the recomputed block's output (discarded)
  } else if (recompute_ == core::Recompute::kSelective) {  // one attention core for all blocks
    resize(ws_->acts.o, n_ * d_.q_dim);
    resize(ws_->acts.lse, b_ * d_.heads * s_);
  }
  for (auto* v : {&ws_->sc.dact, &ws_->sc.du}) resize(*v, n_ * d_.ffn);
  if (spec_.mlp == core::MlpKind::kSwiGlu) resize(ws_->sc.dg, n_ * d_.ffn);  // the gate's gradient
  resize(ws_->sc.dxn, n_ * d_.h);  // a column-parallel input gradient, all tokens
  resize(ws_->sc.dres, nl_ * d_.h);
  for (auto* v : {&ws_->sc.dattn, &ws_->sc.dq}) resize(*v, n_ * d_.q_dim);
  for (auto* v : {&ws_->sc.dk, &ws_->sc.dv}) resize(*v, n_ * d_.kv_dim);
  for (auto* v : {&ws_->dx, &ws_->dx2}) resize(*v, nl_ * d_.h);
  for (auto* v : {&ws_->gathered, &ws_->partial}) resize(*v, sp_ ? n_ * d_.h : 0);
  resize(ws_->norm_grads, sp_ ? 2 * d_.h : 0);
  if (shard_.head) {
    const int64_t rows = std::clamp<int64_t>(kLogitsChunkElements / d_.vp, 1, n_);
    resize(ws_->logits, rows * d_.vp);
  }
  if (d_.rot_dim > 0) {
    rope_cos_.assign(s_ * d_.rot_dim / 2, 0.f);
    rope_sin_.assign(s_ * d_.rot_dim / 2, 0.f);
    ops::rope_tables(s_, d_.rot_dim, spec_.rope_theta, rope_cos_.data(), rope_sin_.data());
  }
  track_bytes();
}

template <typename T>
void Transformer<T>::size_acts(LayerActs& a, bool keep_core) {
  resize(a.xn1, nl_ * d_.h);  // the residual stream's rows (N / tp under sp)
  resize(a.mean1, nl_);
  resize(a.rstd1, nl_);
  resize(a.q, n_ * d_.q_dim);
  resize(a.k, n_ * d_.kv_dim);
  resize(a.v, n_ * d_.kv_dim);
  if (keep_core) {
    resize(a.o, n_ * d_.q_dim);
    resize(a.lse, b_ * d_.heads * s_);
  }
  resize(a.x_mid, nl_ * d_.h);
  resize(a.xn2, nl_ * d_.h);
  resize(a.mean2, nl_);
  resize(a.rstd2, nl_);
  if (spec_.mlp == core::MlpKind::kSwiGlu) resize(a.g, n_ * d_.ffn);
  resize(a.u, n_ * d_.ffn);
  resize(a.act, n_ * d_.ffn);
}

template <typename T>
void Transformer<T>::size_slot(Slot& slot) {
  if (recompute_ == core::Recompute::kFull) {
    slot.block_in.resize(layers_);
    for (auto& x : slot.block_in) resize(x, nl_ * d_.h);
  } else {
    slot.acts.resize(layers_);
    for (auto& a : slot.acts) {
      resize(a.x_in, nl_ * d_.h);
      size_acts(a, recompute_ == core::Recompute::kNone);
    }
  }
  if (shard_.embedding && spec_.embedding_norm) {
    resize(slot.embed_pre_norm, nl_ * d_.h);
    resize(slot.embed_mean, nl_);
    resize(slot.embed_rstd, nl_);
  }
  resize(slot.x_final, nl_ * d_.h);
  if (shard_.head) {
    resize(slot.xf, nl_ * d_.h);
    resize(slot.final_mean, nl_);
    resize(slot.final_rstd, nl_);
  }
  slot.inputs.assign(n_, 0);
  slot.targets.assign(n_, 0);
  slot.sized = true;
}

template <typename T>
int Transformer<T>::acquire_slot() {
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (!slots_[i].busy) {
      slots_[i].busy = true;
      if (!slots_[i].sized) {  // freed after its last backward (free_released_slots)
        size_slot(slots_[i]);
        track_bytes();
      }
      return static_cast<int>(i);
    }
  }
  slots_.emplace_back();
  size_slot(slots_.back());
  slots_.back().busy = true;
  track_bytes();
  return static_cast<int>(slots_.size() - 1);
}

template <typename T>
typename Transformer<T>::LayerActs& Transformer<T>::acts_for(Slot& slot, int64_t l) {
  return recompute_ == core::Recompute::kFull ? ws_->acts : slot.acts[l];
}

template <typename T>
T* Transformer<T>::block_input(Slot& slot, int64_t l) {
  if (l == layers_) return slot.x_final.data();
  return recompute_ == core::Recompute::kFull ? slot.block_in[l].data() : slot.acts[l].x_in.data();
}

template <typename T>
void Transformer<T>::reduce_tp(T* data, int64_t count) {
  if (tp_ == nullptr || !comm_status_.ok()) return;
  comm_status_ = tp_->all_reduce(data, count, comm::ReduceOp::kSum);
}

template <typename T>
const T* Transformer<T>::gather_tokens(const T* local) {
  if (!sp_) return local;
  if (comm_status_.ok()) comm_status_ = tp_->all_gather(local, ws_->gathered.data(), nl_ * d_.h);
  return ws_->gathered.data();
}

template <typename T>
void Transformer<T>::reduce_input_grad(T* data) {
  if (!sp_) return reduce_tp(data, n_ * d_.h);
  if (comm_status_.ok()) comm_status_ = tp_->reduce_scatter(data, data, nl_ * d_.h);
}

template <typename T>
void Transformer<T>::row_parallel_forward(const T* x, const T* p, int64_t w, int64_t bias,
                                          int64_t out, int64_t in, T* y) {
  if (sp_) {  // partial sums of all tokens, reduce-scattered to this rank's rows
    ops::matmul_nt<T>(n_, out, in, x, p + w, ws_->partial.data(), T(0));
    if (comm_status_.ok()) comm_status_ = tp_->reduce_scatter(ws_->partial.data(), y, nl_ * out);
  } else {
    ops::matmul_nt<T>(n_, out, in, x, p + w, y, T(0));
    reduce_tp(y, n_ * out);
  }
  if (bias >= 0) ops::bias_add<T>(nl_, out, p + bias, y);
}

template <typename T>
void Transformer<T>::linear_forward(const T* x, const T* p, int64_t w, int64_t bias, int64_t out,
                                    int64_t in, T* y) {
  ops::matmul_nt<T>(n_, out, in, x, p + w, y, T(0));
  if (bias >= 0) ops::bias_add<T>(n_, out, p + bias, y);
}

template <typename T>
void Transformer<T>::linear_backward(const T* dy, const T* x, const T* p, T* gr, int64_t w,
                                     int64_t bias, int64_t out, int64_t in, T* dx,
                                     bool accumulate_dx) {
  ops::matmul_tn<T>(out, in, n_, dy, x, gr + w, T(1));
  if (bias >= 0) ops::bias_bwd<T>(n_, out, dy, gr + bias);
  if (dx != nullptr) ops::matmul_nn<T>(n_, in, out, dy, p + w, dx, accumulate_dx ? T(1) : T(0));
}

template <typename T>
void Transformer<T>::norm_forward(const T* x, int64_t w, int64_t bias, const T* p, T* y, T* mean,
                                  T* rstd) {
  if (spec_.norm == core::NormKind::kRmsNorm) {
    ops::rmsnorm_fwd<T>(nl_, d_.h, x, p + w, spec_.norm_eps, y, rstd);
    return;
  }
  const T* b = bias >= 0 ? p + bias : zero_bias_.data();
  ops::layernorm_fwd<T>(nl_, d_.h, x, p + w, b, spec_.norm_eps, y, mean, rstd);
}

template <typename T>
void Transformer<T>::norm_backward(const T* dy, const T* x, int64_t w, int64_t bias, const T* p,
                                   T* gr, const T* mean, const T* rstd, T* dx) {
  // With sp this rank's tokens give part of the weights' gradient: it is made apart, summed
  // over the group, then added.
  T* dw = sp_ ? ws_->norm_grads.data() : gr + w;
  T* db = sp_ ? ws_->norm_grads.data() + d_.h : bias >= 0 ? gr + bias : unused_dbias_.data();
  if (sp_) std::fill(ws_->norm_grads.begin(), ws_->norm_grads.end(), T(0));
  if (spec_.norm == core::NormKind::kRmsNorm) {
    ops::rmsnorm_bwd<T>(nl_, d_.h, dy, x, p + w, rstd, dx, dw);
  } else {
    ops::layernorm_bwd<T>(nl_, d_.h, dy, x, p + w, mean, rstd, dx, dw,
                          db);  // bias-less (no sp): discarded
  }
  if (!sp_) return;
  reduce_tp(ws_->norm_grads.data(), 2 * d_.h);
  ops::add_inplace<T>(d_.h, dw, gr + w);
  if (bias >= 0) ops::add_inplace<T>(d_.h, db, gr + bias);
}

template <typename T>
void Transformer<T>::embed_forward(const T* p, Slot& slot, T* x0) {
  T* out = spec_.embedding_norm ? slot.embed_pre_norm.data() : x0;
  if (tp_ == nullptr) {
    ops::embedding_fwd<T>(n_, d_.h, slot.inputs.data(), p + embed_, out);
  } else if (sp_) {  // vocabulary-parallel rows of every token, reduce-scattered to this rank's
    embedding_fwd_rows<T>(n_, d_.h, slot.inputs.data(), shard_.tp_rank * d_.vp, d_.vp,
                          p + embed_, ws_->partial.data());
    if (comm_status_.ok()) comm_status_ = tp_->reduce_scatter(ws_->partial.data(), out, nl_ * d_.h);
  } else {  // vocabulary-parallel: each rank looks up the rows it holds, summed over the group
    embedding_fwd_rows<T>(n_, d_.h, slot.inputs.data(), shard_.tp_rank * d_.vp, d_.vp,
                          p + embed_, out);
    reduce_tp(out, n_ * d_.h);
  }
  if (pos_embed_ >= 0) {
    const int64_t first = sp_ ? shard_.tp_rank * nl_ : 0;  // this rank's first token
    for (int64_t i = 0; i < nl_; ++i) {
      ops::add_inplace<T>(d_.h, p + pos_embed_ + ((first + i) % s_) * d_.h, out + i * d_.h);
    }
  }
  if (spec_.embedding_norm) {
    norm_forward(out, embed_norm_w_, embed_norm_b_, p, x0, slot.embed_mean.data(),
                 slot.embed_rstd.data());
  }
}

template <typename T>
void Transformer<T>::embed_backward(const T* p, T* gr, Slot& slot, T* dx0) {
  T* local = dx0;
  if (spec_.embedding_norm) {
    local = ws_->sc.dres.data();
    norm_backward(dx0, slot.embed_pre_norm.data(), embed_norm_w_, embed_norm_b_, p,
                  gr, slot.embed_mean.data(), slot.embed_rstd.data(), local);
  }
  const T* de = gather_tokens(local);  // sp: every token's gradient (ws_->gathered)
  if (tp_ == nullptr) {
    ops::embedding_bwd<T>(n_, d_.h, slot.inputs.data(), de, gr + embed_);
  } else {
    embedding_bwd_rows<T>(n_, d_.h, slot.inputs.data(), shard_.tp_rank * d_.vp, d_.vp, de,
                          gr + embed_);
  }
  if (pos_embed_ >= 0) {
    for (int64_t i = 0; i < n_; ++i) {  // rows in order: deterministic
      ops::add_inplace<T>(d_.h, de + i * d_.h, gr + pos_embed_ + (i % s_) * d_.h);
    }
  }
}

template <typename T>
void Transformer<T>::attention_core_forward(LayerActs& a) {
  const bool shared = recompute_ == core::Recompute::kSelective;
  T* o = shared ? ws_->acts.o.data() : a.o.data();
  T* lse = shared ? ws_->acts.lse.data() : a.lse.data();
  ops::attention_fwd<T>(b_, s_, d_.heads, d_.kv_heads, d_.head_dim, a.q.data(), a.k.data(), a.v.data(),
                        alibi_.empty() ? nullptr : alibi_.data(), o, lse);
}

template <typename T>
void Transformer<T>::block_forward(int64_t l, const T* p, const T* x_in, LayerActs& a, T* x_out,
                                   bool attention_core) {
  const BlockOffsets& o = blocks_[l];
  norm_forward(x_in, o.attn_norm_w, o.attn_norm_b, p, a.xn1.data(), a.mean1.data(),
               a.rstd1.data());
  // Column-parallel: this rank's heads, over every token (sp: gathered).
  const T* xn1 = gather_tokens(a.xn1.data());
  linear_forward(xn1, p, o.wq, o.bq, d_.q_dim, d_.h, a.q.data());
  linear_forward(xn1, p, o.wk, o.bk, d_.kv_dim, d_.h, a.k.data());
  linear_forward(xn1, p, o.wv, o.bv, d_.kv_dim, d_.h, a.v.data());
  if (d_.rot_dim > 0) {
    ops::rope_fwd<T>(b_, s_, d_.heads, d_.head_dim, d_.rot_dim, rope_cos_.data(), rope_sin_.data(),
                     a.q.data());
    ops::rope_fwd<T>(b_, s_, d_.kv_heads, d_.head_dim, d_.rot_dim, rope_cos_.data(), rope_sin_.data(),
                     a.k.data());
  }
  if (attention_core) attention_core_forward(a);
  const T* attn = recompute_ == core::Recompute::kSelective ? ws_->acts.o.data() : a.o.data();
  row_parallel_forward(attn, p, o.wo, o.bo, d_.h, d_.q_dim, a.x_mid.data());
  ops::add_inplace<T>(nl_ * d_.h, x_in, a.x_mid.data());
  norm_forward(a.x_mid.data(), o.mlp_norm_w, o.mlp_norm_b, p, a.xn2.data(), a.mean2.data(),
               a.rstd2.data());
  const T* xn2 = gather_tokens(a.xn2.data());
  if (spec_.mlp == core::MlpKind::kSwiGlu) {
    linear_forward(xn2, p, o.w_gate, -1, d_.ffn, d_.h, a.g.data());
    linear_forward(xn2, p, o.w_up, -1, d_.ffn, d_.h, a.u.data());
    ops::swiglu_fwd<T>(n_ * d_.ffn, a.g.data(), a.u.data(), a.act.data());
  } else {
    linear_forward(xn2, p, o.w_up, o.b_up, d_.ffn, d_.h, a.u.data());
    ops::gelu_fwd<T>(n_ * d_.ffn, a.u.data(), a.act.data());
  }
  row_parallel_forward(a.act.data(), p, o.w_down, o.b_down, d_.h, d_.ffn, x_out);
  ops::add_inplace<T>(nl_ * d_.h, a.x_mid.data(), x_out);
}

template <typename T>
void Transformer<T>::block_backward(int64_t l, const T* p, T* gr, LayerActs& a, const T* x_in,
                                    const T* dx_out, T* dx_in) {
  const BlockOffsets& o = blocks_[l];
  // MLP: x_out = x_mid + act W_down^T (row-parallel: dy is whole -- gathered under sp -- and
  // dact is this rank's columns)
  linear_backward(gather_tokens(dx_out), a.act.data(), p, gr, o.w_down, o.b_down, d_.h, d_.ffn,
                  ws_->sc.dact.data(), false);
  const T* xn2 = gather_tokens(a.xn2.data());  // sp: gathered again for the weight gradients
  if (spec_.mlp == core::MlpKind::kSwiGlu) {
    ops::swiglu_bwd<T>(n_ * d_.ffn, ws_->sc.dact.data(), a.g.data(), a.u.data(), ws_->sc.dg.data(),
                       ws_->sc.du.data());
    linear_backward(ws_->sc.dg.data(), xn2, p, gr, o.w_gate, -1, d_.ffn, d_.h, ws_->sc.dxn.data(),
                    false);
    linear_backward(ws_->sc.du.data(), xn2, p, gr, o.w_up, -1, d_.ffn, d_.h, ws_->sc.dxn.data(),
                    true);
  } else {
    ops::gelu_bwd<T>(n_ * d_.ffn, ws_->sc.dact.data(), a.u.data(), ws_->sc.du.data());
    linear_backward(ws_->sc.du.data(), xn2, p, gr, o.w_up, o.b_up, d_.ffn, d_.h, ws_->sc.dxn.data(),
                    false);
  }
  reduce_input_grad(ws_->sc.dxn.data());  // column-parallel input gradient: summed over ranks
  // d x_mid = d x_out (residual) + d norm2
  norm_backward(ws_->sc.dxn.data(), a.x_mid.data(), o.mlp_norm_w, o.mlp_norm_b, p, gr, a.mean2.data(),
                a.rstd2.data(), ws_->sc.dres.data());
  ops::add_inplace<T>(nl_ * d_.h, dx_out, ws_->sc.dres.data());
  const T* dmid = ws_->sc.dres.data();
  // Attention: x_mid = x_in + attn W_o^T
  const bool shared = recompute_ == core::Recompute::kSelective;
  const T* attn = shared ? ws_->acts.o.data() : a.o.data();
  const T* lse = shared ? ws_->acts.lse.data() : a.lse.data();
  linear_backward(gather_tokens(dmid), attn, p, gr, o.wo, o.bo, d_.h, d_.q_dim,
                  ws_->sc.dattn.data(), false);
  ops::attention_bwd<T>(b_, s_, d_.heads, d_.kv_heads, d_.head_dim, a.q.data(), a.k.data(), a.v.data(),
                        alibi_.empty() ? nullptr : alibi_.data(), attn, lse, ws_->sc.dattn.data(),
                        ws_->sc.dq.data(), ws_->sc.dk.data(), ws_->sc.dv.data());
  if (d_.rot_dim > 0) {
    ops::rope_bwd<T>(b_, s_, d_.heads, d_.head_dim, d_.rot_dim, rope_cos_.data(), rope_sin_.data(),
                     ws_->sc.dq.data());
    ops::rope_bwd<T>(b_, s_, d_.kv_heads, d_.head_dim, d_.rot_dim, rope_cos_.data(), rope_sin_.data(),
                     ws_->sc.dk.data());
  }
  const T* xn1 = gather_tokens(a.xn1.data());
  linear_backward(ws_->sc.dq.data(), xn1, p, gr, o.wq, o.bq, d_.q_dim, d_.h, ws_->sc.dxn.data(),
                  false);
  linear_backward(ws_->sc.dk.data(), xn1, p, gr, o.wk, o.bk, d_.kv_dim, d_.h, ws_->sc.dxn.data(),
                  true);
  linear_backward(ws_->sc.dv.data(), xn1, p, gr, o.wv, o.bv, d_.kv_dim, d_.h, ws_->sc.dxn.data(),
                  true);
  reduce_input_grad(ws_->sc.dxn.data());
  norm_backward(ws_->sc.dxn.data(), x_in, o.attn_norm_w, o.attn_norm_b, p, gr, a.mean1.data(),
                a.rstd1.data(), dx_in);
  ops::add_inplace<T>(nl_ * d_.h, dmid, dx_in);
}

template <typename T>
const T* Transformer<T>::unit_params(int u) {
  if (!comm_status_.ok()) return nullptr;
  if (source_ == nullptr) return base_p_ + unit_bounds_[u];
  auto p = source_->acquire(u);
  if (!p.ok()) comm_status_ = p.status();
  return p.ok() ? *p : nullptr;
}

template <typename T>
T* Transformer<T>::unit_grads(int u) {
  if (!comm_status_.ok()) return nullptr;
  if (source_ == nullptr) return base_g_ + unit_bounds_[u];
  auto g = source_->grads(u);
  if (!g.ok()) comm_status_ = g.status();
  return g.ok() ? *g : nullptr;
}

template <typename T>
void Transformer<T>::release_unit(int u) {
  if (source_ != nullptr && comm_status_.ok()) comm_status_ = source_->release(u);
}

template <typename T>
core::Status Transformer<T>::forward_stack(Slot& slot) {
  if (shard_.embedding) {
    const T* p = unit_params(0);
    if (p == nullptr) return comm_status_;
    embed_forward(p, slot, block_input(slot, 0));
    release_unit(0);
  }
  for (int64_t l = 0; l < layers_; ++l) {
    const int u = static_cast<int>(l) + 1;
    const T* p = unit_params(u);
    if (p == nullptr) return comm_status_;
    block_forward(l, p, block_input(slot, l), acts_for(slot, l), block_input(slot, l + 1), true);
    release_unit(u);
  }
  if (shard_.head) {
    const int u = static_cast<int>(layers_) + 1;
    const T* p = unit_params(u);
    if (p == nullptr) return comm_status_;
    norm_forward(slot.x_final.data(), final_norm_w_, final_norm_b_, p, slot.xf.data(),
                 slot.final_mean.data(), slot.final_rstd.data());
    release_unit(u);
  }
  return comm_status_;
}

// The LM head and the loss in row chunks; with `backward` the LM head's gradient is added to
// its unit's gradients and d loss / d xf replaces xf in slot.xf, chunk by chunk once a chunk's
// rows have been used (summed over the tensor-parallel
// group: each rank's logits columns contribute a part).
template <typename T>
core::Status Transformer<T>::loss_chunks(Slot& slot, T grad_scale, bool backward, double* loss) {
  const T* p = unit_params(lm_head_unit_);
  T* gr = backward && p != nullptr ? unit_grads(lm_head_unit_) : nullptr;
  if (p == nullptr || (backward && gr == nullptr)) return comm_status_;
  const int64_t rows = static_cast<int64_t>(ws_->logits.size()) / d_.vp;
  const T* w = p + lm_head_;
  // Every token's final-norm output (sp: gathered into ws_->gathered); its rows become their
  // gradients in place.
  (void)gather_tokens(slot.xf.data());
  T* xf = sp_ ? ws_->gathered.data() : slot.xf.data();
  std::vector<T> loss_n(rows);
  double total = 0.0;
  for (int64_t r0 = 0; r0 < n_; r0 += rows) {
    const int64_t r = std::min(rows, n_ - r0);
    const T* x = xf + r0 * d_.h;
    const int32_t* targets = slot.targets.data() + r0;
    ops::matmul_nt<T>(r, d_.vp, d_.h, x, w, ws_->logits.data(), T(0));
    if (tp_ != nullptr) {
      double part = 0;
      if (comm_status_.ok()) {
        comm_status_ = cross_entropy_vocab_parallel<T>(r, d_.vp, shard_.tp_rank * d_.vp,
                                                       spec_.vocab_size, targets, ws_->logits.data(),
                                                       grad_scale, backward, *tp_, &part);
      }
      total += part;
    } else if (backward) {
      total += ops::cross_entropy_fwd_bwd<T>(r, d_.vp, spec_.vocab_size, targets, ws_->logits.data(),
                                             grad_scale, loss_n.data());
    } else {
      total += ops::cross_entropy_fwd<T>(r, d_.vp, spec_.vocab_size, targets, ws_->logits.data(),
                                         loss_n.data());
    }
    if (!backward) continue;
    ops::matmul_tn<T>(d_.vp, d_.h, r, ws_->logits.data(), x, gr + lm_head_, T(1));
    // x's rows are consumed (logits and the LM head's gradient): their gradient takes their place.
    ops::matmul_nn<T>(r, d_.h, d_.vp, ws_->logits.data(), w, xf + r0 * d_.h, T(0));
  }
  if (backward && sp_) {  // summed over the vocabulary shards, this rank's tokens kept
    if (comm_status_.ok()) comm_status_ = tp_->reduce_scatter(xf, slot.xf.data(), nl_ * d_.h);
  } else if (backward) {
    reduce_tp(slot.xf.data(), n_ * d_.h);
  }
  release_unit(lm_head_unit_);
  *loss = total;
  return comm_status_;
}

namespace {
void split_tokens(const int32_t* tokens, int64_t b, int64_t s, int32_t* inputs,
                  int32_t* targets) {
  for (int64_t i = 0; i < b; ++i) {
    std::copy(tokens + i * (s + 1), tokens + i * (s + 1) + s, inputs + i * s);
    std::copy(tokens + i * (s + 1) + 1, tokens + (i + 1) * (s + 1), targets + i * s);
  }
}
}  // namespace

template <typename T>
core::Result<int> Transformer<T>::stage_forward(const T* p, T* gr, const int32_t* tokens,
                                                int64_t b, int64_t s, const T* x_in,
                                                T grad_scale, double* loss, bool with_grads) {
  LOOM_RETURN_IF_ERROR(comm_status_);
  if (shard_.embedding == (x_in != nullptr)) {
    return core::error(core::ErrorCode::kInternal,
                       "stage_forward: the first stage takes tokens only, the others x_in");
  }
  base_p_ = p;
  base_g_ = gr;
  prepare(b, s);
  const int id = acquire_slot();
  Slot& slot = slots_[id];
  split_tokens(tokens, b, s, slot.inputs.data(), slot.targets.data());
  if (x_in != nullptr) std::copy(x_in, x_in + nl_ * d_.h, block_input(slot, 0));
  LOOM_RETURN_IF_ERROR(forward_stack(slot));
  if (shard_.head) LOOM_RETURN_IF_ERROR(loss_chunks(slot, grad_scale, with_grads, loss));
  return id;
}

template <typename T>
void Transformer<T>::release_slot(int id) {
  if (id < 0 || id >= static_cast<int>(slots_.size())) return;
  slots_[id].busy = false;
  if (free_released_slots_) slots_[id] = Slot{};  // memory back to the heap, sized on reuse
  track_bytes();
}

template <typename T>
const T* Transformer<T>::stage_output(int slot) const {
  return slots_[slot].x_final.data();
}

template <typename T>
core::Status Transformer<T>::stage_backward(int id, const T* p, T* gr, const T* dy, T* dx_in) {
  LOOM_RETURN_IF_ERROR(comm_status_);
  if (id < 0 || id >= static_cast<int>(slots_.size()) || !slots_[id].busy) {
    return core::error(core::ErrorCode::kInternal, "stage_backward: slot {} holds no micro-batch",
                       id);
  }
  base_p_ = p;
  base_g_ = gr;
  Slot& slot = slots_[id];
  LOOM_RETURN_IF_ERROR(backward_stack(slot, dy, dx_in));
  release_slot(id);
  return comm_status_;
}

template <typename T>
core::Status Transformer<T>::backward_stack(Slot& slot, const T* dy, T* dx_in) {
  if (shard_.head) {  // loss_chunks left d xf in slot.xf
    const int u = static_cast<int>(layers_) + 1;
    const T* p = unit_params(u);
    T* gr = p != nullptr ? unit_grads(u) : nullptr;
    if (gr == nullptr) return comm_status_;
    norm_backward(slot.xf.data(), slot.x_final.data(), final_norm_w_, final_norm_b_, p, gr,
                  slot.final_mean.data(), slot.final_rstd.data(), ws_->dx.data());
    release_unit(u);
  } else {
    std::copy(dy, dy + nl_ * d_.h, ws_->dx.begin());
  }
  for (int64_t l = layers_ - 1; l >= 0; --l) {
    const int u = static_cast<int>(l) + 1;
    const T* p = unit_params(u);
    T* gr = p != nullptr ? unit_grads(u) : nullptr;
    if (gr == nullptr) return comm_status_;
    LayerActs& a = acts_for(slot, l);
    if (recompute_ == core::Recompute::kFull) {
      block_forward(l, p, block_input(slot, l), a, ws_->acts.x_in.data(), true);
    } else if (recompute_ == core::Recompute::kSelective) {
      attention_core_forward(a);
    }
    block_backward(l, p, gr, a, block_input(slot, l), ws_->dx.data(), ws_->dx2.data());
    std::swap(ws_->dx, ws_->dx2);
    release_unit(u);
  }
  if (shard_.embedding) {
    const T* p = unit_params(0);
    T* gr = p != nullptr ? unit_grads(0) : nullptr;
    if (gr == nullptr) return comm_status_;
    embed_backward(p, gr, slot, ws_->dx.data());
    release_unit(0);
  } else if (dx_in != nullptr) {
    std::copy(ws_->dx.begin(), ws_->dx.end(), dx_in);
  }
  return comm_status_;
}

template <typename T>
double Transformer<T>::forward_backward(const T* p, T* gr, const int32_t* tokens, int64_t b,
                                        int64_t s, T grad_scale) {
  double loss = 0;
  auto slot = stage_forward(p, gr, tokens, b, s, nullptr, grad_scale, &loss);
  // The whole model on one rank makes no collective: neither call can fail.
  if (slot.ok()) (void)stage_backward(*slot, p, gr, nullptr, nullptr);
  return loss;
}

template <typename T>
double Transformer<T>::forward_loss(const T* p, const int32_t* tokens, int64_t b, int64_t s) {
  base_p_ = p;
  base_g_ = nullptr;
  prepare(b, s);
  const int id = acquire_slot();
  Slot& slot = slots_[id];
  split_tokens(tokens, b, s, slot.inputs.data(), slot.targets.data());
  double loss = 0;
  // Whole-model evaluation without a source: no collective, nothing can fail.
  if (forward_stack(slot).ok()) (void)loss_chunks(slot, T(0), false, &loss);
  slot.busy = false;
  return loss;
}

template <typename T>
std::vector<T> Transformer<T>::forward_logits(const T* p, const int32_t* inputs, int64_t b,
                                              int64_t s) {
  base_p_ = p;
  base_g_ = nullptr;
  prepare(b, s);
  const int id = acquire_slot();
  Slot& slot = slots_[id];
  std::copy(inputs, inputs + b * s, slot.inputs.begin());
  (void)forward_stack(slot);
  std::vector<T> logits(n_ * d_.vp);
  ops::matmul_nt<T>(n_, d_.vp, d_.h, slot.xf.data(), p + layout_.lm_head, logits.data(), T(0));
  slot.busy = false;
  return logits;
}

template <typename T>
int64_t Transformer<T>::acts_bytes(const LayerActs& a) {
  int64_t total = 0;
  for (const auto* v : {&a.x_in, &a.xn1, &a.mean1, &a.rstd1, &a.q, &a.k, &a.v, &a.o, &a.lse,
                        &a.x_mid, &a.xn2, &a.mean2, &a.rstd2, &a.g, &a.u, &a.act}) {
    total += bytes_of(*v);
  }
  return total;
}

template <typename T>
int64_t Transformer<T>::scratch_bytes() const {
  int64_t total = acts_bytes(ws_->acts);
  const Workspace& w = *ws_;
  const Scratch& sc = w.sc;
  for (const auto* v : {&sc.dact, &sc.dg, &sc.du, &sc.dxn, &sc.dattn, &sc.dq, &sc.dk, &sc.dv,
                        &sc.dres, &w.dx, &w.dx2, &w.logits}) {
    total += bytes_of(*v);
  }
  return total;
}

template <typename T>
void Transformer<T>::track_bytes() {
  int64_t total = 0;
  for (const Slot& slot : slots_) {
    for (const auto& a : slot.acts) total += acts_bytes(a);
    for (const auto& x : slot.block_in) total += bytes_of(x);
    for (const auto* v : {&slot.embed_pre_norm, &slot.embed_mean, &slot.embed_rstd,
                          &slot.x_final, &slot.xf, &slot.final_mean, &slot.final_rstd}) {
      total += bytes_of(*v);
    }
  }
  ws_->slots_bytes += total - slots_bytes_;
  slots_bytes_ = total;
  ws_->slots_high_water = std::max(ws_->slots_high_water, ws_->slots_bytes);
}

template class Transformer<float>;
template class Transformer<double>;

}  // namespace loom::train
