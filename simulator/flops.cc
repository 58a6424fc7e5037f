// FLOP conventions: see flops.h.
#include "simulator/flops.h"

namespace loom::sim {

FlopsPerToken flops_per_token(const core::ModelSpec& m, int64_t seq, core::Recompute recompute) {
  const double layers = static_cast<double>(m.num_layers);
  const double attention_fwd = 4.0 * static_cast<double>(seq) * static_cast<double>(m.q_dim());
  const double matmul = static_cast<double>(m.matmul_params());
  const double block_matmul =
      static_cast<double>(m.matmul_params() - m.vocab_size * m.hidden_size) / layers;
  FlopsPerToken f;
  f.model = 6.0 * matmul + 3.0 * layers * attention_fwd;
  f.hardware = f.model;
  if (recompute == core::Recompute::kFull) {
    f.hardware += layers * (2.0 * block_matmul + attention_fwd);
  } else if (recompute == core::Recompute::kSelective) {
    f.hardware += layers * attention_fwd;
  }
  return f;
}

FlopsPerToken flops_per_iteration(const core::ModelSpec& m, const core::Layout& l) {
  const FlopsPerToken per_token = flops_per_token(m, l.seq, l.recompute);
  const double tokens = static_cast<double>(l.gbs) * static_cast<double>(l.seq);
  return {per_token.model * tokens, per_token.hardware * tokens};
}

double megatron_eq3_flops(int64_t batch, int64_t seq, int64_t layers, int64_t hidden,
                          int64_t vocab) {
  const double B = static_cast<double>(batch), s = static_cast<double>(seq);
  const double l = static_cast<double>(layers), h = static_cast<double>(hidden);
  const double V = static_cast<double>(vocab);
  return 96.0 * B * s * l * h * h * (1.0 + s / (6.0 * h) + V / (16.0 * l * h));
}

}  // namespace loom::sim
