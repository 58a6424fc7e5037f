// FLOP conventions, written down once and used everywhere (simulator, validation, planner):
//
//   model FLOPs per token    = 6 x N_matmul + 12 x L x s x q_dim
//     N_matmul: every GEMM weight including the LM head (tied or not); the second term is the
//     attention scores and the weighted sum over values, counted for the full s x s matrix
//     (as Megatron, PaLM and nanotron count it), forward + backward (3 x 4 s q_dim per layer).
//   hardware FLOPs per token = model FLOPs + what recompute adds: full recompute re-runs each
//     block's forward (2 x N_block + 4 s q_dim per layer), selective re-runs attention
//     (4 s q_dim per layer). The LM head is never recomputed.
//
// For a GPT block (MHA, GeLU 4h, tied embeddings) with full recompute, hardware FLOPs per
// iteration equal Megatron's eq. (3), 96 B s l h^2 (1 + s/6h + V/16lh) (Narayanan et al. 2021),
// and model FLOPs equal Korthikanti et al.'s 72 B s l h^2 (1 + s/6h + V/12hl); both identities
// are tested in tests/sim/flops_test.cc. (Korthikanti's selective-recompute hardware FLOPs,
// 1 + s/3h, count the attention term twice; Loom adds only the recomputed forward.)
// MFU = model FLOP/s per GPU / the profile's dense peak.
#pragma once

#include "core/layout.h"
#include "core/model_spec.h"

namespace loom::sim {

struct FlopsPerToken {
  double model = 0;     // 6 N + attention, forward + backward
  double hardware = 0;  // model + recompute
};

FlopsPerToken flops_per_token(const core::ModelSpec& model, int64_t seq, core::Recompute recompute);

// FLOPs of one iteration (gbs x seq tokens).
FlopsPerToken flops_per_iteration(const core::ModelSpec& model, const core::Layout& layout);

// Megatron-LM eq. (3), for comparison with numbers published in that convention.
double megatron_eq3_flops(int64_t batch, int64_t seq, int64_t layers, int64_t hidden, int64_t vocab);

}  // namespace loom::sim
