// Activation memory of one transformer block per micro-batch, generalising Korthikanti et al.
// 2022 ("Reducing Activation Recomputation in Large Transformer Models", Table 2) from GPT
// (GeLU 4h, MHA, dropout) to GQA, SwiGLU, any FFN width, flash attention and the storing
// habits of each framework. With GPT-3-style settings it reduces exactly to the paper's
// sbh(34 + 5as/h) (tested in tests/sim/activation_memory_test.cc).
#pragma once

#include "core/layout.h"
#include "core/model_spec.h"
#include "simulator/framework.h"

namespace loom::sim {

struct ActivationOptions {
  bool flash_attention = true;
  bool dropout = false;  // hidden and attention dropout (1-byte masks)
  double swiglu_saved_f = 3;
  double attention_extra_kv_copies = 0;
  double backward_h_buffers = 2;  // FrameworkTraits' activation-gradient widths
  double backward_q_buffers = 0;
  double backward_kv_buffers = 0;
  double backward_extra_f_buffers = 0;
  bool selective_drops_attention_output = false;

  static ActivationOptions from_framework(const FrameworkTraits& t);
};

// Bytes per micro-batch on one TP rank.
struct BlockActivations {
  double full_bytes = 0;        // everything backward needs (no recompute)
  double selective_bytes = 0;   // core attention (scores, softmax, dropout) recomputed
  double checkpoint_bytes = 0;  // full recompute: only the block input is kept
  double grad_working_bytes = 0;  // activation gradients alive while one block runs backward

  double stored(core::Recompute r) const;
  // Transient memory while one block runs backward: gradients, plus the rematerialised
  // activations under full recompute and the recomputed scores under selective recompute.
  double backward_working(core::Recompute r) const;
};

BlockActivations block_activations(const core::ModelSpec& model, const core::Layout& layout,
                                   const ActivationOptions& options);

// Bytes per element of activations for the layout's precision.
double activation_bytes(core::Precision p);

}  // namespace loom::sim
