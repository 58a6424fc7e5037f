// ParallelTrainer: one rank of a tensor x pipeline x data-parallel training run, executing a
// resolved core::Layout as the planner writes it (issue 7). The rank holds the model chunks of
// its pipeline rank (virtual stages chunk * pp + pp_rank, blocks as layout.partition says, the
// embedding with virtual stage 0 and the final norm + LM head + loss with the last), each cut
// for its tensor-parallel rank (Transformer with a ModelShard; with sequence parallelism the
// residual stream and the pipeline's messages are split over the tokens); its flat parameters are the
// chunks' tensors one after another. An iteration:
//   1. the rank's contiguous share of the global batch's micro-batches goes through the
//      pipeline in the layout's schedule (pipeline_schedule.h); activations and their gradients
//      travel between pipeline ranks as point-to-point messages tagged with (direction, virtual
//      stage, micro-batch), so that a rank may receive them in any order;
//   2. with tied embeddings over several stages, the first and last stage add their gradients of
//      the shared matrix (Megatron's embedding group);
//   3. data parallelism over the rank's flat buffer, padded with zeros to equal shards:
//      ZeRO-0 all-reduces the gradients and every rank runs the full AdamW (DDP); ZeRO-1
//      reduce-scatters them
//      in place and each rank updates its 1 / dp shard with that shard's moments, then the
//      weights are all-gathered (Megatron's distributed optimizer); ZeRO-2 reduce-scatters
//      each unit's gradients (embedding, block, head) as soon as its backward ends, so the
//      full gradients are never held (DeepSpeed stage 2), and ZeRO-3 also shards the weights by
//      unit and gathers each unit where it runs (zero_shards.h); both run without pipelining
//      (as DeepSpeed, which allows only ZeRO-1 with pipelines);
//   4. the global gradient norm counts each tensor once (copies on tp rank > 0 and the tied
//      copy are skipped) and is summed over the data-, tensor- and pipeline-parallel groups.
// The full model maps onto the shards by name and slice (ParamInfo::split_dim), so weights and
// Adam moments move between any two layouts (full_state / restore): checkpoints reshard.
// Tested in tests/trainer/parallel_trainer_test.cc against the single-rank run on threads.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "comm/process_groups.h"
#include "core/layout.h"
#include "core/model_spec.h"
#include "core/status.h"
#include "trainer/optimizer.h"
#include "trainer/transformer.h"
#include "trainer/zero_shards.h"

namespace loom::train {

class ParallelTrainer {
 public:
  // layout: resolved (core::resolve_layout) for `spec`, tp * pp * dp == the world the groups
  // were made from; groups: this rank's (kept, not owned); init: the full fp32 weights in
  // ParamLayout(spec) order, the same on every rank. Errors name the layout field that this
  // trainer does not run (ZeRO-2/3 with pp > 1, sequence parallelism that does not split).
  static core::Result<std::unique_ptr<ParallelTrainer>> create(const core::ModelSpec& spec,
                                                               const core::Layout& layout,
                                                               const OptimizerConfig& optim,
                                                               const comm::ProcessGroups* groups,
                                                               const std::vector<float>& init);

  // The part of the model that chunk `chunk` of pipeline rank pp_rank holds, cut for tp_rank:
  // blocks as layout.partition gives virtual stage chunk * pp + pp_rank, the embedding with
  // virtual stage 0, the head with the last.
  static ModelShard chunk_shard(const core::Layout& layout, int64_t tp_rank, int64_t pp_rank,
                                int64_t chunk);

  // The layout fields this trainer does not run (ZeRO-2/3 with pp > 1, vpp > 1 without pp,
  // sequence parallelism without tp > 1 or with tokens that do not split over tp), each
  // refused by name.
  static core::Status check_layout(const core::Layout& layout);

  struct Step {
    double loss = 0;       // mean token loss over the global batch
    double grad_norm = 0;  // global, before clipping
  };
  // micro_batches: all gbs / mbs micro-batches of the global batch, each [mbs, seq + 1] tokens,
  // the same list on every rank; lr: this iteration's learning rate.
  core::Result<Step> train_step(const std::vector<std::vector<int32_t>>& micro_batches,
                                int64_t mbs, int64_t seq, double lr);
  // train_step in two halves, so that a spike guard can judge the iteration before its update:
  // compute_step leaves the reduced gradients in place and returns the loss and the global
  // gradient norm (the same on every rank); apply_step runs the optimizer (clipping by that
  // norm) and, under ZeRO, gathers the weights. An iteration whose update is skipped simply
  // never calls apply_step. gradient_scale multiplies the gradients as applied (a debug
  // injection of a loss spike scales them, and grad_norm with them).
  core::Result<Step> compute_step(const std::vector<std::vector<int32_t>>& micro_batches,
                                  int64_t mbs, int64_t seq);
  core::Status apply_step(double lr, double grad_norm, double gradient_scale = 1.0);
  // Mean token loss of validation micro-batches (each mbs x (seq + 1) tokens), forward only
  // through the pipeline; the data-parallel ranks share the batches (i % dp), the result is the
  // same on every rank.
  core::Result<double> evaluate(const std::vector<std::vector<int32_t>>& batches, int64_t mbs,
                                int64_t seq);

