// Layout parsing, derivation and validation: see layout.h.
#include "core/layout.h"

#include <algorithm>
#include <numeric>
#include <sstream>

#include "core/yaml_reader.h"

namespace loom::core {

Result<Recompute> parse_recompute(const std::string& s) {
  if (s == "none") return Recompute::kNone;
  if (s == "selective") return Recompute::kSelective;
  if (s == "full") return Recompute::kFull;
  return error(ErrorCode::kInvalidArgument,
               "recompute '{}' is not known (allowed: none, selective, full)", s);
}
Result<Precision> parse_precision(const std::string& s) {
  if (s == "bf16") return Precision::kBf16;
  if (s == "fp16") return Precision::kFp16;
  if (s == "fp32") return Precision::kFp32;
  return error(ErrorCode::kInvalidArgument, "precision '{}' is not known (allowed: bf16, fp16, fp32)",
               s);
}
Result<PartitionMethod> parse_partition_method(const std::string& s) {
  if (s == "uniform") return PartitionMethod::kUniform;
  if (s == "embedding-as-layer") return PartitionMethod::kEmbeddingAsLayer;
  return error(ErrorCode::kInvalidArgument,
               "partition method '{}' is not known (allowed: uniform, embedding-as-layer)", s);
}
Result<PipelineSchedule> parse_pipeline_schedule(const std::string& s) {
  if (s == "1f1b") return PipelineSchedule::k1F1B;
  if (s == "gpipe") return PipelineSchedule::kGPipe;
  return error(ErrorCode::kInvalidArgument, "pipeline schedule '{}' is not known (allowed: 1f1b, gpipe)",
               s);
}
const char* to_string(Recompute r) {
  switch (r) {
    case Recompute::kNone: return "none";
    case Recompute::kSelective: return "selective";
    case Recompute::kFull: return "full";
  }
  return "?";
}
const char* to_string(Precision p) {
  switch (p) {
    case Precision::kBf16: return "bf16";
    case Precision::kFp16: return "fp16";
    case Precision::kFp32: return "fp32";
  }
  return "?";
}
const char* to_string(PartitionMethod p) {
  return p == PartitionMethod::kUniform ? "uniform" : "embedding-as-layer";
}
const char* to_string(PipelineSchedule s) { return s == PipelineSchedule::k1F1B ? "1f1b" : "gpipe"; }

int64_t Layout::blocks_on_stage(int64_t stage) const {
  int64_t n = 0;
  for (int64_t c = stage; c < static_cast<int64_t>(partition.size()); c += pp) n += partition[c];
  return n;
}

std::string Layout::summary() const {
  std::string s = fmt::format("tp{} pp{} dp{}", tp, pp, dp);
  if (vpp > 1) s += fmt::format(" vpp{}", vpp);
  if (sp) s += " sp";
  s += fmt::format(" zero{} mbs{} gbs{} seq{} recompute={}", zero, mbs, gbs, seq, to_string(recompute));
  return s;
}

RankCoords rank_coords(const Layout& l, int64_t rank) {
  RankCoords c;
  c.tp = rank % l.tp;
  const int64_t rest = rank / l.tp;
  if (l.rank_order == "tp-pp-dp") {
    c.pp = rest % l.pp;
    c.dp = rest / l.pp;
  } else {
    c.dp = rest % l.dp;
    c.pp = rest / l.dp;
  }
  return c;
}

std::vector<int64_t> partition_blocks(int64_t num_layers, int64_t chunks, PartitionMethod method) {
  std::vector<int64_t> parts(chunks, 0);
  if (chunks <= 0) return parts;
  if (method == PartitionMethod::kUniform) {
    // DeepSpeed ds_utils.partition_uniform: the first (L mod K) chunks take one extra block.
    const int64_t base = num_layers / chunks, extra = num_layers % chunks;
    for (int64_t c = 0; c < chunks; ++c) parts[c] = base + (c < extra ? 1 : 0);
    return parts;
  }
  // L + 2 items (embedding, blocks, LM head) over K chunks as evenly as possible. Chunks that
  // get one item more are taken from the middle first, since the ends already carry the
  // embedding and the head; then the embedding and the head are taken off the ends.
  const int64_t items = num_layers + 2;
  const int64_t base = items / chunks;
  int64_t extra = items % chunks;
  std::vector<int64_t> sizes(chunks, base);
  for (int64_t c = 1; c + 1 < chunks && extra > 0; ++c, --extra) ++sizes[c];
  if (extra > 0) { ++sizes[0]; --extra; }
  if (extra > 0) { ++sizes[chunks - 1]; --extra; }
  sizes[0] -= 1;
  sizes[chunks - 1] -= 1;
  // With very many chunks an end can go negative (fewer blocks than chunks); move the
  // deficit inwards so the blocks still sum to num_layers.
  for (int64_t end : {int64_t{0}, chunks - 1}) {
    while (sizes[end] < 0) {
      ++sizes[end];
      auto it = std::max_element(sizes.begin(), sizes.end());
      --*it;
    }
  }
  return sizes;
}

Result<std::vector<int64_t>> parse_partition(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    try {
      size_t used = 0;
      const long long v = std::stoll(item, &used);
      if (used != item.size()) throw std::invalid_argument(item);
      out.push_back(v);
    } catch (const std::exception&) {
      return error(ErrorCode::kInvalidArgument,
                   "--partition '{}': '{}' is not an integer (expected blocks per stage, e.g. "
                   "5,6,6,5)",
                   s, item);
    }
  }
  if (out.empty()) {
    return error(ErrorCode::kInvalidArgument, "--partition '{}' is empty (expected e.g. 5,6,6,5)", s);
  }
  return out;
}

