// ParamLayout: see param_layout.h.
#include "trainer/param_layout.h"

#include <cmath>

#include <fmt/format.h>

namespace loom::train {

bool ModelShard::whole(const core::ModelSpec& spec) const {
  return tp == 1 && first_layer == 0 && (end_layer < 0 || end_layer == spec.num_layers) &&
         embedding && head;
}

ModelDims::ModelDims(const core::ModelSpec& spec, int64_t tp)
    : h(spec.hidden_size),
      heads(spec.num_heads / tp),
      kv_heads((spec.num_kv_heads > 0 ? spec.num_kv_heads : spec.num_heads) / tp),
      head_dim(spec.head_dim_or_default()),
      q_dim(heads * head_dim),
      kv_dim(kv_heads * head_dim),
      ffn(spec.ffn_hidden_size / tp),
      vp(spec.padded_vocab(tp) / tp) {
  if (spec.position == core::PositionKind::kRope) {
    rot_dim = 2 * static_cast<int64_t>(std::floor(head_dim * spec.rotary_fraction / 2.0));
  }
}

int64_t ParamLayout::add(const std::string& name, std::vector<int64_t> shape, InitKind init,
                         bool decay, int split_dim) {
  ParamInfo p;
  p.name = name;
  p.global_shape = shape;
  if (split_dim >= 0) {
    shape[split_dim] /= tp_;
    p.split_dim = split_dim;
    p.split_start = shape[split_dim] * tp_rank_;
  } else {
    p.duplicate = tp_rank_ > 0;
  }
  p.size = 1;
  for (int64_t d : shape) p.size *= d;
  p.shape = std::move(shape);
  p.offset = total_;
  p.weight_decay = decay;
  p.init = init;
  total_ += p.size;
  params_.push_back(std::move(p));
  return params_.back().offset;
}

// Megatron's cut (Shoeybi et al. 2019, Sec. 3): QKV and MLP-in column-parallel (rows of the
// [out, in] weight: whole heads, whole FFN columns), attention-out and MLP-out row-parallel
// (columns), the embedding and the LM head vocabulary-parallel (rows). Norms, the learned
// positions and the biases of row-parallel layers are whole on every rank.
ParamLayout::ParamLayout(const core::ModelSpec& spec, const ModelShard& shard)
    : tp_(shard.tp), tp_rank_(shard.tp_rank) {
  const int64_t h = spec.hidden_size;
  const int64_t vp = spec.padded_vocab(shard.tp);
  const bool layer_norm = spec.norm == core::NormKind::kLayerNorm;
  const bool norm_bias = layer_norm && spec.norm_bias;
  constexpr int kRows = 0, kCols = 1;
  // Norm weight + optional bias; returns the weight offset and sets *bias.
  auto norm = [&](const std::string& prefix, int64_t* bias) {
    const int64_t w = add(prefix + ".weight", {h}, InitKind::kOnes, false);
    *bias = norm_bias ? add(prefix + ".bias", {h}, InitKind::kZeros, false) : -1;
    return w;
  };

  if (shard.embedding) {
    embed = add("embed.weight", {vp, h}, InitKind::kNormal, true, kRows);
    if (spec.embedding_norm) embed_norm_w = norm("embed_norm", &embed_norm_b);
    if (spec.position == core::PositionKind::kLearned) {
      pos_embed = add("pos_embed.weight", {spec.max_seq_len, h}, InitKind::kNormal, true);
    }
  }
  const int64_t q = spec.q_dim(), kv = spec.kv_dim(), f = spec.ffn_hidden_size;
  const int64_t end = shard.end_layer < 0 ? spec.num_layers : shard.end_layer;
  for (int64_t i = shard.first_layer; i < end; ++i) {
    const std::string p = fmt::format("layers.{}.", i);
    BlockOffsets b;
    b.attn_norm_w = norm(p + "attn_norm", &b.attn_norm_b);
    b.wq = add(p + "attn.wq.weight", {q, h}, InitKind::kNormal, true, kRows);
    if (spec.qkv_bias) b.bq = add(p + "attn.wq.bias", {q}, InitKind::kZeros, false, kRows);
    b.wk = add(p + "attn.wk.weight", {kv, h}, InitKind::kNormal, true, kRows);
    if (spec.qkv_bias) b.bk = add(p + "attn.wk.bias", {kv}, InitKind::kZeros, false, kRows);
    b.wv = add(p + "attn.wv.weight", {kv, h}, InitKind::kNormal, true, kRows);
    if (spec.qkv_bias) b.bv = add(p + "attn.wv.bias", {kv}, InitKind::kZeros, false, kRows);
    b.wo = add(p + "attn.wo.weight", {h, q}, InitKind::kNormalResidual, true, kCols);
    if (spec.out_bias) b.bo = add(p + "attn.wo.bias", {h}, InitKind::kZeros, false);
    b.mlp_norm_w = norm(p + "mlp_norm", &b.mlp_norm_b);
    if (spec.mlp == core::MlpKind::kSwiGlu) {
      b.w_gate = add(p + "mlp.w_gate.weight", {f, h}, InitKind::kNormal, true, kRows);
    }
    b.w_up = add(p + "mlp.w_up.weight", {f, h}, InitKind::kNormal, true, kRows);
    if (spec.mlp_bias) b.b_up = add(p + "mlp.w_up.bias", {f}, InitKind::kZeros, false, kRows);
    b.w_down = add(p + "mlp.w_down.weight", {h, f}, InitKind::kNormalResidual, true, kCols);
    if (spec.mlp_bias) b.b_down = add(p + "mlp.w_down.bias", {h}, InitKind::kZeros, false);
    blocks.push_back(b);
  }
  if (shard.head) {
    final_norm_w = norm("final_norm", &final_norm_b);
    if (!spec.tied_embeddings) {
      lm_head = add("lm_head.weight", {vp, h}, InitKind::kNormal, true, kRows);
    } else if (shard.embedding) {
      lm_head = embed;
    } else {  // the last stage's copy of the tied embedding (Megatron keeps one there too)
      lm_head = add("embed.weight", {vp, h}, InitKind::kNormal, true, kRows);
      params_.back().duplicate = true;
    }
  }
}

ParamLayout ParamLayout::concat(const std::vector<const ParamLayout*>& parts) {
  ParamLayout out;
  for (const ParamLayout* part : parts) {
    for (ParamInfo p : part->params_) {
      p.offset += out.total_;
      out.params_.push_back(std::move(p));
    }
    out.total_ += part->total_;
  }
  return out;
}

const ParamInfo* ParamLayout::find(const std::string& name) const {
  for (const auto& p : params_) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

}  // namespace loom::train
