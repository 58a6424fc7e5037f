// Plan exports: see export.h. Flag names, choices and the checks they must pass are taken from
// NVIDIA/Megatron-LM megatron/training/arguments.py (commit 000c4ac) unless a comment cites
// another file; DeepSpeed keys from microsoft/DeepSpeed deepspeed/runtime/constants.py,
// runtime/zero/config.py and runtime/config.py (get_pipeline_config).
#include "planner/export.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <functional>
#include <string_view>

#include "core/layout.h"

namespace loom::plan {

namespace {

using core::ErrorCode;
using core::Layout;
using core::ModelSpec;

// An argument list built in launch order.
struct Args {
  std::vector<std::string> v;
  void flag(const char* name) { v.emplace_back(name); }
  template <typename T>
  void opt(const char* name, const T& value) {
    v.emplace_back(name);
    v.push_back(fmt::format("{}", value));
  }
};

std::string join(const std::vector<std::string>& items, const char* sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += sep;
    out += items[i];
  }
  return out;
}

bool all_equal(std::vector<int64_t>::const_iterator begin,
               std::vector<int64_t>::const_iterator end) {
  return std::adjacent_find(begin, end, std::not_equal_to<>()) == end;
}

std::string partition_text(const std::vector<int64_t>& p) {
  std::vector<std::string> items;
  for (int64_t n : p) items.push_back(std::to_string(n));
  return join(items, ",");
}

// --- Megatron-LM: model ----------------------------------------------------------------------

// What Megatron-Core's GPTModel cannot build, one entry per field.
std::vector<std::string> megatron_model_problems(const ModelSpec& m) {
  std::vector<std::string> p;
  if (m.position == core::PositionKind::kAlibi) {
    // --position-embedding-type choices: learned_absolute, rope, mrope, relative, none.
    p.push_back("position 'alibi' is not in Megatron-Core (--position-embedding-type allows "
                "learned_absolute, rope, mrope, relative, none); BLOOM-style models train with "
                "--format deepspeed (BigScience Megatron-DeepSpeed has ALiBi)");
  }
  if (m.embedding_norm) {
    p.push_back("embedding_norm true: Megatron-Core's GPT embedding has no LayerNorm after it");
  }
  if (m.norm == core::NormKind::kLayerNorm && !m.norm_bias) {
    p.push_back("norm_bias false: Megatron's LayerNorm always has a bias (only RMSNorm has none)");
  }
  // --disable-bias-linear drops every linear bias; --add-qkv-bias puts back the QKV one
  // (validate_args: add_bias_linear implies add_qkv_bias). Nothing else can be expressed.
  const bool all = m.qkv_bias && m.out_bias && m.mlp_bias;
  const bool qkv_only = m.qkv_bias && !m.out_bias && !m.mlp_bias;
  const bool none = !m.qkv_bias && !m.out_bias && !m.mlp_bias;
  if (!all && !qkv_only && !none) {
    p.push_back(fmt::format("biases qkv_bias={} out_bias={} mlp_bias={}: Megatron has biases on all "
                            "linear layers, none (--disable-bias-linear) or on QKV only "
                            "(--disable-bias-linear --add-qkv-bias)",
                            m.qkv_bias, m.out_bias, m.mlp_bias));
  }
  // --rotary-base is parsed with type=int.
  if (m.position == core::PositionKind::kRope && m.rope_theta != std::floor(m.rope_theta)) {
    p.push_back(fmt::format("rope_theta {} is not an integer (--rotary-base takes an int)",
                            m.rope_theta));
  }
  return p;
}

// --make-vocab-size-divisible-by D pads the tokenizer's vocabulary to a multiple of D x tp
// (megatron/training/tokenizer/tokenizer.py: _vocab_size_with_padding). An absolute
// pad_vocab_size_to P is reached with D = P / tp when tp divides P and vocab <= P.
core::Result<int64_t> megatron_vocab_divisor(const ModelSpec& m, int64_t tp) {
  if (m.pad_vocab_size_to <= 0) return m.make_vocab_size_divisible_by;
  const int64_t pad_to = m.pad_vocab_size_to;
  if (pad_to % tp != 0 || m.vocab_size > pad_to) {
    return core::error(ErrorCode::kInvalidArgument,
                       "model '{}': pad_vocab_size_to {} cannot be reproduced by Megatron-LM's "
                       "--make-vocab-size-divisible-by (pads vocab {} to a multiple of D x tp {}); "
                       "allowed: pad_vocab_size_to a multiple of tp and >= vocab_size",
                       m.name, pad_to, m.vocab_size, tp);
  }
  return pad_to / tp;
}

core::Status add_megatron_model(const ModelSpec& m, const Layout& l, Args& a) {
  const auto problems = megatron_model_problems(m);
  if (!problems.empty()) {
    return core::error(ErrorCode::kInvalidArgument,
                       "model '{}' cannot be built by Megatron-LM (Megatron-Core): {}", m.name,
                       join(problems, "; "));
  }
  LOOM_ASSIGN_OR_RETURN(const int64_t vocab_divisor, megatron_vocab_divisor(m, l.tp));
  a.opt("--num-layers", m.num_layers);
  a.opt("--hidden-size", m.hidden_size);
  a.opt("--ffn-hidden-size", m.ffn_hidden_size);
  a.opt("--num-attention-heads", m.num_heads);
  if (m.head_dim > 0 && m.head_dim != m.hidden_size / m.num_heads) a.opt("--kv-channels", m.head_dim);
  if (m.num_kv_heads != m.num_heads) {
    a.flag("--group-query-attention");
    a.opt("--num-query-groups", m.num_kv_heads);
  }
  a.opt("--seq-length", l.seq);
  // validate_args asserts max_position_embeddings >= seq_length; with RoPE it sizes nothing.
  const bool learned = m.position == core::PositionKind::kLearned;
  a.opt("--max-position-embeddings", learned ? m.max_seq_len : std::max(m.max_seq_len, l.seq));
  if (learned) a.opt("--position-embedding-type", "learned_absolute");
  if (m.position == core::PositionKind::kNone) a.opt("--position-embedding-type", "none");
  if (m.position == core::PositionKind::kRope) {
    a.opt("--position-embedding-type", "rope");
    a.opt("--rotary-base", static_cast<int64_t>(m.rope_theta));
    if (m.rotary_fraction != 1.0) a.opt("--rotary-percent", m.rotary_fraction);
  }
  a.opt("--normalization", m.norm == core::NormKind::kRmsNorm ? "RMSNorm" : "LayerNorm");
  a.opt("--norm-epsilon", m.norm_eps);
  if (m.mlp == core::MlpKind::kSwiGlu) a.flag("--swiglu");  // gelu is Megatron's default
  if (!m.qkv_bias) a.flag("--disable-bias-linear");
  else if (!m.out_bias) a.v.insert(a.v.end(), {"--disable-bias-linear", "--add-qkv-bias"});
  if (!m.tied_embeddings) a.flag("--untie-embeddings-and-output-weights");
  a.opt("--make-vocab-size-divisible-by", vocab_divisor);
  return core::ok_status();
}

// --- Megatron-LM: parallelism ----------------------------------------------------------------

// ZeRO over data parallelism. Stage 1 is the distributed optimizer. Stages 2 and 3 are
// Megatron-FSDP's optim_grads / optim_grads_params sharding (Megatron-Core >= 0.14), with the
// flags its user guide requires (docs.nvidia.com/megatron-core/developer-guide/latest/
// discussions/megatron-fsdp-user-guide: --use-megatron-fsdp, --data-parallel-sharding-strategy,
// --no-gradient-accumulation-fusion, --use-distributed-optimizer, --ckpt-format fsdp_dtensor;
// validate_args asserts the last one).
core::Status add_megatron_zero(const Layout& l, Args& a) {
  if (l.zero == 1) a.flag("--use-distributed-optimizer");
  if (l.zero < 2) return core::ok_status();
  if (l.pp > 1) {
    return core::error(ErrorCode::kInvalidArgument,
                       "--zero {} with pp {}: Megatron-LM shards gradients/parameters only "
                       "through Megatron-FSDP, which supports TP, EP and CP but not pipeline "
                       "parallelism (DeepSpeed refuses ZeRO-2/3 with pp > 1 too); allowed: --zero "
                       "0 or 1 (the distributed optimizer) with pp > 1, or pp 1",
                       l.zero, l.pp);
  }
  a.flag("--use-megatron-fsdp");
  a.opt("--data-parallel-sharding-strategy", l.zero == 2 ? "optim_grads" : "optim_grads_params");
  a.flag("--no-gradient-accumulation-fusion");
  a.flag("--use-distributed-optimizer");
  a.opt("--ckpt-format", "fsdp_dtensor");
  return core::ok_status();
}

core::Status add_megatron_parallelism(const Layout& l, Args& a) {
  if (l.pp > 1 && l.schedule == core::PipelineSchedule::kGPipe) {
    return core::error(ErrorCode::kInvalidArgument,
                       "--schedule gpipe: Megatron-LM runs 1F1B (interleaved with vpp > 1) and "
                       "has no GPipe schedule; allowed: --schedule 1f1b");
  }
  a.opt("--tensor-model-parallel-size", l.tp);
  a.opt("--pipeline-model-parallel-size", l.pp);
  if (l.sp) a.flag("--sequence-parallel");
  // Megatron's default order is tp-cp-ep-dp-pp; the flag swaps dp and pp. Both orders are the
  // same grid unless pp > 1 and dp > 1.
  if (l.rank_order == "tp-pp-dp" && l.pp > 1 && l.dp > 1) a.flag("--use-tp-pp-dp-mapping");
  LOOM_RETURN_IF_ERROR(add_megatron_zero(l, a));
  a.opt("--micro-batch-size", l.mbs);
  a.opt("--global-batch-size", l.gbs);
  if (l.recompute == core::Recompute::kSelective) a.opt("--recompute-granularity", "selective");
  if (l.recompute == core::Recompute::kFull) {
    // Every block recomputed from its input: uniform chunks of one layer.
    a.opt("--recompute-granularity", "full");
    a.opt("--recompute-method", "uniform");
    a.opt("--recompute-num-layers", 1);
  }
  if (l.precision == core::Precision::kBf16) a.flag("--bf16");
  if (l.precision == core::Precision::kFp16) a.flag("--fp16");
  return core::ok_status();
}

// --- Megatron-LM: pipeline split -------------------------------------------------------------

// One virtual stage of a --pipeline-model-parallel-layout: E (embedding), t (a block), L (the
// LM head + loss), "t*n" for n blocks.
std::string layout_stage(int64_t blocks, bool first, bool last) {
  std::string s = first ? "E" : "";
  if (blocks == 1) s += "t";
  if (blocks > 1) s += fmt::format("t*{}", blocks);
  if (last) s += "L";
  return s;
}

// Megatron-Core's layout string (megatron/core/transformer/pipeline_parallel_layer_layout.py,
// parse_str_to_list): stages split by '|', "x*n" and "(...)*n" repeat, commas are cosmetic;
// entry vpp_rank * pp + pp_rank runs on pipeline rank pp_rank, i.e. Loom's chunk order. Runs
// of equal middle stages are written "(t*6|)*10," as in the file's own example.
std::string megatron_layout_string(const std::vector<int64_t>& partition) {
  const size_t n = partition.size();
  std::string out;
  for (size_t c = 0; c < n;) {
    size_t run = 1;
    while (c > 0 && c + run < n - 1 && partition[c + run] == partition[c]) ++run;
    const std::string stage = layout_stage(partition[c], c == 0, c == n - 1);
    if (run > 1 && c > 0 && c + run < n) {
      out += fmt::format("({}|)*{},", stage, run);
    } else {
      run = 1;
      out += stage + (c + 1 < n ? "|" : "");
    }
    c += run;
  }
  return out;
}

// How Megatron places the plan's blocks. Equal chunks need only the default split (vpp 1) or
// --num-layers-per-virtual-pipeline-stage; a vpp-1 split whose middle stages are equal is
// --decoder-first/last-pipeline-num-layers (middle stages share the rest evenly:
// megatron/core/transformer/transformer_layer.py get_transformer_layer_offset); anything else,
// interleaved or not, is spelled out with --pipeline-model-parallel-layout (at most one of
// the three may be set: validate_args).
void add_megatron_split(const Layout& l, Args& a) {
  const auto& p = l.partition;
  if (l.pp == 1) return;
  if (all_equal(p.begin(), p.end())) {
    if (l.vpp > 1) a.opt("--num-layers-per-virtual-pipeline-stage", p.front());
    return;
  }
  const bool middle_equal = all_equal(p.begin() + 1, p.end() - 1);
  if (l.vpp == 1 && middle_equal) {
    if (l.pp == 2) {  // the last stage is the only "middle" one and takes the rest
      a.opt("--decoder-first-pipeline-num-layers", p.front());
      return;
    }
    const int64_t middle = p[1];
    if (p.front() != middle) a.opt("--decoder-first-pipeline-num-layers", p.front());
    if (p.back() != middle) a.opt("--decoder-last-pipeline-num-layers", p.back());
    return;
  }
  a.opt("--pipeline-model-parallel-layout", megatron_layout_string(p));
}

}  // namespace

