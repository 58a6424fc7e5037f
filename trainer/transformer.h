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
// One instance may hold a model-parallel shard (param_layout.h ModelShard): a pipeline stage's
// blocks, cut for one tensor-parallel rank, with Megatron's collectives over the tensor-parallel
// group (all-reduce after the row-parallel layers in the forward and after the column-parallel
// ones in the backward, vocabulary-parallel embedding and loss, vocab_parallel.h), or with
// sequence parallelism (ModelShard::sp, Korthikanti et al. 2022, Sec. 4.2.2) all-gathers over
// the tokens before the column-parallel layers and reduce-scatters after the row-parallel ones,
// so that the norms, residual adds and their saved tensors hold N / tp tokens; the norms'
// weight gradients are then summed over the group. A stage keeps
// the activations of each micro-batch in flight in its own slot (stage_forward /
// stage_backward), as a pipeline schedule needs.
// Tested against central finite differences in tests/trainer/transformer_test.cc and, sharded,
// against the whole model in tests/trainer/parallel_trainer_test.cc.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "comm/communicator.h"
#include "core/layout.h"
#include "core/model_spec.h"
#include "core/status.h"
#include "trainer/param_layout.h"

namespace loom::train {

// Where a unit of a shard keeps its parameters and gradients while it runs, for ZeRO-3
// (trainer/zero_shards.h): units are 0 the embedding, 1 + l the shard's block l, and blocks + 1 the
// final norm with the LM head. Without a source the units are views into the caller's flat
// buffers.
template <typename T>
class ParamSource {
 public:
  virtual ~ParamSource() = default;
  // The unit's parameters, laid out as the shard's flat buffer from unit_begin(unit) on, valid
  // until the matching release(); acquires of one unit nest.
  virtual core::Result<const T*> acquire(int unit) = 0;
  // The unit's gradients (the same layout, zero at the first call after the unit was acquired),
  // to accumulate into while it is acquired.
  virtual core::Result<T*> grads(int unit) = 0;
  virtual core::Status release(int unit) = 0;
};

template <typename T>
class Transformer {
 public:
  Transformer(const core::ModelSpec& spec, core::Recompute recompute);
  // A shard; `tp` (kept, not owned) is the tensor-parallel group when shard.tp > 1.
  Transformer(const core::ModelSpec& spec, core::Recompute recompute, const ModelShard& shard,
              comm::Communicator* tp);

  const core::ModelSpec& spec() const { return spec_; }
  const ParamLayout& layout() const { return layout_; }
  core::Recompute recompute() const { return recompute_; }

  // Whole model. tokens: [b, s + 1] int32 (inputs tokens[:, :s], targets tokens[:, 1:]);
  // targets < 0 are ignored. Adds grad_scale * d(sum of token losses) to `grads` and returns
  // the sum of the token losses (not scaled).
  double forward_backward(const T* params, T* grads, const int32_t* tokens, int64_t b, int64_t s,
                          T grad_scale);
  // Sum of the token losses without gradients.
  double forward_loss(const T* params, const int32_t* tokens, int64_t b, int64_t s);
  // Logits [b * s, padded_vocab] of inputs [b, s].
  std::vector<T> forward_logits(const T* params, const int32_t* inputs, int64_t b, int64_t s);

  // A pipeline stage. stage_forward runs one micro-batch through the shard and returns the
  // slot that keeps its activations until stage_backward(slot). tokens: [b, s + 1], given to
  // every stage (the first reads the inputs, the last the targets); x_in: [b s, h], the previous
  // stage's output (nullptr on the first stage). On the last stage the loss and its gradient
  // are made here, fused (the LM head's gradient goes into `grads`), and *loss is the sum of
  // the token losses; elsewhere stage_output(slot) is what the next stage receives.
  core::Result<int> stage_forward(const T* params, T* grads, const int32_t* tokens, int64_t b,
                                  int64_t s, const T* x_in, T grad_scale, double* loss,
                                  bool with_grads = true);
  // With with_grads false the stage only runs forward (evaluation): the last stage's *loss is
  // the sum without gradients, and the slot is given back with release_slot.
  const T* stage_output(int slot) const;  // [b s, h]
  void release_slot(int slot);
  // With sequence parallelism a stage's input, output and their gradients are this rank's
  // [b s / tp, h] rows.
  // dy: d loss / d stage output [b s, h] (nullptr on the last stage); writes d loss / d x_in
  // into dx_in (nullptr on the first stage) and frees the slot.
  core::Status stage_backward(int slot, const T* params, T* grads, const T* dy, T* dx_in);

