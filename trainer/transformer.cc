// Transformer<T>: see transformer.h. Shapes: N = b * s tokens, h hidden, f FFN width,
// q = heads * head_dim, kv = kv_heads * head_dim; activations are row-major [N, width].
#include "trainer/transformer.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "kernels/cpu/cpu_ops.h"

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
    : spec_(spec), layout_(spec), recompute_(recompute), d_(spec) {
  if (spec.norm == core::NormKind::kLayerNorm && !spec.norm_bias) {
    zero_bias_.assign(d_.h, T(0));
    unused_dbias_.assign(d_.h, T(0));
  }
  if (spec.position == core::PositionKind::kAlibi) {
    alibi_.resize(d_.heads);
    ops::alibi_slopes(d_.heads, alibi_.data());
  }
}

template <typename T>
void Transformer<T>::prepare(int64_t b, int64_t s) {
  if (b == b_ && s == s_) return;
  b_ = b;
  s_ = s;
  n_ = b * s;
  const int64_t layers = spec_.num_layers;
  const bool full = recompute_ == core::Recompute::kFull;
  const bool selective = recompute_ == core::Recompute::kSelective;
  auto size_acts = [&](LayerActs& a, bool keep_core) {
    resize(a.xn1, n_ * d_.h);
    resize(a.mean1, n_);
    resize(a.rstd1, n_);
    resize(a.q, n_ * d_.q_dim);
    resize(a.k, n_ * d_.kv_dim);
    resize(a.v, n_ * d_.kv_dim);
    if (keep_core) {
      resize(a.o, n_ * d_.q_dim);
      resize(a.lse, b_ * d_.heads * s_);
    }
    resize(a.x_mid, n_ * d_.h);
    resize(a.xn2, n_ * d_.h);
    resize(a.mean2, n_);
    resize(a.rstd2, n_);
    if (spec_.mlp == core::MlpKind::kSwiGlu) resize(a.g, n_ * d_.ffn);
    resize(a.u, n_ * d_.ffn);
    resize(a.act, n_ * d_.ffn);
  };
  acts_.clear();
  block_in_.clear();
  if (full) {
    block_in_.resize(layers);
    for (auto& x : block_in_) resize(x, n_ * d_.h);
    size_acts(scratch_acts_, true);
    resize(scratch_acts_.x_in, n_ * d_.h);  // the recomputed block's output (discarded)
  } else {
    acts_.resize(layers);
    for (auto& a : acts_) {
      resize(a.x_in, n_ * d_.h);
      size_acts(a, !selective);
    }
    if (selective) {  // one attention output / lse shared by all blocks
      resize(scratch_acts_.o, n_ * d_.q_dim);
      resize(scratch_acts_.lse, b_ * d_.heads * s_);
    }
  }
  for (auto* v : {&sc_.dact, &sc_.dg, &sc_.du}) resize(*v, n_ * d_.ffn);
  for (auto* v : {&sc_.dxn, &sc_.dres}) resize(*v, n_ * d_.h);
  for (auto* v : {&sc_.dattn, &sc_.dq}) resize(*v, n_ * d_.q_dim);
  for (auto* v : {&sc_.dk, &sc_.dv}) resize(*v, n_ * d_.kv_dim);
  if (spec_.embedding_norm) {
    resize(embed_pre_norm_, n_ * d_.h);
    resize(embed_mean_, n_);
    resize(embed_rstd_, n_);
  }
  for (auto* v : {&x_final_, &xf_, &dx_, &dx2_}) resize(*v, n_ * d_.h);
  resize(final_mean_, n_);
  resize(final_rstd_, n_);
  const int64_t rows = std::clamp<int64_t>(kLogitsChunkElements / d_.vp, 1, n_);
  resize(logits_, rows * d_.vp);
  inputs_.assign(n_, 0);
  targets_.assign(n_, 0);
  if (d_.rot_dim > 0) {
    rope_cos_.assign(s_ * d_.rot_dim / 2, 0.f);
    rope_sin_.assign(s_ * d_.rot_dim / 2, 0.f);
    ops::rope_tables(s_, d_.rot_dim, spec_.rope_theta, rope_cos_.data(), rope_sin_.data());
  }
  track_bytes();
}