core::Result<std::vector<std::string>> megatron_arguments(const Plan& plan) {
  Args a;
  LOOM_RETURN_IF_ERROR(add_megatron_model(plan.model, plan.layout, a));
  LOOM_RETURN_IF_ERROR(add_megatron_parallelism(plan.layout, a));
  add_megatron_split(plan.layout, a);
  return a.v;
}

// --- DeepSpeed -------------------------------------------------------------------------------

namespace {

core::Status check_deepspeed_layout(const Layout& l) {
  if (l.zero >= 2 && l.pp > 1) {
    // deepspeed/runtime/pipe/engine.py PipelineEngine.__init__ asserts
    // zero_optimization_stage() < 2: "ZeRO-2 and ZeRO-3 are incompatible with pipeline
    // parallelism" (sharded gradients would be reduced between micro-batches).
    return core::error(ErrorCode::kInvalidArgument,
                       "--zero {} with pp {}: DeepSpeed's pipeline engine refuses ZeRO-2 and "
                       "ZeRO-3 with pipeline parallelism; allowed: --zero 0 or 1 with pp > 1, or "
                       "pp 1",
                       l.zero, l.pp);
  }
  if (l.vpp > 1) {
    return core::error(ErrorCode::kInvalidArgument,
                       "--vpp {}: DeepSpeed's pipeline engine has no interleaved schedule "
                       "(deepspeed/runtime/pipe/schedule.py TrainSchedule is plain 1F1B); "
                       "allowed: --vpp 1, or --format megatron",
                       l.vpp);
  }
  if (l.pp > 1 && l.schedule == core::PipelineSchedule::kGPipe) {
    return core::error(ErrorCode::kInvalidArgument,
                       "--schedule gpipe: DeepSpeed's pipeline engine runs 1F1B only "
                       "(TrainSchedule); allowed: --schedule 1f1b");
  }
  // BigScience Megatron-DeepSpeed (megatron/arguments.py) has --checkpoint-activations only
  // and no --sequence-parallel.
  if (l.sp) {
    return core::error(ErrorCode::kInvalidArgument,
                       "--sp: Megatron-DeepSpeed (BigScience) has no sequence parallelism; "
                       "allowed: --sp off, or --format megatron");
  }
  if (l.recompute == core::Recompute::kSelective) {
    return core::error(ErrorCode::kInvalidArgument,
                       "--recompute selective: Megatron-DeepSpeed (BigScience) recomputes whole "
                       "layers only (--checkpoint-activations); allowed: none, full, or --format "
                       "megatron");
  }
  return core::ok_status();
}

// DeepSpeed's PipelineModule takes a partition *method*, not a list ("uniform", "parameters",
// "type:<regex>"; runtime/pipe/module.py _partition_layers), and Megatron-DeepSpeed passes
// --pp-partition-method through (BigScience megatron/model/gpt_model.py GPTModelPipe;
// BLOOM used 'type:transformer|embedding', bigscience tr11-176B-ml). Only partitions one of
// Loom's two methods produces can be reproduced.
core::Result<std::string> deepspeed_partition_method(const Layout& l, const ModelSpec& m) {
  const auto uniform = core::partition_blocks(m.num_layers, l.pp, core::PartitionMethod::kUniform);
  const auto with_embedding =
      core::partition_blocks(m.num_layers, l.pp, core::PartitionMethod::kEmbeddingAsLayer);
  const bool prefer_embedding = l.partition_method == core::PartitionMethod::kEmbeddingAsLayer;
  if (l.partition == with_embedding && (prefer_embedding || l.partition != uniform)) {
    return std::string("type:transformer|embedding");
  }
  if (l.partition == uniform) return std::string("type:transformer");
  return core::error(ErrorCode::kInvalidArgument,
                     "--partition {}: DeepSpeed's PipelineModule takes a partition method, not a "
                     "list; allowed: {} (type:transformer) or {} (type:transformer|embedding)",
                     partition_text(l.partition), partition_text(uniform),
                     partition_text(with_embedding));
}

// zero_optimization with DeepSpeed's own defaults written out (runtime/zero/config.py), so the
// file says what runs. overlap_comm follows DeepSpeed's dynamic default (on for stage 3 only),
// which is what Loom's megatron-deepspeed traits assume (dp_comm_overlap 0 for stages 0-2);
// the stage-3 limits match its zero3_max_live_params / zero3_reduce_bucket_params.
nlohmann::json zero_section(int stage) {
  nlohmann::json z = {{"stage", stage}};
  if (stage == 0) return z;
  z["contiguous_gradients"] = true;
  z["overlap_comm"] = stage == 3;
  z["reduce_scatter"] = true;
  z["reduce_bucket_size"] = int64_t{500000000};
  z["allgather_bucket_size"] = int64_t{500000000};
  if (stage == 3) {
    z["stage3_prefetch_bucket_size"] = int64_t{50000000};
    z["stage3_param_persistence_threshold"] = int64_t{100000};
    z["stage3_max_live_parameters"] = int64_t{1000000000};
    z["stage3_max_reuse_distance"] = int64_t{1000000000};
  }
  return z;
}

core::Result<std::vector<std::string>> megatron_deepspeed_args(const Plan& plan,
                                                               const std::string& config_path) {
  const Layout& l = plan.layout;
  Args a;
  a.flag("--deepspeed");  // deepspeed.add_config_arguments: --deepspeed, --deepspeed_config
  a.opt("--deepspeed_config", config_path);
  a.opt("--zero-stage", l.zero);
  a.opt("--tensor-model-parallel-size", l.tp);
  a.opt("--pipeline-model-parallel-size", l.pp);
  if (l.pp > 1) {
    LOOM_ASSIGN_OR_RETURN(const std::string method, deepspeed_partition_method(l, plan.model));
    a.opt("--pp-partition-method", method);
  }
  a.opt("--micro-batch-size", l.mbs);
  a.opt("--global-batch-size", l.gbs);
  a.opt("--seq-length", l.seq);
  if (l.recompute == core::Recompute::kFull) a.flag("--checkpoint-activations");
  if (l.precision == core::Precision::kBf16) a.flag("--bf16");
  if (l.precision == core::Precision::kFp16) a.flag("--fp16");
  return a.v;
}

}  // namespace

