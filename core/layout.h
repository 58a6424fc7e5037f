// Layout: how a model is laid out over GPUs (TP/PP/DP/ZeRO, batch, recompute, pipeline
// partition, rank order) and the validation of a layout against a model and a GPU count.
// Each field is declared once in visit_layout_fields(): the CLI flags, the YAML keys of plan
// files and --help all come from there. Tested in tests/core/layout_test.cc.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "core/model_spec.h"
#include "core/status.h"

namespace loom::core {

enum class Recompute { kNone, kSelective, kFull };
enum class Precision { kBf16, kFp16, kFp32 };
// How blocks are split over (virtual) pipeline stages when no explicit partition is given.
//  kUniform: only transformer blocks are balanced; the embedding and the LM head come on top
//    of the first and last stage (Megatron's default; DeepSpeed's "type:transformer").
//  kEmbeddingAsLayer: the embedding and the LM head + loss each count as one layer
//    (DeepSpeed "type:transformer|embedding" as BLOOM used it; Megatron's
//    --account-for-embedding-in-pipeline-split --account-for-loss-in-pipeline-split).
enum class PartitionMethod { kUniform, kEmbeddingAsLayer };
enum class PipelineSchedule { k1F1B, kGPipe };  // interleaving is 1F1B with vpp > 1

Result<Recompute> parse_recompute(const std::string& s);
Result<Precision> parse_precision(const std::string& s);
Result<PartitionMethod> parse_partition_method(const std::string& s);
Result<PipelineSchedule> parse_pipeline_schedule(const std::string& s);
const char* to_string(Recompute r);
const char* to_string(Precision p);
const char* to_string(PartitionMethod p);
const char* to_string(PipelineSchedule s);

struct Layout {
  int64_t gpus = 0;  // total ranks; 0 = tp * pp * dp
  int64_t tp = 1;
  int64_t pp = 1;
  int64_t dp = 0;    // 0 = gpus / (tp * pp)
  int64_t vpp = 1;   // model chunks per pipeline rank (interleaved 1F1B when > 1)
  bool sp = false;   // Megatron sequence parallelism (needs tp > 1)
  int zero = 0;      // ZeRO stage 0-3 over DP (1 = Megatron's distributed optimizer)
  int64_t mbs = 1;
  int64_t gbs = 0;
  int64_t seq = 0;   // 0 = the model's max_seq_len
  Recompute recompute = Recompute::kNone;
  Precision precision = Precision::kBf16;
  PipelineSchedule schedule = PipelineSchedule::k1F1B;
  PartitionMethod partition_method = PartitionMethod::kUniform;
  // Transformer blocks per virtual stage (pp * vpp entries; chunk c runs on stage c % pp).
  // The embedding is on chunk 0 and the LM head + loss on the last chunk. Empty = derive
  // it with partition_method.
  std::vector<int64_t> partition;
  std::string rank_order = "tp-dp-pp";  // innermost first (Megatron's order)

  int64_t num_microbatches() const { return gbs / (mbs * dp); }
  int64_t num_chunks() const { return pp * vpp; }
  int64_t stage_of_chunk(int64_t chunk) const { return chunk % pp; }
  // Blocks held by pipeline stage `stage` (summed over its chunks).
  int64_t blocks_on_stage(int64_t stage) const;
  // "t4p12d8 z1 mbs2 gbs2048 full" style summary for tables.
  std::string summary() const;
};

// Position of a global rank in the layout's process grid under its rank_order (innermost
// first): with "tp-dp-pp", rank = tp_rank + tp * (dp_rank + dp * pp_rank).
struct RankCoords {
  int64_t tp = 0;
  int64_t dp = 0;
  int64_t pp = 0;
};
RankCoords rank_coords(const Layout& layout, int64_t rank);

// Checks `layout` against `model`, derives dp / seq / partition, and returns the resolved
// layout. Every error names the field, the value and what would be allowed.
Result<Layout> resolve_layout(Layout layout, const ModelSpec& model);

// The partition `method` gives for `num_layers` blocks over `chunks` virtual stages.
std::vector<int64_t> partition_blocks(int64_t num_layers, int64_t chunks, PartitionMethod method);

// Parses "5,6,6,5" (the --partition flag).
Result<std::vector<int64_t>> parse_partition(const std::string& s);

// --- The single definition of every layout option ---------------------------------------
// V provides: integer(key, flags, help, int64_t&), flag(key, flags, help, bool&),
// enumeration(key, flags, help, E&, parse), zero_stage(key, flags, help, int&), int_list(key, flags, help,
// std::vector<int64_t>&), text(key, flags, help, std::string&).
template <typename V>
void visit_layout_fields(Layout& l, V& v) {
  v.integer("gpus", "--gpus", "total number of GPUs (ranks)", l.gpus);
  v.integer("tp", "--tp,--tensor-model-parallel-size", "tensor-parallel size", l.tp);
  v.integer("pp", "--pp,--pipeline-model-parallel-size", "pipeline-parallel size", l.pp);
  v.integer("dp", "--dp,--data-parallel-size", "data-parallel size (default: gpus / (tp * pp))",
            l.dp);
  v.integer("vpp", "--vpp,--virtual-pipeline-model-parallel-size",
            "model chunks per pipeline rank (interleaved 1F1B when > 1)", l.vpp);
  v.flag("sp", "--sp,--sequence-parallel", "Megatron sequence parallelism (needs tp > 1)", l.sp);
  v.zero_stage("zero", "--zero,--zero-stage",
               "ZeRO stage over data parallelism: 0 none, 1 optimizer states (= distributed "
               "optimizer), 2 + gradients, 3 + parameters",
               l.zero);
  v.integer("mbs", "--mbs,--micro-batch-size", "micro-batch size (sequences)", l.mbs);
  v.integer("gbs", "--gbs,--global-batch-size", "global batch size (sequences per iteration)",
            l.gbs);
  v.integer("seq", "--seq,--seq-length", "sequence length (default: the model's max_seq_len)",
            l.seq);
  v.enumeration("recompute", "--recompute", "activation recomputation: none, selective, full",
                l.recompute, parse_recompute);
  v.enumeration("precision", "--precision", "training precision: bf16, fp16, fp32", l.precision,
                parse_precision);
  v.enumeration("schedule", "--schedule", "pipeline schedule: 1f1b (interleaved when vpp > 1), gpipe",
                l.schedule, parse_pipeline_schedule);
  v.enumeration("partition_method", "--partition-method",
                "default pipeline split: uniform (blocks only) or embedding-as-layer (the "
                "embedding and the LM head count as one layer each)",
                l.partition_method, parse_partition_method);
  v.int_list("partition", "--partition",
             "transformer blocks per (virtual) stage, e.g. 5,6,6,5; embedding on the first, "
             "LM head on the last",
             l.partition);
  v.text("rank_order", "--rank-order", "rank order, innermost first (tp-dp-pp or tp-pp-dp)",
         l.rank_order);
}

Result<Layout> layout_from_yaml(const YAML::Node& node, const std::string& origin);
YAML::Node layout_to_yaml(const Layout& layout);

}  // namespace loom::core