template <typename T>
typename Transformer<T>::LayerActs& Transformer<T>::acts_for(int64_t l) {
  return recompute_ == core::Recompute::kFull ? scratch_acts_ : acts_[l];
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
    ops::rmsnorm_fwd<T>(n_, d_.h, x, p + w, spec_.norm_eps, y, rstd);
    return;
  }
  const T* b = bias >= 0 ? p + bias : zero_bias_.data();
  ops::layernorm_fwd<T>(n_, d_.h, x, p + w, b, spec_.norm_eps, y, mean, rstd);
}

template <typename T>
void Transformer<T>::norm_backward(const T* dy, const T* x, int64_t w, int64_t bias, const T* p,
                                   T* gr, const T* mean, const T* rstd, T* dx) {
  if (spec_.norm == core::NormKind::kRmsNorm) {
    ops::rmsnorm_bwd<T>(n_, d_.h, dy, x, p + w, rstd, dx, gr + w);
    return;
  }
  T* db = bias >= 0 ? gr + bias : unused_dbias_.data();  // bias-less: discarded
  ops::layernorm_bwd<T>(n_, d_.h, dy, x, p + w, mean, rstd, dx, gr + w, db);
}

template <typename T>
void Transformer<T>::embed_forward(const T* p, const int32_t* inputs, T* x0) {
  T* out = spec_.embedding_norm ? embed_pre_norm_.data() : x0;
  ops::embedding_fwd<T>(n_, d_.h, inputs, p + layout_.embed, out);
  if (layout_.pos_embed >= 0) {
    for (int64_t i = 0; i < n_; ++i) {
      ops::add_inplace<T>(d_.h, p + layout_.pos_embed + (i % s_) * d_.h, out + i * d_.h);
    }
  }
  if (spec_.embedding_norm) {
    norm_forward(out, layout_.embed_norm_w, layout_.embed_norm_b, p, x0, embed_mean_.data(),
                 embed_rstd_.data());
  }
}

template <typename T>
void Transformer<T>::embed_backward(const T* p, T* gr, const int32_t* inputs, T* dx0) {
  T* de = dx0;
  if (spec_.embedding_norm) {
    de = sc_.dres.data();
    norm_backward(dx0, embed_pre_norm_.data(), layout_.embed_norm_w, layout_.embed_norm_b, p, gr,
                  embed_mean_.data(), embed_rstd_.data(), de);
  }
  ops::embedding_bwd<T>(n_, d_.h, inputs, de, gr + layout_.embed);
  if (layout_.pos_embed >= 0) {
    for (int64_t i = 0; i < n_; ++i) {  // rows in order: deterministic
      ops::add_inplace<T>(d_.h, de + i * d_.h, gr + layout_.pos_embed + (i % s_) * d_.h);
    }
  }
}

template <typename T>
void Transformer<T>::attention_core_forward(LayerActs& a) {
  const bool shared = recompute_ == core::Recompute::kSelective;
  T* o = shared ? scratch_acts_.o.data() : a.o.data();
  T* lse = shared ? scratch_acts_.lse.data() : a.lse.data();
  ops::attention_fwd<T>(b_, s_, d_.heads, d_.kv_heads, d_.head_dim, a.q.data(), a.k.data(), a.v.data(),
                        alibi_.empty() ? nullptr : alibi_.data(), o, lse);
}

