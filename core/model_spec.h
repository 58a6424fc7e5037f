// ModelSpec: the architecture of a decoder-only transformer (LLaMA, Qwen, BLOOM, GPT families)
// and its exact parameter count, split into embedding, per-block and LM-head parts so that the
// memory model can place each part on its pipeline stage and shard it over tensor parallelism.
// Counts are tested against published figures in tests/core/model_presets_test.cc.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"

namespace loom::core {

enum class NormKind { kLayerNorm, kRmsNorm };
enum class MlpKind { kGelu, kSwiGlu };
enum class PositionKind { kLearned, kRope, kAlibi, kNone };

Result<NormKind> parse_norm_kind(const std::string& s);
Result<MlpKind> parse_mlp_kind(const std::string& s);
Result<PositionKind> parse_position_kind(const std::string& s);
const char* to_string(NormKind k);
const char* to_string(MlpKind k);
const char* to_string(PositionKind k);

struct ModelSpec {
  std::string name;
  std::string family;  // llama | qwen | bloom | gpt | gpt-neox | mpt (informational)

  int64_t num_layers = 0;
  int64_t hidden_size = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;  // == num_heads for multi-head attention; fewer for GQA
  int64_t head_dim = 0;      // 0 means hidden_size / num_heads
  int64_t ffn_hidden_size = 0;
  int64_t vocab_size = 0;    // the tokenizer's vocabulary (before padding)
  int64_t max_seq_len = 0;   // positions the model was built for (learned table size)

  NormKind norm = NormKind::kLayerNorm;
  double norm_eps = 1e-5;
  MlpKind mlp = MlpKind::kGelu;
  PositionKind position = PositionKind::kLearned;
  double rope_theta = 10000.0;
  double rotary_fraction = 1.0;  // GPT-NeoX rotary_pct: share of head_dim that is rotated

  bool qkv_bias = false;       // bias on the Q, K, V projections (GPT, BLOOM, Qwen)
  bool out_bias = false;       // bias on the attention output projection (GPT, BLOOM)
  bool mlp_bias = false;       // bias on the MLP projections (GPT, BLOOM)
  bool norm_bias = true;       // LayerNorm has a bias; RMSNorm never does
  bool embedding_norm = false; // LayerNorm right after the word embedding (BLOOM)
  bool tied_embeddings = false;

  // Megatron pads the embedding to a multiple of make_vocab_size_divisible_by x TP
  // (megatron/training/tokenizer: _vocab_size_with_padding). pad_vocab_size_to overrides it
  // with an absolute size, as BLOOM's --pad-vocab-size-to 250880 did.
  int64_t make_vocab_size_divisible_by = 128;
  int64_t pad_vocab_size_to = 0;

  double published_params = 0.0;  // the parameter count its authors report, 0 if unknown
  // The unit the published count was printed in (1e8 for "1.7B"), 0 if exact: a computed
  // count within half a unit matches it even when that is more than 1% off.
  double published_params_unit = 0.0;

  // --- Derived shapes ---------------------------------------------------------------------
  int64_t head_dim_or_default() const { return head_dim > 0 ? head_dim : hidden_size / num_heads; }
  int64_t q_dim() const { return num_heads * head_dim_or_default(); }
  int64_t kv_dim() const { return num_kv_heads * head_dim_or_default(); }
  int64_t padded_vocab(int64_t tp) const;

  // --- Parameter counts (elements). `tp` shards the matrices; 1 gives the model's total. ---
  // Word embedding [padded_vocab/tp, h] (+ embedding LayerNorm, replicated across TP).
  int64_t embedding_params(int64_t tp, bool padded) const;
  // Learned absolute positions [max_seq_len, h], replicated across TP as in Megatron.
  int64_t position_params() const;
  // One transformer block on one TP rank: sharded matrices / tp + replicated norms and
  // row-parallel biases.
  int64_t block_params(int64_t tp) const;
  int64_t block_params_replicated() const;  // the part of block_params every TP rank holds
  int64_t final_norm_params() const;
  // The output layer [padded_vocab/tp, h]; 0 when tied (it reuses the word embedding).
  int64_t lm_head_params(int64_t tp, bool padded) const;
  // All parameters with the tokenizer's vocabulary (the count papers report).
  int64_t total_params() const;
  // Parameters that multiply activations (GEMM weights, including the LM head even when
  // tied): the N in "6 N FLOPs per token".
  int64_t matmul_params() const;

  Status validate() const;
};

}  // namespace loom::core