namespace {

std::string divisors_up_to(int64_t n, int64_t limit) {
  std::string s;
  for (int64_t d = 1; d <= std::min(n, limit); ++d) {
    if (n % d == 0) s += (s.empty() ? "" : ", ") + std::to_string(d);
  }
  return s;
}

Status check_positive(const char* field, int64_t v) {
  if (v < 1) {
    return error(ErrorCode::kInvalidArgument, "layout field '{}' = {} must be at least 1", field, v);
  }
  return ok_status();
}

Status check_rank_order(const std::string& order) {
  static const char* kAllowed[] = {"tp-dp-pp", "tp-pp-dp"};
  for (const char* a : kAllowed) {
    if (order == a) return ok_status();
  }
  return error(ErrorCode::kInvalidArgument,
               "layout field 'rank_order' = '{}' is not supported (allowed: tp-dp-pp (Megatron), "
               "tp-pp-dp); tensor parallelism stays innermost so that it rides the intra-node "
               "fabric",
               order);
}

Status check_scalars(const Layout& l) {
  LOOM_RETURN_IF_ERROR(check_positive("tp", l.tp));
  LOOM_RETURN_IF_ERROR(check_positive("pp", l.pp));
  LOOM_RETURN_IF_ERROR(check_positive("vpp", l.vpp));
  LOOM_RETURN_IF_ERROR(check_positive("mbs", l.mbs));
  if (l.gpus < 0) return error(ErrorCode::kInvalidArgument, "--gpus {} must be positive", l.gpus);
  if (l.dp < 0) return error(ErrorCode::kInvalidArgument, "--dp {} must be positive", l.dp);
  if (l.zero < 0 || l.zero > 3) {
    return error(ErrorCode::kInvalidArgument,
                 "--zero {} is out of range (allowed: 0 none, 1 optimizer states, 2 + gradients, "
                 "3 + parameters)",
                 l.zero);
  }
  LOOM_RETURN_IF_ERROR(check_rank_order(l.rank_order));

  return ok_status();
}

Status check_tensor_parallel(const Layout& l, const ModelSpec& model) {
  // Tensor parallelism splits attention heads and K/V groups (Megatron asserts both).
  if (model.num_heads % l.tp != 0) {
    return error(ErrorCode::kInvalidArgument,
                 "--tp {}: num_heads {} of model '{}' is not divisible by tp (allowed tp: {})",
                 l.tp, model.num_heads, model.name, divisors_up_to(model.num_heads, 64));
  }
  if (model.num_kv_heads % l.tp != 0) {
    return error(ErrorCode::kInvalidArgument,
                 "--tp {}: num_kv_heads {} of model '{}' is not divisible by tp (allowed tp: {})",
                 l.tp, model.num_kv_heads, model.name,
                 divisors_up_to(std::gcd(model.num_heads, model.num_kv_heads), 64));
  }
  if (model.ffn_hidden_size % l.tp != 0) {
    return error(ErrorCode::kInvalidArgument,
                 "--tp {}: ffn_hidden_size {} of model '{}' is not divisible by tp (allowed tp: {})",
                 l.tp, model.ffn_hidden_size, model.name,
                 divisors_up_to(std::gcd(model.num_kv_heads, model.ffn_hidden_size), 64));
  }

  return ok_status();
}

// Derives dp (or checks it) so that tp x pp x dp is the GPU count.
Status resolve_data_parallel(Layout& l) {
  // GPUs and data parallelism: tp * pp * dp must be the GPU count.
  const int64_t model_parallel = l.tp * l.pp;
  if (l.dp == 0) {
    if (l.gpus == 0) {
      return error(ErrorCode::kInvalidArgument, "give --gpus or --dp (the layout has neither)");
    }
    if (l.gpus % model_parallel != 0) {
      return error(ErrorCode::kInvalidArgument,
                   "--gpus {} is not divisible by tp x pp = {} x {} = {} (allowed gpus: multiples "
                   "of {})",
                   l.gpus, l.tp, l.pp, model_parallel, model_parallel);
    }
    l.dp = l.gpus / model_parallel;
  }
  if (l.gpus == 0) l.gpus = model_parallel * l.dp;
  if (model_parallel * l.dp != l.gpus) {
    return error(ErrorCode::kInvalidArgument,
                 "tp x pp x dp = {} x {} x {} = {} does not equal --gpus {} (with tp {} and pp {}, "
                 "dp must be {})",
                 l.tp, l.pp, l.dp, model_parallel * l.dp, l.gpus, l.tp, l.pp,
                 l.gpus % model_parallel == 0 ? std::to_string(l.gpus / model_parallel)
                                              : std::string("impossible: gpus not divisible"));
  }

  return ok_status();
}

Status resolve_sequence(Layout& l, const ModelSpec& model) {
  // Sequence.
  if (l.seq == 0) l.seq = model.max_seq_len;
  LOOM_RETURN_IF_ERROR(check_positive("seq", l.seq));
  if (model.position == PositionKind::kLearned && l.seq > model.max_seq_len) {
    return error(ErrorCode::kInvalidArgument,
                 "--seq {} exceeds the learned position table of model '{}' (allowed: at most {})",
                 l.seq, model.name, model.max_seq_len);
  }
  if (l.sp && l.tp == 1) {
    return error(ErrorCode::kInvalidArgument,
                 "--sp needs tensor parallelism (tp > 1): sequence parallelism splits the "
                 "sequence over the TP group, and tp is 1");
  }
  if (l.sp && l.seq % l.tp != 0) {
    return error(ErrorCode::kInvalidArgument,
                 "--seq {} is not divisible by tp {} (sequence parallelism splits the sequence "
                 "over the TP ranks)",
                 l.seq, l.tp);
  }

  return ok_status();
}

Status check_batch(const Layout& l) {
  // Batch: the global batch is whole micro-batches on every DP rank.
  if (l.gbs == 0) {
    return error(ErrorCode::kInvalidArgument, "give --gbs (the global batch size in sequences)");
  }
  const int64_t per_step = l.mbs * l.dp;
  if (l.gbs % per_step != 0) {
    const int64_t lower = l.gbs / per_step * per_step;
    return error(ErrorCode::kInvalidArgument,
                 "--gbs {} is not divisible by mbs x dp = {} x {} = {} (allowed gbs: multiples of "
                 "{}, e.g. {} or {})",
                 l.gbs, l.mbs, l.dp, per_step, per_step, lower > 0 ? lower : per_step,
                 lower + per_step);
  }

  return ok_status();
}

// Checks the schedule and derives (or checks) the blocks of every virtual stage.
Status resolve_pipeline(Layout& l, const ModelSpec& model) {
  // Pipeline.
  if (l.vpp > 1) {
    if (l.pp < 2) {
      return error(ErrorCode::kInvalidArgument,
                   "--vpp {} needs pipeline parallelism (pp >= 2); pp is {}", l.vpp, l.pp);
    }
    if (l.num_microbatches() % l.pp != 0) {
      return error(ErrorCode::kInvalidArgument,
                   "--vpp {}: the interleaved schedule needs the number of micro-batches "
                   "(gbs / (mbs x dp) = {}) to be a multiple of pp {}",
                   l.vpp, l.num_microbatches(), l.pp);
    }
    if (l.schedule == PipelineSchedule::kGPipe) {
      return error(ErrorCode::kInvalidArgument,
                   "--vpp {} is only supported with --schedule 1f1b (interleaved 1F1B)", l.vpp);
    }
  }
  const int64_t chunks = l.num_chunks();
  if (chunks > model.num_layers + 2) {
    return error(ErrorCode::kInvalidArgument,
                 "pp x vpp = {} virtual stages is more than the {} blocks + embedding + LM head of "
                 "model '{}'",
                 chunks, model.num_layers, model.name);
  }
  if (l.partition.empty()) {
    l.partition = partition_blocks(model.num_layers, chunks, l.partition_method);
  } else {
    if (static_cast<int64_t>(l.partition.size()) != chunks) {
      return error(ErrorCode::kInvalidArgument,
                   "--partition has {} entries but the layout has pp x vpp = {} x {} = {} "
                   "(virtual) stages",
                   l.partition.size(), l.pp, l.vpp, chunks);
    }
    const int64_t sum = std::accumulate(l.partition.begin(), l.partition.end(), int64_t{0});
    if (sum != model.num_layers) {
      return error(ErrorCode::kInvalidArgument,
                   "--partition sums to {} blocks but model '{}' has num_layers {}", sum,
                   model.name, model.num_layers);
    }
    for (int64_t c = 0; c < chunks; ++c) {
      const bool end = c == 0 || c == chunks - 1;  // may hold only the embedding / LM head
      if (l.partition[c] < 0 || (l.partition[c] == 0 && !end)) {
        return error(ErrorCode::kInvalidArgument,
                     "--partition entry {} (stage {}) = {}: every stage needs at least one block "
                     "(only the first and last may have 0, holding just the embedding or the LM "
                     "head)",
                     c, c % l.pp, l.partition[c]);
      }
    }
  }
  return ok_status();
}

}  // namespace