template <typename T>
void Transformer<T>::block_forward(int64_t l, const T* p, const T* x_in, LayerActs& a, T* x_out,
                                   bool attention_core) {
  const BlockOffsets& o = layout_.blocks[l];
  norm_forward(x_in, o.attn_norm_w, o.attn_norm_b, p, a.xn1.data(), a.mean1.data(),
               a.rstd1.data());
  linear_forward(a.xn1.data(), p, o.wq, o.bq, d_.q_dim, d_.h, a.q.data());
  linear_forward(a.xn1.data(), p, o.wk, o.bk, d_.kv_dim, d_.h, a.k.data());
  linear_forward(a.xn1.data(), p, o.wv, o.bv, d_.kv_dim, d_.h, a.v.data());
  if (d_.rot_dim > 0) {
    ops::rope_fwd<T>(b_, s_, d_.heads, d_.head_dim, d_.rot_dim, rope_cos_.data(), rope_sin_.data(),
                     a.q.data());
    ops::rope_fwd<T>(b_, s_, d_.kv_heads, d_.head_dim, d_.rot_dim, rope_cos_.data(), rope_sin_.data(),
                     a.k.data());
  }
  if (attention_core) attention_core_forward(a);
  const T* attn = recompute_ == core::Recompute::kSelective ? scratch_acts_.o.data() : a.o.data();
  linear_forward(attn, p, o.wo, o.bo, d_.h, d_.q_dim, a.x_mid.data());
  ops::add_inplace<T>(n_ * d_.h, x_in, a.x_mid.data());
  norm_forward(a.x_mid.data(), o.mlp_norm_w, o.mlp_norm_b, p, a.xn2.data(), a.mean2.data(),
               a.rstd2.data());
  if (spec_.mlp == core::MlpKind::kSwiGlu) {
    linear_forward(a.xn2.data(), p, o.w_gate, -1, d_.ffn, d_.h, a.g.data());
    linear_forward(a.xn2.data(), p, o.w_up, -1, d_.ffn, d_.h, a.u.data());
    ops::swiglu_fwd<T>(n_ * d_.ffn, a.g.data(), a.u.data(), a.act.data());
  } else {
    linear_forward(a.xn2.data(), p, o.w_up, o.b_up, d_.ffn, d_.h, a.u.data());
    ops::gelu_fwd<T>(n_ * d_.ffn, a.u.data(), a.act.data());
  }
  linear_forward(a.act.data(), p, o.w_down, o.b_down, d_.h, d_.ffn, x_out);
  ops::add_inplace<T>(n_ * d_.h, a.x_mid.data(), x_out);
}