  // Units (see ParamSource): [unit_begin(u), unit_end(u)) of the shard's flat buffer.
  int num_units() const { return static_cast<int>(layers_) + 2; }
  int64_t unit_begin(int u) const { return unit_bounds_[u]; }
  int64_t unit_end(int u) const { return unit_bounds_[u + 1]; }
  // Parameters and gradients come from `source` (kept, not owned; nullptr: the flat buffers
  // passed to each call) from now on.
  void set_param_source(ParamSource<T>* source) { source_ = source; }

  // Uses `other`'s scratch (a block's backward buffers, the recompute buffers, the logits
  // chunk) from now on: the chunks of one pipeline rank run one at a time and share it, as the
  // slices of one flat arena would. Both must have the same shard widths.
  void share_scratch(const Transformer& other) {
    ws_ = other.ws_;
    ws_->slots_bytes += slots_bytes_;
  }
  // Frees a micro-batch's activation slot after its backward instead of keeping it for the next
  // one (the chunks of an interleaved pipeline rank hold their micro-batches at different
  // times: kept slots would add up each chunk's own peak).
  void free_released_slots(bool on) { free_released_slots_ = on; }
  // Bytes of the activation slots (micro-batches in flight) at most since construction, summed
  // at each moment over the chunks that share_scratch, and of the scratch now (sized by prepare).
  int64_t activation_high_water_bytes() const { return ws_->slots_high_water; }
  int64_t scratch_bytes() const;
  int64_t workspace_high_water_bytes() const { return activation_high_water_bytes() + scratch_bytes(); }

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
  struct Workspace {  // scratch of one block's backward and of the head, reused by everything
    LayerActs acts;    // the block being recomputed (full), the attention core (selective)
    Scratch sc;
    std::vector<T> dx, dx2, logits;
    // Sequence parallelism: [N, h] all-gathered tokens (a GEMM's input, or a gradient), the
    // row-parallel layers' partial sums before their reduce-scatter, a norm's weight gradients.
    std::vector<T> gathered, partial, norm_grads;
    int64_t slots_bytes = 0, slots_high_water = 0;  // activation slots of every sharer
  };
  struct Slot {  // one micro-batch in flight
    bool busy = false;
    bool sized = false;  // buffers allocated for the current shape
    std::vector<LayerActs> acts;           // one per block (none / selective)
    std::vector<std::vector<T>> block_in;  // block inputs kept under full recompute
    std::vector<T> embed_pre_norm, embed_mean, embed_rstd;  // embedding LayerNorm (BLOOM)
    std::vector<T> x_final;                // [N, h] the last block's output
    // Head: the final norm's output, then (after the fused loss) d loss / d xf in its place.
    std::vector<T> xf, final_mean, final_rstd;
    std::vector<int32_t> inputs, targets;
  };