core::Result<nlohmann::json> deepspeed_config(const Plan& plan, const std::string& config_path) {
  const Layout& l = plan.layout;
  LOOM_RETURN_IF_ERROR(check_deepspeed_layout(l));
  LOOM_ASSIGN_OR_RETURN(auto args, megatron_deepspeed_args(plan, config_path));
  // DeepSpeed asserts train_batch_size == micro x gradient_accumulation_steps x dp
  // (runtime/config.py _batch_assertion); the resolved layout guarantees the division.
  nlohmann::json j;
  j["train_batch_size"] = l.gbs;
  j["train_micro_batch_size_per_gpu"] = l.mbs;
  j["gradient_accumulation_steps"] = l.num_microbatches();
  j["gradient_clipping"] = 1.0;  // Megatron's --clip-grad default, as BLOOM trained
  j["zero_optimization"] = zero_section(l.zero);
  j["bf16"] = {{"enabled", l.precision == core::Precision::kBf16}};
  // loss_scale 0 = dynamic loss scaling (constants.py FP16_LOSS_SCALE_DEFAULT).
  j["fp16"] = {{"enabled", l.precision == core::Precision::kFp16}, {"loss_scale", 0}};
  if (l.pp > 1) {
    // The only runtime/config.py get_pipeline_config key the pipe engine applies to the model
    // (engine.py: module.activation_checkpoint_interval when > 0); its "stages" and
    // "partition" entries are read by nothing, so the split travels as --pp-partition-method.
    j["pipeline"] = {{"activation_checkpoint_interval",
                      l.recompute == core::Recompute::kFull ? 1 : 0}};
  }
  j["steps_per_print"] = 10;  // constants.py STEPS_PER_PRINT_DEFAULT
  j["megatron_deepspeed_arguments"] = std::move(args);
  return j;
}

// --- Printing --------------------------------------------------------------------------------

std::string shell_quote(const std::string& arg) {
  const auto safe = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) ||
           std::string_view("_@%+=:,./-").find(c) != std::string_view::npos;
  };
  if (!arg.empty() && std::all_of(arg.begin(), arg.end(), safe)) return arg;
  std::string out = "'";
  for (char c : arg) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string shell_quote_join(const std::vector<std::string>& args) {
  std::vector<std::string> quoted;
  for (const auto& s : args) quoted.push_back(shell_quote(s));
  return join(quoted, " ");
}

std::string shell_continuation_lines(const std::vector<std::string>& args,
                                     const std::string& indent) {
  std::vector<std::string> lines;
  for (const auto& s : args) {
    const bool option = s.rfind("--", 0) == 0;
    if (option || lines.empty()) {
      lines.push_back(indent + shell_quote(s));
    } else {
      lines.back() += ' ';
      lines.back() += shell_quote(s);
    }
  }
  return join(lines, " \\\n");
}

}  // namespace loom::plan