template <typename T>
void Transformer<T>::block_backward(int64_t l, const T* p, T* gr, LayerActs& a, const T* dx_out,
                                    T* dx_in) {
  const BlockOffsets& o = layout_.blocks[l];
  const T* x_in = recompute_ == core::Recompute::kFull ? block_in_[l].data() : a.x_in.data();
  // MLP: x_out = x_mid + act W_down^T
  linear_backward(dx_out, a.act.data(), p, gr, o.w_down, o.b_down, d_.h, d_.ffn, sc_.dact.data(),
                  false);
  if (spec_.mlp == core::MlpKind::kSwiGlu) {
    ops::swiglu_bwd<T>(n_ * d_.ffn, sc_.dact.data(), a.g.data(), a.u.data(), sc_.dg.data(),
                       sc_.du.data());
    linear_backward(sc_.dg.data(), a.xn2.data(), p, gr, o.w_gate, -1, d_.ffn, d_.h, sc_.dxn.data(),
                    false);
    linear_backward(sc_.du.data(), a.xn2.data(), p, gr, o.w_up, -1, d_.ffn, d_.h, sc_.dxn.data(),
                    true);
  } else {
    ops::gelu_bwd<T>(n_ * d_.ffn, sc_.dact.data(), a.u.data(), sc_.du.data());
    linear_backward(sc_.du.data(), a.xn2.data(), p, gr, o.w_up, o.b_up, d_.ffn, d_.h, sc_.dxn.data(),
                    false);
  }
  // d x_mid = d x_out (residual) + d norm2
  norm_backward(sc_.dxn.data(), a.x_mid.data(), o.mlp_norm_w, o.mlp_norm_b, p, gr, a.mean2.data(),
                a.rstd2.data(), sc_.dres.data());
  ops::add_inplace<T>(n_ * d_.h, dx_out, sc_.dres.data());
  const T* dmid = sc_.dres.data();
  // Attention: x_mid = x_in + attn W_o^T
  const bool shared = recompute_ == core::Recompute::kSelective;
  const T* attn = shared ? scratch_acts_.o.data() : a.o.data();
  const T* lse = shared ? scratch_acts_.lse.data() : a.lse.data();
  linear_backward(dmid, attn, p, gr, o.wo, o.bo, d_.h, d_.q_dim, sc_.dattn.data(), false);
  ops::attention_bwd<T>(b_, s_, d_.heads, d_.kv_heads, d_.head_dim, a.q.data(), a.k.data(), a.v.data(),
                        alibi_.empty() ? nullptr : alibi_.data(), attn, lse, sc_.dattn.data(),
                        sc_.dq.data(), sc_.dk.data(), sc_.dv.data());
  if (d_.rot_dim > 0) {
    ops::rope_bwd<T>(b_, s_, d_.heads, d_.head_dim, d_.rot_dim, rope_cos_.data(), rope_sin_.data(),
                     sc_.dq.data());
    ops::rope_bwd<T>(b_, s_, d_.kv_heads, d_.head_dim, d_.rot_dim, rope_cos_.data(), rope_sin_.data(),
                     sc_.dk.data());
  }
  linear_backward(sc_.dq.data(), a.xn1.data(), p, gr, o.wq, o.bq, d_.q_dim, d_.h, sc_.dxn.data(),
                  false);
  linear_backward(sc_.dk.data(), a.xn1.data(), p, gr, o.wk, o.bk, d_.kv_dim, d_.h, sc_.dxn.data(),
                  true);
  linear_backward(sc_.dv.data(), a.xn1.data(), p, gr, o.wv, o.bv, d_.kv_dim, d_.h, sc_.dxn.data(),
                  true);
  norm_backward(sc_.dxn.data(), x_in, o.attn_norm_w, o.attn_norm_b, p, gr, a.mean1.data(),
                a.rstd1.data(), dx_in);
  ops::add_inplace<T>(n_ * d_.h, dmid, dx_in);
}

template <typename T>
void Transformer<T>::forward_stack(const T* p, const int32_t* inputs) {
  const int64_t layers = spec_.num_layers;
  const bool full = recompute_ == core::Recompute::kFull;
  auto input_of = [&](int64_t l) -> T* {
    if (l == layers) return x_final_.data();
    return full ? block_in_[l].data() : acts_[l].x_in.data();
  };
  embed_forward(p, inputs, input_of(0));
  for (int64_t l = 0; l < layers; ++l) {
    block_forward(l, p, input_of(l), acts_for(l), input_of(l + 1), true);
  }
  norm_forward(x_final_.data(), layout_.final_norm_w, layout_.final_norm_b, p, xf_.data(),
               final_mean_.data(), final_rstd_.data());
}