  // The full model's weights and Adam moments in ParamLayout(spec) order, assembled from every
  // rank's shards (a collective over all ranks: each gets them).
  core::Status full_state(std::vector<float>* params, std::vector<float>* exp_avg,
                          std::vector<float>* exp_avg_sq);
  // This rank's model-parallel shard of the weights and Adam moments (rank_layout() order),
  // gathered over data parallelism (a collective over the data-parallel group).
  core::Status shard_state(std::vector<float>* params, std::vector<float>* exp_avg,
                           std::vector<float>* exp_avg_sq);
  const ParamLayout& rank_layout() const { return rank_layout_; }
  // Takes this rank's shards of a full state (as a checkpoint of any layout holds it).
  core::Status restore(const std::vector<float>& params, const std::vector<float>& exp_avg,
                       const std::vector<float>& exp_avg_sq, int64_t updates);
  int64_t updates() const { return zero_ ? zero_->updates() : optim_->updates(); }

  // What the rank did in its last train_step, timed from the step's start, when tracing is on:
  // the names of `loom simulate --trace` (simulator/step_time.cc), so that measured and
  // simulated iterations open side by side in Perfetto.
  enum class Event { kForward, kBackward, kP2pForward, kP2pBackward, kDpReduction, kOptimizer };
  struct TimedEvent {
    Event kind = Event::kForward;
    int64_t microbatch = 0, chunk = 0;  // chunk: the virtual stage
    double start_s = 0, duration_s = 0;
  };
  void set_tracing(bool on) { tracing_ = on; }
  const std::vector<TimedEvent>& last_step_events() const { return events_; }
  // Bytes of training state on this rank (weights, gradients, Adam moments of its shard, the
  // most that ZeRO-2/3's unsharded unit gradients and gathered units held at once) and the
  // high-water bytes of its chunks' activations, scratch and pipeline message buffers.
  int64_t state_bytes() const;
  int64_t workspace_bytes() const;

 private:
  ParallelTrainer(const core::ModelSpec& spec, const core::Layout& layout,
                  const OptimizerConfig& optim, const comm::ProcessGroups* groups);
  core::Status run_pipeline(const std::vector<std::vector<int32_t>>& micro_batches, int64_t first,
                            int64_t count, int64_t mbs, int64_t seq, float grad_scale,
                            double* loss_sum);
  core::Status send_activation(bool forward, int64_t to_stage, int64_t microbatch,
                               const float* data);
  core::Status recv_activation(bool forward, int64_t stage, int64_t microbatch, float* data);
  core::Status sync_tied_embedding();
  // Copies between the full model (ParamLayout(spec) order) and this rank's flat buffer.
  void scatter_full(const std::vector<float>& full, float* local) const;
  core::Status gather_full(const float* local, std::vector<float>* full) const;

  core::ModelSpec spec_;
  core::Layout layout_;
  const comm::ProcessGroups* groups_;
  OptimizerConfig optim_cfg_;
  std::vector<std::unique_ptr<Transformer<float>>> chunks_;
  std::vector<int64_t> chunk_offset_;  // each chunk's first element in the flat buffer
  ParamLayout rank_layout_, full_layout_;
  int64_t count_ = 0, padded_ = 0, shard_begin_ = 0, shard_end_ = 0;
  std::vector<std::pair<int64_t, int64_t>> unique_;  // ranges counted in the gradient norm
  int64_t tied_offset_ = -1;  // the shared embedding's offset on the first / last stage
  int64_t tied_size_ = 0;
  std::vector<float> params_, grads_;  // ZeRO 0-1 (ZeRO-1: grads_ starts with the reduced shard)
  std::unique_ptr<AdamW> optim_;       // ZeRO 0-1: the moments of this rank's shard
  std::unique_ptr<ZeroShards> zero_;   // ZeRO 2-3: the shares of gradients, moments (weights)
  // This rank's rows of a stage boundary [mbs x seq, h] (N / tp of them under sequence
  // parallelism): one pipeline message.
  int64_t boundary_floats(int64_t mbs, int64_t seq) const;
  int64_t message_floats_ = 0;
  int64_t p2p_buffer_bytes_ = 0;  // the pipeline's send / receive buffers
  bool tracing_ = false;
  std::chrono::steady_clock::time_point step_start_;
  std::vector<TimedEvent> events_;
  // Records an event that began at `since` and ends now (when tracing).
  void record(Event kind, int64_t microbatch, int64_t chunk,
              std::chrono::steady_clock::time_point since);
  std::map<std::tuple<bool, int64_t, int64_t>, std::vector<float>> stash_;  // early messages
};

}  // namespace loom::train
