// Transformer<T>: the forward and backward passes of a decoder-only transformer driven by a
// ModelSpec (LLaMA, Qwen, BLOOM, GPT families), written op by op against kernels/cpu/cpu_ops.h
// with no autograd. Parameters and gradients are flat buffers laid out by ParamLayout.
// Activations are kept or recomputed by the recompute mode, as Megatron-LM does:
//   none      every block keeps what its backward needs;
//   selective the attention core (output and log-sum-exp) is recomputed in the backward
//             (Korthikanti et al. 2022, Sec. 5: the part that is cheap to recompute);
//   full      only each block's input is kept; the block is re-run before its backward.
// The loss never materialises probabilities: logits are made in row chunks and overwritten
// with their gradients (kernels::cpu::cross_entropy_fwd_bwd).
// Tested against central finite differences in tests/trainer/transformer_test.cc.
#pragma once

#include <cstdint>
#include <vector>

#include "core/layout.h"
#include "core/model_spec.h"
#include "trainer/param_layout.h"

namespace loom::train {

template <typename T>
class Transformer {
 public:
  Transformer(const core::ModelSpec& spec, core::Recompute recompute);

  const core::ModelSpec& spec() const { return spec_; }
  const ParamLayout& layout() const { return layout_; }
  core::Recompute recompute() const { return recompute_; }

  // tokens: [b, s + 1] int32 (inputs tokens[:, :s], targets tokens[:, 1:]); targets < 0 are
  // ignored. Adds grad_scale * d(sum of token losses) to `grads` and returns the sum of the
  // token losses (not scaled).
  double forward_backward(const T* params, T* grads, const int32_t* tokens, int64_t b, int64_t s,
                          T grad_scale);
  // Sum of the token losses without gradients.
  double forward_loss(const T* params, const int32_t* tokens, int64_t b, int64_t s);
  // Logits [b * s, padded_vocab] of inputs [b, s].
  std::vector<T> forward_logits(const T* params, const int32_t* inputs, int64_t b, int64_t s);

  // Bytes the activation and scratch buffers hold now / held at most since construction.
  int64_t workspace_bytes() const;
  int64_t workspace_high_water_bytes() const { return high_water_bytes_; }

 private:
  struct LayerActs {  // shapes with N = b * s tokens
    std::vector<T> x_in;                  // [N, h] block input (the residual stream)
    std::vector<T> xn1, mean1, rstd1;     // [N, h], [N], [N] first norm
    std::vector<T> q, k, v;               // [N, q_dim], [N, kv_dim] x2 (after RoPE)
    std::vector<T> o, lse;                // [N, q_dim], [b, heads, s] attention
    std::vector<T> x_mid;                 // [N, h] residual after attention
    std::vector<T> xn2, mean2, rstd2;     // second norm
    std::vector<T> g, u, act;             // [N, ffn] gate, up (pre-activation), activation
  };
  struct Scratch {  // shared by all blocks: gradients of one block at a time
    std::vector<T> dact, dg, du, dxn, dattn, dq, dk, dv, dres;
  };

  void prepare(int64_t b, int64_t s);
  void embed_forward(const T* p, const int32_t* inputs, T* x0);
  void embed_backward(const T* p, T* gr, const int32_t* inputs, T* dx0);
  void block_forward(int64_t l, const T* p, const T* x_in, LayerActs& a, T* x_out,
                     bool attention_core);
  void attention_core_forward(LayerActs& a);
  void block_backward(int64_t l, const T* p, T* gr, LayerActs& a, const T* dx_out, T* dx_in);
  void norm_forward(const T* x, int64_t w, int64_t bias, const T* p, T* y, T* mean, T* rstd);
  void norm_backward(const T* dy, const T* x, int64_t w, int64_t bias, const T* p, T* gr,
                     const T* mean, const T* rstd, T* dx);
  void linear_forward(const T* x, const T* p, int64_t w, int64_t bias, int64_t out, int64_t in,
                      T* y);
  void linear_backward(const T* dy, const T* x, const T* p, T* gr, int64_t w, int64_t bias,
                       int64_t out, int64_t in, T* dx, bool accumulate_dx);
  // Runs the stack to the final norm; fills acts_/x_out_ as the recompute mode asks.
  void forward_stack(const T* p, const int32_t* inputs);
  double loss_chunks(const T* p, T* gr, const int32_t* targets, T grad_scale, bool backward);
  LayerActs& acts_for(int64_t l);
  void track_bytes();

  core::ModelSpec spec_;
  ParamLayout layout_;
  core::Recompute recompute_;
  ModelDims d_;  // widths from the spec
  int64_t b_ = 0, s_ = 0, n_ = 0;
  std::vector<LayerActs> acts_;            // one per block (none / selective), or one shared
  std::vector<std::vector<T>> block_in_;   // block inputs kept under full recompute
  LayerActs scratch_acts_;                 // the block being recomputed (full recompute)
  Scratch sc_;
  std::vector<T> embed_pre_norm_, embed_mean_, embed_rstd_;  // embedding LayerNorm (BLOOM)
  std::vector<T> x_final_, xf_, final_mean_, final_rstd_, dx_, dx2_, logits_;
  std::vector<int32_t> inputs_, targets_;
  std::vector<float> rope_cos_, rope_sin_, alibi_;
  std::vector<T> zero_bias_, unused_dbias_;  // [h]: LayerNorm without bias (norm_bias false)
  int64_t high_water_bytes_ = 0;
};

extern template class Transformer<float>;
extern template class Transformer<double>;

}  // namespace loom::train
