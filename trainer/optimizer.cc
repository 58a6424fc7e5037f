// AdamW and the learning-rate schedule: see optimizer.h.
#include "trainer/optimizer.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "kernels/cpu/numerics.h"

namespace loom::train {

double learning_rate(const OptimizerConfig& cfg, int64_t step) {
  const double peak = cfg.lr;
  const double floor = cfg.lr * cfg.min_lr_ratio;
  if (cfg.warmup_steps > 0 && step <= cfg.warmup_steps) {
    return peak * static_cast<double>(step) / static_cast<double>(cfg.warmup_steps);
  }
  const int64_t decay = std::max(cfg.decay_steps, cfg.warmup_steps + 1);
  if (step >= decay) return floor;
  const double progress = static_cast<double>(step - cfg.warmup_steps) /
                          static_cast<double>(decay - cfg.warmup_steps);
  return floor + 0.5 * (peak - floor) * (1.0 + std::cos(std::numbers::pi * progress));
}

kernels::AdamWStep adamw_step(const OptimizerConfig& cfg, double lr, int64_t update) {
  kernels::AdamWStep st;
  st.lr = static_cast<float>(lr);
  st.beta1 = static_cast<float>(cfg.beta1);
  st.beta2 = static_cast<float>(cfg.beta2);
  st.eps = static_cast<float>(cfg.eps);
  st.weight_decay = 0.f;
  st.bias_correction1 = static_cast<float>(1.0 - std::pow(cfg.beta1, update));
  st.bias_correction2 = static_cast<float>(1.0 - std::pow(cfg.beta2, update));
  return st;
}

std::vector<DecayRange> decay_ranges(const ParamLayout& layout) {
  std::vector<DecayRange> ranges;
  for (const auto& p : layout.params()) {
    if (!ranges.empty() && ranges.back().decay == p.weight_decay && ranges.back().end == p.offset) {
      ranges.back().end = p.offset + p.size;
    } else {
      ranges.push_back({p.offset, p.offset + p.size, p.weight_decay});
    }
  }
  return ranges;
}

AdamW::AdamW(const ParamLayout& layout, const OptimizerConfig& cfg)
    : cfg_(cfg), ranges_(decay_ranges(layout)) {
  m_.assign(layout.total(), 0.f);
  v_.assign(layout.total(), 0.f);
}

AdamW::AdamW(const ParamLayout& layout, const OptimizerConfig& cfg, int64_t begin, int64_t end)
    : cfg_(cfg) {
  for (const DecayRange& r : decay_ranges(layout)) {
    const int64_t b = std::max(r.begin, begin), e = std::min(r.end, end);
    if (b < e) ranges_.push_back({b - begin, e - begin, r.decay});
  }
  m_.assign(end - begin, 0.f);
  v_.assign(end - begin, 0.f);
}

double AdamW::grad_norm(const float* grads, int64_t count) {
  return std::sqrt(grad_sum_of_squares(grads, count));
}

double AdamW::grad_sum_of_squares(const float* grads, int64_t count) {
  // Fixed-size blocks summed in order: the same result for any thread count.
  constexpr int64_t kBlock = 1 << 16;
  const int64_t blocks = (count + kBlock - 1) / kBlock;
  std::vector<double> partial(blocks, 0.0);
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < blocks; ++b) {
    double s = 0.0;
    const int64_t end = std::min(count, (b + 1) * kBlock);
    for (int64_t i = b * kBlock; i < end; ++i) s += static_cast<double>(grads[i]) * grads[i];
    partial[b] = s;
  }
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

void AdamW::update(float* params, const float* grads, double lr, double grad_scale) {
  ++updates_;
  kernels::AdamWStep st = adamw_step(cfg_, lr, updates_);
  const float scale = static_cast<float>(grad_scale);
  for (const DecayRange& r : ranges_) {
    st.weight_decay = r.decay ? static_cast<float>(cfg_.weight_decay) : 0.f;
#pragma omp parallel for schedule(static)
    for (int64_t i = r.begin; i < r.end; ++i) {
      kernels::adamw_update(params[i], m_[i], v_[i], grads[i] * scale, st);
    }
  }
}

}  // namespace loom::train
