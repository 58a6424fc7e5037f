// ParamLayout: every parameter tensor of a decoder-only transformer built from its ModelSpec,
// with its name, shape and offset in ONE flat buffer (as llm.c and Megatron's distributed
// optimizer lay them out): parameters, gradients and both Adam moments are flat arrays of the
// same length and every tensor is a view into them, which is what ZeRO shards later.
// Names are Loom's internal names (checkpoint/hf_export.h maps them to Hugging Face names).
// A ParamLayout may also hold one model-parallel shard (ModelShard): the tensors of a range of
// blocks, with the embedding and/or the LM head, cut for one tensor-parallel rank as Megatron
// cuts them; each tensor then says which slice of the global tensor it is, so that shards of any
// layout map onto the full model (the manifest of sharded checkpoints and of resharding).
// Tested in tests/trainer/param_layout_test.cc against ModelSpec's parameter counts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/model_spec.h"

namespace loom::train {

enum class InitKind {
  kNormal,          // N(0, init_std)
  kNormalResidual,  // N(0, init_std / sqrt(2 L)): projections into the residual stream
                    // (GPT-2, Megatron --init-method-std with scaled output init)
  kOnes,            // norm weights
  kZeros,           // biases
};

struct ParamInfo {
  std::string name;            // e.g. "layers.3.attn.wq.weight"
  std::vector<int64_t> shape;  // [out, in] for linear weights
  int64_t offset = 0;          // elements from the start of the flat buffer
  int64_t size = 0;            // elements
  bool weight_decay = true;    // false for biases and norm weights (Megatron, LLaMA practice)
  InitKind init = InitKind::kNormal;
  // Where this tensor sits in the full model: its global shape and, for a tensor-parallel shard,
  // the dimension it is cut along (-1: the whole tensor) and the first global index of that
  // dimension it holds. `shape` is the local shape.
  std::vector<int64_t> global_shape;
  int split_dim = -1;
  int64_t split_start = 0;
  // A copy whose gradient another rank also holds: a tensor every tensor-parallel rank keeps
  // whole (norms, row-parallel biases) on tp rank > 0, or the last pipeline stage's copy of a
  // tied embedding. Counted once in the gradient norm and skipped when the full model is
  // assembled from shards (Megatron's param_is_not_tensor_parallel_duplicate).
  bool duplicate = false;
};

// The part of the model one instance holds: blocks [first_layer, end_layer), the embedding
// (first pipeline stage), the final norm + LM head + loss (last stage), cut for tensor-parallel
// rank tp_rank of tp. The default is the whole model on one rank.
struct ModelShard {
  int64_t tp_rank = 0, tp = 1;
  // Megatron's sequence parallelism (tp > 1): outside the tensor-parallel GEMMs the residual
  // stream, the norms and their saved inputs are split over the tokens (this rank: tokens
  // [tp_rank, tp_rank + 1) x N / tp of the micro-batch's N = b x s, in [b, s] order).
  bool sp = false;
  int64_t first_layer = 0, end_layer = -1;  // -1: to the last block
  bool embedding = true, head = true;
  bool whole(const core::ModelSpec& spec) const;
};

// Offsets of one transformer block's tensors (-1 when the architecture has no such tensor).
struct BlockOffsets {
  int64_t attn_norm_w = -1, attn_norm_b = -1;
  int64_t wq = -1, wk = -1, wv = -1, bq = -1, bk = -1, bv = -1;
  int64_t wo = -1, bo = -1;
  int64_t mlp_norm_w = -1, mlp_norm_b = -1;
  int64_t w_gate = -1, w_up = -1, b_up = -1, w_down = -1, b_down = -1;
};

// The widths the forward and backward passes use, derived once from the ModelSpec; shared by
// the CPU model (transformer.h) and the CUDA model (cuda_transformer.h).
// With tp > 1 the head counts, the FFN width and the vocabulary are one rank's share.
struct ModelDims {
  explicit ModelDims(const core::ModelSpec& spec, int64_t tp = 1);
  int64_t h, heads, kv_heads, head_dim, q_dim, kv_dim, ffn;
  int64_t vp;           // padded vocabulary rows on one tensor-parallel rank
  int64_t rot_dim = 0;  // leading dims of each head that RoPE rotates (0 without RoPE)
};

// Calls fn(shard_offset, full_offset, count) for each contiguous run of `shard` (a tensor of a
// ModelShard's layout, or a checkpoint's piece of it) inside `full` (the same tensor in the whole
// model's layout); offsets count from each ParamInfo's `offset`. Vocabulary rows a shard pads
// beyond the full tensor's (padded_vocab(tp) > padded_vocab(1)) have no counterpart and are
// skipped.
template <typename F>
void for_each_run(const ParamInfo& shard, const ParamInfo& full, F fn) {
  if (shard.split_dim < 0) {
    fn(shard.offset, full.offset, shard.size < full.size ? shard.size : full.size);
  } else if (shard.split_dim == 0) {
    const int64_t row = shard.size / shard.shape[0];
    int64_t rows = full.shape[0] - shard.split_start;
    rows = rows < 0 ? 0 : rows > shard.shape[0] ? shard.shape[0] : rows;
    fn(shard.offset, full.offset + shard.split_start * row, rows * row);
  } else {  // [out, in] cut along `in`
    const int64_t out = shard.shape[0], in = shard.shape[1], full_in = full.shape[1];
    for (int64_t r = 0; r < out; ++r)
      fn(shard.offset + r * in, full.offset + r * full_in + shard.split_start, in);
  }
}

class ParamLayout {
 public:
  ParamLayout() = default;  // no tensors
  explicit ParamLayout(const core::ModelSpec& spec, const ModelShard& shard = {});
  // The tensors of several layouts one after another (a pipeline rank's model chunks), for
  // the optimizer and the manifest; offsets are shifted, block offsets are not kept.
  static ParamLayout concat(const std::vector<const ParamLayout*>& parts);

  const std::vector<ParamInfo>& params() const { return params_; }
  int64_t total() const { return total_; }
  const ParamInfo* find(const std::string& name) const;

  // Offsets used by the model's forward and backward passes.
  int64_t embed = -1, embed_norm_w = -1, embed_norm_b = -1, pos_embed = -1;
  int64_t final_norm_w = -1, final_norm_b = -1;
  int64_t lm_head = -1;  // == embed when the embeddings are tied and the shard holds both
  std::vector<BlockOffsets> blocks;  // blocks [first_layer, end_layer) of the shard

 private:
  // A tensor of global shape `shape`; split_dim >= 0 cuts that dimension into tp_ parts.
  int64_t add(const std::string& name, std::vector<int64_t> shape, InitKind init, bool decay,
              int split_dim = -1);

  std::vector<ParamInfo> params_;
  int64_t total_ = 0;
  int64_t tp_ = 1, tp_rank_ = 0;
};

}  // namespace loom::train