  void prepare(int64_t b, int64_t s);
  int acquire_slot();
  void size_acts(LayerActs& a, bool keep_core);
  void size_slot(Slot& slot);
  void embed_forward(const T* p, Slot& slot, T* x0);
  void embed_backward(const T* p, T* gr, Slot& slot, T* dx0);
  void block_forward(int64_t l, const T* p, const T* x_in, LayerActs& a, T* x_out,
                     bool attention_core);
  void attention_core_forward(LayerActs& a);
  void block_backward(int64_t l, const T* p, T* gr, LayerActs& a, const T* x_in, const T* dx_out,
                      T* dx_in);
  void norm_forward(const T* x, int64_t w, int64_t bias, const T* p, T* y, T* mean, T* rstd);
  void norm_backward(const T* dy, const T* x, int64_t w, int64_t bias, const T* p, T* gr,
                     const T* mean, const T* rstd, T* dx);
  void linear_forward(const T* x, const T* p, int64_t w, int64_t bias, int64_t out, int64_t in,
                      T* y);
  void linear_backward(const T* dy, const T* x, const T* p, T* gr, int64_t w, int64_t bias,
                       int64_t out, int64_t in, T* dx, bool accumulate_dx);
  // y = x W^T over this rank's columns of a row-parallel layer, summed over the
  // tensor-parallel group, + bias (whole on every rank).
  void row_parallel_forward(const T* x, const T* p, int64_t w, int64_t bias, int64_t out,
                            int64_t in, T* y);
  // Sums a column-parallel layer's input gradient over the tensor-parallel group.
  void reduce_tp(T* data, int64_t count);
  // Sequence parallelism. The [N, h] rows of all ranks' [N / tp, h] `local` rows, in
  // ws_->gathered (without sp: `local` itself).
  const T* gather_tokens(const T* local);
  // A column-parallel layer's [N, h] partial input gradient summed over the group: in place
  // (all-reduce), or with sp reduce-scattered into its first N / tp rows.
  void reduce_input_grad(T* data);
  // Runs the shard's blocks (and the final norm on the last stage) for the slot.
  core::Status forward_stack(Slot& slot);
  core::Status loss_chunks(Slot& slot, T grad_scale, bool backward, double* loss);
  core::Status backward_stack(Slot& slot, const T* dy, T* dx_in);
  // Unit u's parameters / gradients from the source or the flat buffers (base_p_, base_g_);
  // nullptr with comm_status_ set when the source fails.
  const T* unit_params(int u);
  T* unit_grads(int u);
  void release_unit(int u);
  LayerActs& acts_for(Slot& slot, int64_t l);
  T* block_input(Slot& slot, int64_t l);
  void track_bytes();
  static int64_t acts_bytes(const LayerActs& a);

  core::ModelSpec spec_;
  ModelShard shard_;
  comm::Communicator* tp_ = nullptr;
  ParamLayout layout_;
  core::Recompute recompute_;
  ModelDims d_;  // this rank's widths
  int64_t layers_ = 0;  // blocks of the shard
  // Unit bounds in the flat buffer and every offset relative to its unit's first element.
  std::vector<int64_t> unit_bounds_;
  std::vector<BlockOffsets> blocks_;
  int64_t embed_ = -1, embed_norm_w_ = -1, embed_norm_b_ = -1, pos_embed_ = -1;
  int64_t final_norm_w_ = -1, final_norm_b_ = -1, lm_head_ = -1;
  int lm_head_unit_ = 0;  // the head's unit, or the embedding's when a tied head shares it
  ParamSource<T>* source_ = nullptr;
  const T* base_p_ = nullptr;  // the flat buffers of the running call (no source)
  T* base_g_ = nullptr;
  int64_t b_ = 0, s_ = 0, n_ = 0;
  bool sp_ = false;  // sequence parallel (shard_.sp with a tensor-parallel group)
  int64_t nl_ = 0;   // tokens of the residual stream on this rank: n_ / tp with sp, else n_
  std::vector<Slot> slots_;
  std::shared_ptr<Workspace> ws_ = std::make_shared<Workspace>();
  std::vector<float> rope_cos_, rope_sin_, alibi_;
  std::vector<T> zero_bias_, unused_dbias_;  // [h]: LayerNorm without bias (norm_bias false)
  core::Status comm_status_;  // the first failed collective (later ones are skipped)
  int64_t slots_bytes_ = 0;  // this chunk's activation slots now (as last tracked)
  bool free_released_slots_ = false;
};

extern template class Transformer<float>;
extern template class Transformer<double>;

}  // namespace loom::train
