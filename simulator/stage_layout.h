// What each pipeline stage holds (blocks, embedding, LM head, their parameters on one TP
// rank, their compute in block-equivalents) and which (chunk, micro-batch) pairs are in
// flight on it at the start of the first backward under 1F1B, interleaved 1F1B or GPipe.
// Shared by the memory model and the step-time simulator.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/layout.h"
#include "core/model_spec.h"

namespace loom::sim {

struct StageContents {
  int64_t blocks = 0;
  bool has_embedding = false;
  bool has_lm_head = false;   // final norm + output layer + loss
  int64_t params = 0;         // on one TP rank, before ZeRO sharding
  int64_t tied_copy_params = 0;  // of `params`: the last stage's copy of a tied embedding
  int64_t largest_unit_params = 0;  // the biggest block / embedding / head (ZeRO-3 gather unit)
  double work_block_equivalents = 0;  // forward FLOPs relative to one block
};

StageContents stage_contents(const core::ModelSpec& model, const core::Layout& layout,
                             int64_t stage);
// What the stage holds, for reports: "embedding + blocks 0-4", "blocks 65-69 + LM head + loss".
std::string describe_stage(const core::Layout& layout, int64_t stage);

// Forward FLOPs of the LM head (+ loss) relative to one transformer block.
double lm_head_block_equivalents(const core::ModelSpec& model, int64_t seq);

// One entry per micro-batch whose activations the stage holds at its peak, naming the
// (virtual) chunk the activations belong to: the moment of the stage's schedule where the sum of
// `weight(chunk)` over the micro-batches in flight is largest (the first such; weight nullptr:
// every micro-batch counts 1).
//  1F1B:        min(pp - stage, m) micro-batches (Narayanan et al. 2021, Sec. 2.2.1).
//  Interleaved: Megatron's warm-up of (pp - stage - 1) * 2 + (vpp - 1) * pp forwards, plus
//               the one in progress (Korthikanti et al. 2022, eq. 5 for stage 0); with chunks of
//               unequal size a later moment can hold more bytes (more micro-batches of the
//               bigger chunk), which a weight by the chunk's bytes finds.
//  GPipe:       all m micro-batches.
std::vector<int64_t> inflight_chunks(const core::Layout& layout, int64_t stage,
                                     const std::function<double(int64_t)>& weight = nullptr);

}  // namespace loom::sim