template <typename T>
double Transformer<T>::loss_chunks(const T* p, T* gr, const int32_t* targets, T grad_scale,
                                   bool backward) {
  const int64_t rows = static_cast<int64_t>(logits_.size()) / d_.vp;
  const T* w = p + layout_.lm_head;
  std::vector<T> loss_n(rows);
  double total = 0.0;
  for (int64_t r0 = 0; r0 < n_; r0 += rows) {
    const int64_t r = std::min(rows, n_ - r0);
    const T* x = xf_.data() + r0 * d_.h;
    ops::matmul_nt<T>(r, d_.vp, d_.h, x, w, logits_.data(), T(0));
    if (!backward) {
      total += ops::cross_entropy_fwd<T>(r, d_.vp, spec_.vocab_size, targets + r0, logits_.data(),
                                         loss_n.data());
      continue;
    }
    total += ops::cross_entropy_fwd_bwd<T>(r, d_.vp, spec_.vocab_size, targets + r0,
                                           logits_.data(), grad_scale, loss_n.data());
    ops::matmul_tn<T>(d_.vp, d_.h, r, logits_.data(), x, gr + layout_.lm_head, T(1));
    ops::matmul_nn<T>(r, d_.h, d_.vp, logits_.data(), w, dx2_.data() + r0 * d_.h, T(0));
  }
  return total;
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
double Transformer<T>::forward_backward(const T* p, T* gr, const int32_t* tokens, int64_t b,
                                        int64_t s, T grad_scale) {
  prepare(b, s);
  split_tokens(tokens, b, s, inputs_.data(), targets_.data());
  forward_stack(p, inputs_.data());
  const double loss = loss_chunks(p, gr, targets_.data(), grad_scale, true);
  // loss_chunks left d xf in dx2_.
  norm_backward(dx2_.data(), x_final_.data(), layout_.final_norm_w, layout_.final_norm_b, p, gr,
                final_mean_.data(), final_rstd_.data(), dx_.data());
  for (int64_t l = spec_.num_layers - 1; l >= 0; --l) {
    LayerActs& a = acts_for(l);
    if (recompute_ == core::Recompute::kFull) {
      block_forward(l, p, block_in_[l].data(), a, scratch_acts_.x_in.data(), true);
    } else if (recompute_ == core::Recompute::kSelective) {
      attention_core_forward(a);
    }
    block_backward(l, p, gr, a, dx_.data(), dx2_.data());
    std::swap(dx_, dx2_);
  }
  embed_backward(p, gr, inputs_.data(), dx_.data());
  track_bytes();
  return loss;
}

template <typename T>
double Transformer<T>::forward_loss(const T* p, const int32_t* tokens, int64_t b, int64_t s) {
  prepare(b, s);
  split_tokens(tokens, b, s, inputs_.data(), targets_.data());
  forward_stack(p, inputs_.data());
  return loss_chunks(p, nullptr, targets_.data(), T(0), false);
}

template <typename T>
std::vector<T> Transformer<T>::forward_logits(const T* p, const int32_t* inputs, int64_t b,
                                              int64_t s) {
  prepare(b, s);
  std::copy(inputs, inputs + b * s, inputs_.begin());
  forward_stack(p, inputs_.data());
  std::vector<T> logits(n_ * d_.vp);
  ops::matmul_nt<T>(n_, d_.vp, d_.h, xf_.data(), p + layout_.lm_head, logits.data(), T(0));
  return logits;
}

template <typename T>
int64_t Transformer<T>::workspace_bytes() const {
  int64_t total = 0;
  auto add_acts = [&](const LayerActs& a) {
    for (const auto* v : {&a.x_in, &a.xn1, &a.mean1, &a.rstd1, &a.q, &a.k, &a.v, &a.o, &a.lse,
                          &a.x_mid, &a.xn2, &a.mean2, &a.rstd2, &a.g, &a.u, &a.act}) {
      total += bytes_of(*v);
    }
  };
  for (const auto& a : acts_) add_acts(a);
  add_acts(scratch_acts_);
  for (const auto& x : block_in_) total += bytes_of(x);
  for (const auto* v : {&sc_.dact, &sc_.dg, &sc_.du, &sc_.dxn, &sc_.dattn, &sc_.dq, &sc_.dk,
                        &sc_.dv, &sc_.dres, &embed_pre_norm_, &embed_mean_, &embed_rstd_,
                        &x_final_, &xf_, &final_mean_, &final_rstd_, &dx_, &dx2_, &logits_}) {
    total += bytes_of(*v);
  }
  return total;
}

template <typename T>
void Transformer<T>::track_bytes() {
  high_water_bytes_ = std::max(high_water_bytes_, workspace_bytes());
}

template class Transformer<float>;
template class Transformer<double>;

}  // namespace loom::train