Result<Layout> resolve_layout(Layout l, const ModelSpec& model) {
  LOOM_RETURN_IF_ERROR(check_scalars(l));
  LOOM_RETURN_IF_ERROR(check_tensor_parallel(l, model));
  LOOM_RETURN_IF_ERROR(resolve_data_parallel(l));
  LOOM_RETURN_IF_ERROR(resolve_sequence(l, model));
  LOOM_RETURN_IF_ERROR(check_batch(l));
  LOOM_RETURN_IF_ERROR(resolve_pipeline(l, model));
  return l;
}

// --- YAML -----------------------------------------------------------------------------------

namespace {

struct YamlLayoutReader {
  YamlReader& r;
  Status status;
  void keep(Status s) { if (status.ok()) status = std::move(s); }
  void integer(const char* key, const char*, const char*, int64_t& v) { keep(r.optional(key, v)); }
  void zero_stage(const char* key, const char*, const char*, int& v) { keep(r.optional(key, v)); }
  void flag(const char* key, const char*, const char*, bool& v) { keep(r.optional(key, v)); }
  void text(const char* key, const char*, const char*, std::string& v) { keep(r.optional(key, v)); }
  void int_list(const char* key, const char*, const char*, std::vector<int64_t>& v) {
    keep(r.optional(key, v));
  }
  template <typename E>
  void enumeration(const char* key, const char*, const char*, E& v, Result<E> (*parse)(const std::string&)) {
    keep(r.enum_field(key, v, false, parse));
  }
};

struct YamlLayoutWriter {
  YAML::Node& n;
  void integer(const char* key, const char*, const char*, int64_t& v) { n[key] = v; }
  void zero_stage(const char* key, const char*, const char*, int& v) { n[key] = v; }
  void flag(const char* key, const char*, const char*, bool& v) { n[key] = v; }
  void text(const char* key, const char*, const char*, std::string& v) { n[key] = v; }
  void int_list(const char* key, const char*, const char*, std::vector<int64_t>& v) {
    YAML::Node list(YAML::NodeType::Sequence);
    for (int64_t x : v) list.push_back(x);
    list.SetStyle(YAML::EmitterStyle::Flow);
    n[key] = list;
  }
  template <typename E>
  void enumeration(const char* key, const char*, const char*, E& v, Result<E> (*)(const std::string&)) {
    n[key] = to_string(v);
  }
};

}  // namespace

Result<Layout> layout_from_yaml(const YAML::Node& node, const std::string& origin) {
  Layout l;
  YamlReader r(node, origin);
  YamlLayoutReader v{r, {}};
  visit_layout_fields(l, v);
  LOOM_RETURN_IF_ERROR(v.status);
  LOOM_RETURN_IF_ERROR(r.finish());
  return l;
}

YAML::Node layout_to_yaml(const Layout& layout) {
  Layout copy = layout;
  YAML::Node n;
  YamlLayoutWriter v{n};
  visit_layout_fields(copy, v);
  return n;
}

}  // namespace loom::core
