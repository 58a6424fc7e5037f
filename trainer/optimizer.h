// AdamW over flat fp32 buffers (Loshchilov & Hutter 2019: decoupled weight decay, none on
// biases and norm weights), global-norm gradient clipping and the learning-rate schedule of
// Megatron-LM / LLaMA / Qwen: linear warm-up, then cosine decay to a floor (10% of peak by
// default). Defaults follow LLaMA and Qwen: beta (0.9, 0.95), eps 1e-8, clip 1.0, decay 0.1.
// Tested in tests/trainer/optimizer_test.cc against hand computations.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/cpu/numerics.h"
#include "trainer/param_layout.h"

namespace loom::train {

struct OptimizerConfig {
  double lr = 3e-4;              // peak learning rate
  double min_lr_ratio = 0.1;     // floor of the cosine decay, as a fraction of the peak
  int64_t warmup_steps = 0;      // linear warm-up from 0 (Megatron: lr * step / warmup)
  int64_t decay_steps = 0;       // steps to reach the floor (0: the run's length)
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  double clip_grad = 1.0;        // global L2 norm; 0 disables clipping
};

// Learning rate of the 1-based iteration `step`.
double learning_rate(const OptimizerConfig& cfg, int64_t step);

// AdamW's hyper-parameters for the 1-based update `update` at learning rate `lr` (bias
// corrections 1 - beta^t); weight_decay is left 0 for the caller to set per range. Shared by
// the CPU optimizer and the CUDA trainer so both step alike.
kernels::AdamWStep adamw_step(const OptimizerConfig& cfg, double lr, int64_t update);

// Contiguous runs of parameters sharing a weight-decay setting, in layout order.
struct DecayRange {
  int64_t begin, end;
  bool decay;
};
std::vector<DecayRange> decay_ranges(const ParamLayout& layout);

class AdamW {
 public:
  AdamW(const ParamLayout& layout, const OptimizerConfig& cfg);
  // The optimizer of one shard [begin, end) of the flat parameters (ZeRO-1/2/3: each data-parallel
  // rank keeps the moments of its shard only). update() then takes the shard's parameters and
  // gradients (pointers to element `begin`); elements past the layout's end (padding to equal
  // shards) are left alone. The arithmetic per element is the full optimizer's.
  AdamW(const ParamLayout& layout, const OptimizerConfig& cfg, int64_t begin, int64_t end);

  // Global L2 norm of the gradients, accumulated in double in a fixed order (deterministic).
  static double grad_norm(const float* grads, int64_t count);
  // The sum of squares under grad_norm (a shard's part of the global norm).
  static double grad_sum_of_squares(const float* grads, int64_t count);

  // One update with learning rate `lr`; gradients are multiplied by `grad_scale` first (the
  // clipping coefficient). Increments the bias-correction step.
  void update(float* params, const float* grads, double lr, double grad_scale);

  const OptimizerConfig& config() const { return cfg_; }
  int64_t updates() const { return updates_; }
  void set_updates(int64_t n) { updates_ = n; }
  std::vector<float>& exp_avg() { return m_; }       // first moment, flat
  std::vector<float>& exp_avg_sq() { return v_; }    // second moment, flat

 private:
  OptimizerConfig cfg_;
  std::vector<DecayRange> ranges_;
  std::vector<float> m_, v_;
  int64_t updates_ = 0;
};

}  // namespace loom::train
