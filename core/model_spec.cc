// Parameter counting and validation for ModelSpec. Each count follows the module structure of
// Megatron-LM's GPTModel / Hugging Face's LlamaModel, BloomModel, GPT2Model and GPTNeoXModel.
#include "core/model_spec.h"

#include "core/units.h"

namespace loom::core {

Result<NormKind> parse_norm_kind(const std::string& s) {
  if (s == "layernorm") return NormKind::kLayerNorm;
  if (s == "rmsnorm") return NormKind::kRmsNorm;
  return error(ErrorCode::kInvalidArgument, "norm '{}' is not known (allowed: layernorm, rmsnorm)", s);
}
Result<MlpKind> parse_mlp_kind(const std::string& s) {
  if (s == "gelu") return MlpKind::kGelu;
  if (s == "swiglu") return MlpKind::kSwiGlu;
  return error(ErrorCode::kInvalidArgument, "mlp '{}' is not known (allowed: gelu, swiglu)", s);
}
Result<PositionKind> parse_position_kind(const std::string& s) {
  if (s == "learned") return PositionKind::kLearned;
  if (s == "rope") return PositionKind::kRope;
  if (s == "alibi") return PositionKind::kAlibi;
  if (s == "none") return PositionKind::kNone;
  return error(ErrorCode::kInvalidArgument,
               "position '{}' is not known (allowed: learned, rope, alibi, none)", s);
}
const char* to_string(NormKind k) { return k == NormKind::kLayerNorm ? "layernorm" : "rmsnorm"; }
const char* to_string(MlpKind k) { return k == MlpKind::kGelu ? "gelu" : "swiglu"; }
const char* to_string(PositionKind k) {
  switch (k) {
    case PositionKind::kLearned: return "learned";
    case PositionKind::kRope: return "rope";
    case PositionKind::kAlibi: return "alibi";
    case PositionKind::kNone: return "none";
  }
  return "?";
}

int64_t ModelSpec::padded_vocab(int64_t tp) const {
  if (pad_vocab_size_to > 0) return std::max(pad_vocab_size_to, vocab_size);
  return round_up(vocab_size, make_vocab_size_divisible_by * tp);
}

namespace {
int64_t norm_params(const ModelSpec& m) {
  const bool has_bias = m.norm == NormKind::kLayerNorm && m.norm_bias;
  return m.hidden_size * (has_bias ? 2 : 1);
}
}  // namespace

int64_t ModelSpec::embedding_params(int64_t tp, bool padded) const {
  const int64_t rows = padded ? padded_vocab(tp) / tp : vocab_size;
  return rows * hidden_size + (embedding_norm ? norm_params(*this) : 0);
}

int64_t ModelSpec::position_params() const {
  return position == PositionKind::kLearned ? max_seq_len * hidden_size : 0;
}

int64_t ModelSpec::block_params_replicated() const {
  int64_t n = 2 * norm_params(*this);      // pre-attention and pre-MLP norms
  if (out_bias) n += hidden_size;  // attention-out bias (row-parallel: every TP rank holds it)
  if (mlp_bias) n += hidden_size;  // MLP-out bias (row-parallel)
  return n;
}

int64_t ModelSpec::block_params(int64_t tp) const {
  const int64_t h = hidden_size;
  const int64_t qkv_out = q_dim() + 2 * kv_dim();
  int64_t sharded = h * qkv_out + q_dim() * h;  // QKV (column-parallel) + attention-out (row)
  if (qkv_bias) sharded += qkv_out;
  const int64_t mlp_in = (mlp == MlpKind::kSwiGlu ? 2 : 1) * ffn_hidden_size;  // gate + up
  sharded += h * mlp_in + ffn_hidden_size * h;
  if (mlp_bias) sharded += mlp_in;  // column-parallel MLP-in bias is sharded
  return sharded / tp + block_params_replicated();
}

int64_t ModelSpec::final_norm_params() const { return norm_params(*this); }

int64_t ModelSpec::lm_head_params(int64_t tp, bool padded) const {
  if (tied_embeddings) return 0;
  const int64_t rows = padded ? padded_vocab(tp) / tp : vocab_size;
  return rows * hidden_size;
}

int64_t ModelSpec::total_params() const {
  return embedding_params(1, /*padded=*/false) + position_params() +
         num_layers * block_params(1) + final_norm_params() + lm_head_params(1, false);
}

int64_t ModelSpec::matmul_params() const {
  const int64_t h = hidden_size;
  const int64_t per_block = h * (q_dim() + 2 * kv_dim()) + q_dim() * h +
                            h * (mlp == MlpKind::kSwiGlu ? 2 : 1) * ffn_hidden_size +
                            ffn_hidden_size * h;
  return num_layers * per_block + vocab_size * h;  // LM head multiplies even when tied
}

Status ModelSpec::validate() const {
  auto positive = [&](const char* field, int64_t v) -> Status {
    if (v <= 0) {
      return error(ErrorCode::kInvalidArgument, "model '{}': field '{}' = {} must be positive",
                   name, field, v);
    }
    return ok_status();
  };
  LOOM_RETURN_IF_ERROR(positive("num_layers", num_layers));
  LOOM_RETURN_IF_ERROR(positive("hidden_size", hidden_size));
  LOOM_RETURN_IF_ERROR(positive("num_heads", num_heads));
  LOOM_RETURN_IF_ERROR(positive("num_kv_heads", num_kv_heads));
  LOOM_RETURN_IF_ERROR(positive("ffn_hidden_size", ffn_hidden_size));
  LOOM_RETURN_IF_ERROR(positive("vocab_size", vocab_size));
  LOOM_RETURN_IF_ERROR(positive("max_seq_len", max_seq_len));
  LOOM_RETURN_IF_ERROR(positive("make_vocab_size_divisible_by", make_vocab_size_divisible_by));
  if (head_dim == 0 && hidden_size % num_heads != 0) {
    return error(ErrorCode::kInvalidArgument,
                 "model '{}': hidden_size {} is not divisible by num_heads {} (set head_dim "
                 "explicitly or use a divisor of {})",
                 name, hidden_size, num_heads, hidden_size);
  }
  if (num_heads % num_kv_heads != 0) {
    return error(ErrorCode::kInvalidArgument,
                 "model '{}': num_heads {} is not a multiple of num_kv_heads {} (grouped-query "
                 "attention shares each K/V head among num_heads/num_kv_heads query heads)",
                 name, num_heads, num_kv_heads);
  }
  if (pad_vocab_size_to != 0 && pad_vocab_size_to < vocab_size) {
    return error(ErrorCode::kInvalidArgument,
                 "model '{}': pad_vocab_size_to {} is smaller than vocab_size {}", name,
                 pad_vocab_size_to, vocab_size);
  }
  if (rotary_fraction <= 0.0 || rotary_fraction > 1.0) {
    return error(ErrorCode::kInvalidArgument,
                 "model '{}': rotary_fraction {} must be in (0, 1]", name, rotary_fraction);
  }
  if (position == PositionKind::kRope && rope_theta <= 0.0) {
    return error(ErrorCode::kInvalidArgument, "model '{}': rope_theta {} must be positive", name,
                 rope_theta);
  }
  return ok_status();
}

}  // namespace loom::core
