// Data-parallel training over a communicator with ZeRO stages 0, 1 and 2: the data-parallel
// part of the parallel trainer (issue 7; tensor and pipeline parallelism build on it). Each rank
// of the group holds the whole model and runs its contiguous share of the global batch's
// micro-batches (rank r of dp takes micro-batches [r M / dp, (r + 1) M / dp), as Megatron-LM
// gives each rank gbs / dp consecutive sequences); then the ranks agree on one update:
//   ZeRO-0  the gradients are all-reduced and every rank runs the full AdamW (replicated
//           moments), as DDP does;
//   ZeRO-1  the gradients, accumulated over the rank's micro-batches, are reduce-scattered;
//           each rank updates its 1 / dp shard of the parameters with that shard's moments
//           (Megatron's distributed optimizer), then the parameters are all-gathered;
//   ZeRO-2  as ZeRO-1, but each micro-batch's gradients are reduce-scattered when its backward
//           ends and added into the rank's shard, so the full-size gradient buffer holds one
//           micro-batch's gradients at a time (DeepSpeed stage 2).
// The flat parameters are padded with zeros to a multiple of dp so that the shards are equal.
// The loss and the global gradient norm (the shards' sums of squares in double) are summed
// across ranks. Every sum across ranks is in rank order (comm/communicator.h), so all ranks hold
// the same bits and a run is deterministic; against the single-rank run the gradients are summed
// in another association (relative differences of ~1e-7 per step). Tested in
// tests/trainer/data_parallel_test.cc against a single-process reference.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "comm/communicator.h"
#include "core/layout.h"
#include "core/model_spec.h"
#include "core/status.h"
#include "trainer/optimizer.h"
#include "trainer/transformer.h"

namespace loom::train {

class DataParallelTrainer {
 public:
  // dp: this rank's data-parallel group (kept, not owned); init: the full fp32 weights in
  // ParamLayout(spec) order, the same on every rank. zero_stage: 0, 1 or 2 (an error names the
  // value and what is allowed).
  static core::Result<std::unique_ptr<DataParallelTrainer>> create(
      const core::ModelSpec& spec, core::Recompute recompute, const OptimizerConfig& optim,
      int zero_stage, comm::Communicator* dp, const std::vector<float>& init);

  struct Step {
    double loss = 0;       // mean token loss over the global batch
    double grad_norm = 0;  // global, before clipping
  };
  // micro_batches: all the global batch's micro-batches, each [mbs, seq + 1] tokens, the same
  // list on every rank (their count must divide by dp); lr: this iteration's learning rate.
  core::Result<Step> train_step(const std::vector<std::vector<int32_t>>& micro_batches,
                                int64_t mbs, int64_t seq, double lr);

  // The full parameters (every rank holds them after each step), without the padding.
  std::vector<float> params() const;
  // The full Adam moments, gathered from the shards (a collective: every rank calls it; every
  // rank gets them), and the update count: what a checkpoint holds.
  core::Status gather_moments(std::vector<float>* exp_avg, std::vector<float>* exp_avg_sq);
  int64_t updates() const { return optim_.updates(); }
  // Replaces the weights, this rank's shard of the moments and the update count from full
  // (unpadded) vectors, as a checkpoint written under any data-parallel layout holds them.
  core::Status restore(const std::vector<float>& params, const std::vector<float>& exp_avg,
                       const std::vector<float>& exp_avg_sq, int64_t updates);
  int zero_stage() const { return zero_; }
  // This rank's optimizer shard [begin, end) of the padded flat parameters (the whole padded
  // range for ZeRO-0).
  int64_t shard_begin() const { return shard_begin_; }
  int64_t shard_end() const { return shard_end_; }
  // Bytes of training state this rank holds: fp32 weights, the full-size gradient buffer, the
  // gradient shard (ZeRO-1/2 staging), the Adam moments of its shard.
  int64_t state_bytes() const;
  // High-water bytes of the model's activations and scratch on this rank.
  int64_t workspace_bytes() const { return model_.workspace_high_water_bytes(); }

 private:
  DataParallelTrainer(const core::ModelSpec& spec, core::Recompute recompute,
                      const OptimizerConfig& optim, int zero_stage, comm::Communicator* dp,
                      const std::vector<float>& init);

  Transformer<float> model_;
  comm::Communicator* dp_;
  int zero_;
  int64_t count_ = 0;   // parameters
  int64_t padded_ = 0;  // parameters rounded up to a multiple of dp
  int64_t shard_begin_ = 0, shard_end_ = 0;
  std::vector<float> params_, grads_, shard_grads_, staging_;
  OptimizerConfig optim_cfg_;
  AdamW optim_;
};

}  // namespace loom::train
