// ParamLayout: see param_layout.h.
#include "trainer/param_layout.h"

#include <cmath>

#include <fmt/format.h>

namespace loom::train {

ModelDims::ModelDims(const core::ModelSpec& spec)
    : h(spec.hidden_size),
      heads(spec.num_heads),
      kv_heads(spec.num_kv_heads > 0 ? spec.num_kv_heads : spec.num_heads),
      head_dim(spec.head_dim_or_default()),
      q_dim(heads * head_dim),
      kv_dim(kv_heads * head_dim),
      ffn(spec.ffn_hidden_size),
      vp(spec.padded_vocab(1)) {
  if (spec.position == core::PositionKind::kRope) {
    rot_dim = 2 * static_cast<int64_t>(std::floor(head_dim * spec.rotary_fraction / 2.0));
  }
}

int64_t ParamLayout::add(const std::string& name, std::vector<int64_t> shape, InitKind init,
                         bool decay) {
  ParamInfo p;
  p.name = name;
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

ParamLayout::ParamLayout(const core::ModelSpec& spec) {
  const int64_t h = spec.hidden_size;
  const int64_t vp = spec.padded_vocab(1);
  const bool layer_norm = spec.norm == core::NormKind::kLayerNorm;
  const bool norm_bias = layer_norm && spec.norm_bias;
  // Norm weight + optional bias; returns the weight offset and sets *bias.
  auto norm = [&](const std::string& prefix, int64_t* bias) {
    const int64_t w = add(prefix + ".weight", {h}, InitKind::kOnes, false);
    *bias = norm_bias ? add(prefix + ".bias", {h}, InitKind::kZeros, false) : -1;
    return w;
  };

  embed = add("embed.weight", {vp, h}, InitKind::kNormal, true);
  if (spec.embedding_norm) embed_norm_w = norm("embed_norm", &embed_norm_b);
  if (spec.position == core::PositionKind::kLearned) {
    pos_embed = add("pos_embed.weight", {spec.max_seq_len, h}, InitKind::kNormal, true);
  }
  const int64_t q = spec.q_dim(), kv = spec.kv_dim(), f = spec.ffn_hidden_size;
  for (int64_t i = 0; i < spec.num_layers; ++i) {
    const std::string p = fmt::format("layers.{}.", i);
    BlockOffsets b;
    b.attn_norm_w = norm(p + "attn_norm", &b.attn_norm_b);
    b.wq = add(p + "attn.wq.weight", {q, h}, InitKind::kNormal, true);
    if (spec.qkv_bias) b.bq = add(p + "attn.wq.bias", {q}, InitKind::kZeros, false);
    b.wk = add(p + "attn.wk.weight", {kv, h}, InitKind::kNormal, true);
    if (spec.qkv_bias) b.bk = add(p + "attn.wk.bias", {kv}, InitKind::kZeros, false);
    b.wv = add(p + "attn.wv.weight", {kv, h}, InitKind::kNormal, true);
    if (spec.qkv_bias) b.bv = add(p + "attn.wv.bias", {kv}, InitKind::kZeros, false);
    b.wo = add(p + "attn.wo.weight", {h, q}, InitKind::kNormalResidual, true);
    if (spec.out_bias) b.bo = add(p + "attn.wo.bias", {h}, InitKind::kZeros, false);
    b.mlp_norm_w = norm(p + "mlp_norm", &b.mlp_norm_b);
    if (spec.mlp == core::MlpKind::kSwiGlu) {
      b.w_gate = add(p + "mlp.w_gate.weight", {f, h}, InitKind::kNormal, true);
    }
    b.w_up = add(p + "mlp.w_up.weight", {f, h}, InitKind::kNormal, true);
    if (spec.mlp_bias) b.b_up = add(p + "mlp.w_up.bias", {f}, InitKind::kZeros, false);
    b.w_down = add(p + "mlp.w_down.weight", {h, f}, InitKind::kNormalResidual, true);
    if (spec.mlp_bias) b.b_down = add(p + "mlp.w_down.bias", {h}, InitKind::kZeros, false);
    blocks.push_back(b);
  }
  final_norm_w = norm("final_norm", &final_norm_b);
  lm_head = spec.tied_embeddings ? embed
                                 : add("lm_head.weight", {vp, h}, InitKind::kNormal, true);
}

const ParamInfo* ParamLayout::find(const std::string& name) const {
  for (const auto& p : params_) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

}  // namespace loom::train
