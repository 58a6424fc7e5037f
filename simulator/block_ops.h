// The operations of one training step on one pipeline stage and one tensor-parallel rank, per
// micro-batch: every GEMM with its shape, attention, element-wise kernels with the bytes they
// move, and the tensor-parallel collectives with their sizes; forward, backward (data and
// weight gradients) and recompute. The compute and communication models price these lists;
// the FLOPs they sum to are tested against flops.h.
#pragma once

#include <string>
#include <vector>

#include "core/layout.h"
#include "core/model_spec.h"

namespace loom::sim {

enum class OpKind { kGemm, kAttention, kElementwise, kTpAllReduce, kTpAllGather, kTpReduceScatter };

struct Op {
  const char* name;  // "qkv", "attention", "mlp_in.dgrad", ... (static strings)
  OpKind kind;
  // kGemm: C[m, n] = A[m, k] B[k, n], `batch` independent GEMMs (attention without flash).
  double m = 0, n = 0, k = 0, batch = 1;
  double flops = 0;  // GEMM and attention FLOPs (causal attention counts the work done)
  double bytes = 0;  // element-wise: HBM bytes read + written; collectives: message bytes
  bool backward = false;   // attention: forward or backward kernel
};

struct OpOptions {
  bool flash_attention = true;
  bool dropout = false;
  // Selective recompute reruns the flash-attention forward before the backward (the framework
  // drops the attention output and log-sum-exp: FrameworkTraits::selective_drops_attention_output).
  bool selective_recomputes_attention = false;
};

// Forward of one block (what recompute repeats), and its backward.
std::vector<Op> block_forward_ops(const core::ModelSpec& model, const core::Layout& layout,
                                  const OpOptions& options);
std::vector<Op> block_backward_ops(const core::ModelSpec& model, const core::Layout& layout,
                                   const OpOptions& options);
// What recompute adds before a block's backward: the whole forward (full) or the attention
// core (selective; with flash attention the kernel recomputes internally, so nothing, unless
// the framework dropped the attention output: selective_recomputes_attention).
std::vector<Op> block_recompute_ops(const core::ModelSpec& model, const core::Layout& layout,
                                    const OpOptions& options);

// Embedding (first stage) and LM head + loss (last stage), forward and backward.
std::vector<Op> embedding_ops(const core::ModelSpec& model, const core::Layout& layout, bool backward);
std::vector<Op> lm_head_ops(const core::ModelSpec& model, const core::Layout& layout, bool backward);

double total_flops(const std::vector<Op>& ops);

}  // namespace loom::sim
