// The per-GPU memory model: for a model, a cluster profile and a layout, the bytes each
// pipeline stage's ranks hold, itemised (weights, gradients, master weights, optimizer
// states, stashed activations, backward working set, logits, communication and ZeRO-3
// buffers, allocator reserve, fixed overheads), the peak and whether it fits.
// Validated against measured runs in tests/sim/memory_validation_test.cc.
//
//   MemoryModelInput in{model, cluster, layout, framework};
//   LOOM_ASSIGN_OR_RETURN(MemoryReport report, estimate_memory(in));
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/cluster_profile.h"
#include "core/layout.h"
#include "core/model_spec.h"
#include "simulator/activation_memory.h"
#include "simulator/framework.h"

namespace loom::sim {

struct MemoryModelInput {
  core::ModelSpec model;
  core::ClusterProfile cluster;
  core::Layout layout;  // resolved (core::resolve_layout)
  Framework framework = Framework::kMegatron;
  // Overrides of the framework's defaults (validation runs set what their source states).
  std::optional<bool> flash_attention;
  bool dropout = false;
  bool describe_stages = true;  // fill StageMemory::holds (the planner turns it off)
};

// One line of the itemised breakdown.
struct MemoryItem {
  const char* name;  // weights, gradients, ... (static strings: the planner builds millions)
  double bytes = 0;
};

struct StageMemory {
  int64_t stage = 0;
  int64_t blocks = 0;
  bool has_embedding = false;
  bool has_lm_head = false;
  std::string holds;            // "embedding + blocks 0-4"
  int64_t params_per_rank = 0;  // parameters this stage's TP rank holds (before ZeRO)
  int64_t microbatches_in_flight = 0;
  double work_block_equivalents = 0;  // compute load relative to one block (embedding/head)

  std::vector<MemoryItem> items;  // allocated by the framework (live tensors at the peak)
  // backward_working and logits_and_loss as they count toward the peak: both with fixed
  // arenas, else the larger (each is freed before the other phase).
  double transient_bytes = 0;
  double allocated_bytes = 0;     // persistent items + transient_bytes
  // Cached-but-free blocks of the framework's caching allocator at the peak; released and
  // retried before an out-of-memory error, so not part of what must fit.
  double allocator_reserve_bytes = 0;
  double fixed_overhead_bytes = 0;  // CUDA context, workspaces, NCCL (profile)
  double peak_bytes = 0;            // allocated + fixed: what the device must hold
  // The allocator's pool (torch.cuda.max_memory_reserved) and what nvidia-smi would show.
  double reserved_bytes() const { return allocated_bytes + allocator_reserve_bytes; }
  double observed_bytes() const { return peak_bytes + allocator_reserve_bytes; }
  double item(std::string_view name) const;
};

struct CheckpointEstimate {
  double bytes = 0;               // full checkpoint: weights + fp32 master + Adam m, v
  double weights_only_bytes = 0;  // half-precision weights only
  double max_rank_bytes = 0;      // the largest file set one rank writes
  int64_t writer_ranks = 0;       // ranks that write something
  double write_time_s = 0;        // at the profile's storage bandwidth
};

struct MemoryReport {
  std::vector<StageMemory> stages;
  double peak_bytes = 0;  // largest rank
  int64_t peak_stage = 0;
  double capacity_bytes = 0;  // device memory minus the profile's headroom
  bool fits = false;
  CheckpointEstimate checkpoint;
  std::vector<std::string> warnings;
  bool fixed_arenas = false;  // the framework holds backward_working and logits_and_loss at once

  double peak_gib() const;
};

core::Result<MemoryReport> estimate_memory(const MemoryModelInput& input);

// A stage's peak memory as a function of its block count (vpp = 1): peak = fixed + per_block x n
// for n >= 1, exact in this model (every term is affine in the blocks), and empty_stage_bytes
// for n = 0 (a first or last stage holding only the embedding or the LM head). What a pipeline
// partitioner needs to respect each stage's memory limit.
struct StageMemoryLine {
  double fixed_bytes = 0;
  double per_block_bytes = 0;
  double empty_stage_bytes = 0;
  double peak_bytes(int64_t blocks) const {
    return blocks == 0 ? empty_stage_bytes : fixed_bytes + per_block_bytes * static_cast<double>(blocks);
  }
};
core::Result<std::vector<StageMemoryLine>> stage_memory_lines(const MemoryModelInput& input);

// The stable JSON form: peak_gib, fits, per_stage [...], checkpoint {bytes, write_time_s}.
nlohmann::json memory_report_json(const MemoryReport& report);

}  // namespace loom::sim
