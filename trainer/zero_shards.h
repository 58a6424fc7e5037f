// ZeRO-2 and ZeRO-3 by unit (Rajbhandari et al. 2020, Sec. 5; DeepSpeed stages 2 and 3, PyTorch
// FSDP): a unit is the embedding, one transformer block or the head (Transformer's units). Every
// data-parallel rank keeps the Adam moments and the gradients of only its 1 / dp share of each
// unit; after a unit's backward its gradients are reduce-scattered into the shares at once, so
// the full gradients exist for one unit at a time, never for the model.
// - ZeRO-2 (stage 2): every rank keeps the whole weights; a step updates the rank's share of
//   each unit in place and all-gathers the unit's weights again.
// - ZeRO-3 (stage 3): only the share of the weights too; a unit's weights are all-gathered when
//   the model reaches it, in the forward and again in the backward, and freed when it is done.
// Each unit is padded with zeros to a multiple of dp so that the shares are equal (padding stays
// zero under AdamW). The ParamSource the parallel trainer gives its Transformer when the layout
// says zero 2 or 3 (pp 1). Tested in tests/trainer/parallel_trainer_test.cc (DP2 / DP4 ZeRO-2
// and 3, TP2xDP2 ZeRO-3 against the single-rank run; the bytes each stage keeps).
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "comm/communicator.h"
#include "core/status.h"
#include "trainer/optimizer.h"
#include "trainer/transformer.h"

namespace loom::train {

class ZeroShards final : public ParamSource<float> {
 public:
  // The units of `model` (kept for its unit bounds and layout) sharded over `dp` (kept);
  // `stage` 2 or 3.
  ZeroShards(const Transformer<float>& model, const OptimizerConfig& cfg, comm::Communicator* dp,
             int stage);

  core::Result<const float*> acquire(int unit) override;
  core::Result<float*> grads(int unit) override;
  core::Status release(int unit) override;

  int stage() const { return stage_; }
  void zero_grads();
  // Sum of squares of this rank's gradient shares, over the parts of them inside `ranges` of the
  // model's flat buffer (the tensors the gradient norm counts).
  double grad_sum_of_squares(const std::vector<std::pair<int64_t, int64_t>>& ranges) const;
  // One AdamW step on every share (gradients scaled by `coefficient`, the clipping factor); under
  // ZeRO-2 the updated weights are all-gathered (a collective over dp).
  core::Status update(double lr, double coefficient);

  enum class What { kParams, kExpAvg, kExpAvgSq };
  // The model's whole flat buffer of `what`, gathered from the shares (a collective over dp).
  core::Status gather(What what, std::vector<float>* flat);
  // Takes this rank's shares (and under ZeRO-2 the whole weights) from whole flat buffers.
  void scatter(const float* params, const float* exp_avg, const float* exp_avg_sq);
  int64_t updates() const { return units_.front().optim->updates(); }
  void set_updates(int64_t n);
  // Bytes kept for the whole run (weight shares or, under ZeRO-2, the whole weights; gradient
  // shares, moments, reduce-scatter staging) and the most that gathered units (ZeRO-3) and
  // unsharded unit gradients held at once.
  int64_t state_bytes() const;
  int64_t gathered_high_water_bytes() const { return gathered_high_water_bytes_; }

 private:
  struct Unit {
    int64_t begin = 0, end = 0, per = 0;  // the unit in the flat buffer; elements per share
    std::vector<float> params, grads;     // this rank's share (ZeRO-2: params stays empty)
    std::unique_ptr<AdamW> optim;         // the share's moments
    int refs = 0;
    // ZeRO-3: while acquired, the gathered unit; ZeRO-2: always, the whole unit (padded).
    std::vector<float> full;
    std::vector<float> full_grads;        // while acquired in a backward: the unit's gradients
  };
  float* share_params(Unit& unit);
  void track_gathered();

  comm::Communicator* dp_;
  int stage_;
  std::vector<Unit> units_;
  std::vector<float> staging_;
  int64_t gathered_high_water_bytes_ = 0;
};

}  // namespace loom::train
