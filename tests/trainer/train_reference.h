// What the parallel trainers' equivalence tests compare against: a single-process training
// run written here (the iteration of trainer.cc: one Transformer, gradients accumulated over the
// global batch's micro-batches, global-norm clipping, AdamW), its initial weights and its
// batches (a learnable affine-rule token source). Used by parallel_trainer_test.cc.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "trainer/optimizer.h"
#include "trainer/param_layout.h"
#include "trainer/transformer.h"

namespace loom::train::testing {

constexpr int64_t kMbs = 2, kSeq = 32, kMicro = 8, kSteps = 20;

inline std::vector<float> init_params(const ParamLayout& layout, int64_t layers, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<float> w(layout.total());
  const double residual = 0.02 / std::sqrt(2.0 * double(layers));
  for (const auto& p : layout.params()) {
    for (int64_t i = p.offset; i < p.offset + p.size; ++i) {
      switch (p.init) {
        case InitKind::kNormal: w[i] = float(0.02 * normal(rng)); break;
        case InitKind::kNormalResidual: w[i] = float(residual * normal(rng)); break;
        case InitKind::kOnes: w[i] = 1.f; break;
        case InitKind::kZeros: w[i] = 0.f; break;
      }
    }
  }
  return w;
}

// Each token follows the previous by a fixed affine rule 80% of the time: learnable.
inline std::vector<std::vector<int32_t>> step_batches(int64_t vocab, int64_t step) {
  std::vector<std::vector<int32_t>> out;
  for (int64_t m = 0; m < kMicro; ++m) {
    std::mt19937_64 rng(1000 * step + m);
    std::vector<int32_t> t(kMbs * (kSeq + 1));
    for (int64_t r = 0; r < kMbs; ++r) {
      int32_t prev = static_cast<int32_t>(rng() % vocab);
      for (int64_t i = 0; i <= kSeq; ++i) {
        t[r * (kSeq + 1) + i] = prev;
        prev = rng() % 10 < 8 ? static_cast<int32_t>((prev * 7 + 3) % vocab)
                              : static_cast<int32_t>(rng() % vocab);
      }
    }
    out.push_back(std::move(t));
  }
  return out;
}

inline OptimizerConfig optimizer() {
  OptimizerConfig c;
  c.lr = 3e-3;
  c.warmup_steps = 3;
  c.decay_steps = kSteps;
  return c;
}

struct TrainRun {
  std::vector<double> losses;
  std::vector<float> params;
};

inline TrainRun single_rank(const core::ModelSpec& spec, const std::vector<float>& init,
                            int64_t steps = kSteps) {
  const OptimizerConfig cfg = optimizer();
  Transformer<float> model(spec, core::Recompute::kNone);
  AdamW opt(model.layout(), cfg);
  TrainRun run;
  run.params = init;
  std::vector<float> grads(init.size());
  const double tokens = double(kMicro * kMbs * kSeq);
  for (int64_t step = 1; step <= steps; ++step) {
    std::fill(grads.begin(), grads.end(), 0.f);
    double sum = 0;
    for (const auto& b : step_batches(spec.vocab_size, step))
      sum += model.forward_backward(run.params.data(), grads.data(), b.data(), kMbs, kSeq,
                                    float(1.0 / tokens));
    const double norm = AdamW::grad_norm(grads.data(), int64_t(grads.size()));
    const double coef = cfg.clip_grad > 0 && norm > cfg.clip_grad ? cfg.clip_grad / (norm + 1e-6) : 1.0;
    opt.update(run.params.data(), grads.data(), learning_rate(cfg, step), coef);
    run.losses.push_back(sum / tokens);
  }
  return run;
}

}  // namespace loom::train::testing
