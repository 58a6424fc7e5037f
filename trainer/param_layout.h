// ParamLayout: every parameter tensor of a decoder-only transformer built from its ModelSpec,
// with its name, shape and offset in ONE flat buffer (as llm.c and Megatron's distributed
// optimizer lay them out): parameters, gradients and both Adam moments are flat arrays of the
// same length and every tensor is a view into them, which is what ZeRO shards later.
// Names are Loom's internal names (checkpoint/hf_export.h maps them to Hugging Face names).
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
struct ModelDims {
  explicit ModelDims(const core::ModelSpec& spec);
  int64_t h, heads, kv_heads, head_dim, q_dim, kv_dim, ffn;
  int64_t vp;           // vocabulary padded for one tensor-parallel rank
  int64_t rot_dim = 0;  // leading dims of each head that RoPE rotates (0 without RoPE)
};

class ParamLayout {
 public:
  explicit ParamLayout(const core::ModelSpec& spec);

  const std::vector<ParamInfo>& params() const { return params_; }
  int64_t total() const { return total_; }
  const ParamInfo* find(const std::string& name) const;

  // Offsets used by the model's forward and backward passes.
  int64_t embed = -1, embed_norm_w = -1, embed_norm_b = -1, pos_embed = -1;
  int64_t final_norm_w = -1, final_norm_b = -1;
  int64_t lm_head = -1;  // == embed when the embeddings are tied
  std::vector<BlockOffsets> blocks;

 private:
  int64_t add(const std::string& name, std::vector<int64_t> shape, InitKind init, bool decay);

  std::vector<ParamInfo> params_;
  int64_t total_ = 0;
};

}  // namespace loom::train
