// ZeRO-3 (Rajbhandari et al. 2020, Sec. 5.3; DeepSpeed stage 3 / PyTorch FSDP): every
// data-parallel rank keeps only its 1 / dp share of each unit's parameters (a unit is the
// embedding, one transformer block, or the head: Transformer's units), with the gradients and
// Adam moments of that share. A unit's parameters are all-gathered when the model reaches it,
// in the forward and again in the backward, and freed when it is done; after a backward the
// unit's gradients are reduce-scattered into the shares at once, so neither the full weights nor
// the full gradients ever exist on a rank, only one unit's at a time. Each unit is padded with
// zeros to a multiple of dp so that the shares are equal (padding stays zero under AdamW).
// The ParamSource the parallel trainer gives its Transformer when the layout says zero 3.
// Tested in tests/trainer/parallel_trainer_test.cc (DP2 / DP4 ZeRO-3, TP2xDP2 ZeRO-3 against the
// single-rank run).
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

class Zero3Shards final : public ParamSource<float> {
 public:
  // The units of `model` (kept for its unit bounds and layout) sharded over `dp` (kept).
  Zero3Shards(const Transformer<float>& model, const OptimizerConfig& cfg, comm::Communicator* dp);

  core::Result<const float*> acquire(int unit) override;
  core::Result<float*> grads(int unit) override;
  core::Status release(int unit) override;

  void zero_grads();
  // Sum of squares of this rank's gradient shares, over the parts of them inside `ranges` of the
  // model's flat buffer (the tensors the gradient norm counts).
  double grad_sum_of_squares(const std::vector<std::pair<int64_t, int64_t>>& ranges) const;
  // One AdamW step on every share (gradients scaled by `coefficient`, the clipping factor).
  void update(double lr, double coefficient);

  enum class What { kParams, kExpAvg, kExpAvgSq };
  // The model's whole flat buffer of `what`, gathered from the shares (a collective over dp).
  core::Status gather(What what, std::vector<float>* flat);
  // Takes this rank's shares from whole flat buffers (params, exp_avg, exp_avg_sq).
  void scatter(const float* params, const float* exp_avg, const float* exp_avg_sq);
  int64_t updates() const { return units_.front().optim->updates(); }
  void set_updates(int64_t n);
  // Bytes of the shares (weights, gradients, moments, reduce-scatter staging) and the most that
  // gathered units held at once.
  int64_t state_bytes() const;
  int64_t gathered_high_water_bytes() const { return gathered_high_water_bytes_; }

 private:
  struct Unit {
    int64_t begin = 0, end = 0, per = 0;  // the unit in the flat buffer; elements per share
    std::vector<float> params, grads;     // this rank's share
    std::unique_ptr<AdamW> optim;         // the share's moments
    int refs = 0;
    std::vector<float> full, full_grads;  // while acquired: the gathered unit, its gradients
  };
  void track_gathered();

  comm::Communicator* dp_;
  std::vector<Unit> units_;
  std::vector<float> staging_;
  int64_t gathered_high_water_bytes_ = 0;
};

}  // namespace loom::train
