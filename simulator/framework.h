// Training frameworks differ in how they store gradients and optimizer state, which tensors
// their kernels save for backward, how their cross-entropy buffers the logits and how much
// their allocator reserves. Each difference is one named, documented trait here; the memory
// model (and later the step-time model) reads traits, never the framework's name.
#pragma once

#include <string>
#include <vector>

#include "core/layout.h"
#include "core/status.h"

namespace loom::sim {

enum class Framework {
  kMegatron, kMegatron2021, kMegatronDeepSpeed, kFsdp, kNanotron, kLoom, kLoomCpu
};

struct FrameworkTraits {
  Framework id;
  const char* name;
  const char* description;

  // --- Parameter-state bytes per parameter (mixed precision bf16/fp16) -------------------
  // Gradient bytes kept for every local parameter (the accumulation buffer DP reduces):
  // 4 = fp32 main grads, 2 = half-precision grads.
  double grad_bytes_bf16;
  double grad_bytes_fp16;
  // Half-precision param.grad tensors that live next to an fp32 accumulation buffer until
  // they are folded into it (nanotron's FP32GradientAccumulator, DeepSpeed's BF16_Optimizer).
  double half_grad_transient_bytes;
  // The fp32 master weights are the sharded parameters themselves (PyTorch FSDP keeps the
  // fp32 flat parameter sharded and gathers a low-precision copy), so there is no separate
  // half-precision weight copy outside ZeRO-3 gathers.
  bool fsdp_flat_params;
  // Bytes of optimizer-side fp32 copies besides master + Adam m, v (Megatron's fp16 path keeps
  // an fp32 copy of the gradients in the optimizer: its "20 bytes per parameter").
  double extra_optimizer_bytes_fp16;
  // Extra gradient bucket copy with ZeRO-0 and dp > 1 (torch DDP without
  // gradient_as_bucket_view keeps its own bucket buffers): bytes per parameter.
  double ddp_bucket_bytes;
  // Layers whose full parameters are gathered at once under ZeRO-3 (the current one plus
  // the prefetched next one), and the bytes per gathered parameter (2 for a bf16 gather;
  // FSDP under torch autocast gathers the fp32 parameter and autocast caches a bf16 copy: 6).
  int zero3_gathered_layers;
  double zero3_gather_bytes_per_param;
  // Bytes per parameter of the unsharded gradients of one layer before its reduce-scatter.
  double zero3_unsharded_grad_bytes;
  // Caps on those buffers in parameters (0 = whole layers): DeepSpeed gathers per submodule up
  // to stage3_max_live_parameters and reduces through a reduce_bucket_size bucket.
  double zero3_max_live_params;
  double zero3_reduce_bucket_params;
  // ZeRO-2 reduce-scatters each unit's gradients as soon as its backward ends (Loom's trainer):
  // one unit's unsharded gradients (zero3_unsharded_grad_bytes per parameter) at a time, instead
  // of the full gradients being reduced at the end.
  bool zero2_unit_gradients = false;
  // Bytes per parameter of the 1 / dp share of the largest unit that a unit's reduce-scatter
  // lands in before it is added to the gradient shard (ZeRO-2/3 by unit; 0: in place).
  double zero_staging_bytes_per_param = 0;

  // --- Activations --------------------------------------------------------------------------
  // f-wide tensors a SwiGLU MLP saves for backward, in units of (tokens x f/tp x act bytes):
  // 3 when fused (Megatron bias_swiglu: fc1 output [2f] + fc2 input [f]); 4 when the
  // gate/up buffer, silu output and product are all kept (eager PyTorch).
  double swiglu_saved_f;
  // h-wide tensors the attention block saves beyond Q, K, V, the output and the two
  // GEMM inputs (e.g. nanotron's concatenated K/V copy: 2 x kv width).
  double attention_extra_kv_copies;
  // Bytes per logit element alive at the cross-entropy peak (per micro-batch, on the stage
  // that computes the loss): Megatron keeps bf16 logits (2) and an fp32 softmax (4). Given for
  // half-precision training; fp32 training doubles it.
  double logits_bytes_per_element;
  // Logits computed at once: the fused cross-entropy walks the micro-batch's tokens in chunks
  // of at most this many logits (0: the whole micro-batch's logits at once).
  double logits_chunk_elements = 0;
  bool flash_attention;  // default attention kernel: no s^2 score matrix
  // Hidden and attention dropout on by default (Megatron-LM's 0.1 of 2020-22; today's LLM
  // pretraining configurations set it to 0): 1-byte masks and their kernels.
  bool dropout = false;
  // Activation gradients alive while one block runs backward, per token, in widths of the
  // residual stream h, the query q and the key/value kv, and of the MLP's f beyond the
  // gradient of its input GEMM's output (2f SwiGLU, f GeLU; always counted). Default: the
  // residual-stream gradient in and out (2 h).
  double backward_h_buffers = 2;
  double backward_q_buffers = 0;
  double backward_kv_buffers = 0;
  double backward_extra_f_buffers = 0;
  // Selective recompute drops each block's attention output and log-sum-exp and recomputes
  // them in backward into one shared buffer (Loom's CPU and CUDA trainers). Megatron's selective
  // recompute with flash attention keeps them (the output is the projection's saved input).
  bool selective_drops_attention_output = false;

  // --- Allocator --------------------------------------------------------------------------
  // Memory a caching allocator keeps reserved beyond the live tensors, as a fraction of the
  // stashed activations (the tensors allocated and freed every micro-batch, whose varying
  // sizes fragment the pool). It is what monitoring shows, not what must fit: PyTorch frees
  // its cached blocks and retries before it reports out-of-memory.
  double allocator_reserve_fraction;
  // Every activation buffer carved once per shape (Loom's trainers): a block's backward
  // scratch and the logits chunk stay allocated next to the stashed activations, so both
  // count toward the peak. With a caching allocator (false) each is freed before the other
  // phase and only the larger counts.
  bool fixed_arenas = false;

  // --- Step time ----------------------------------------------------------------------------
  // Share of tensor-parallel collective time hidden behind GEMMs (0: Megatron without
  // --tp-comm-overlap, the default; nanotron overlaps its all-gathers with async linears).
  double tp_comm_overlap;
  // Share of the DP gradient reduction that can run during the last micro-batch's backward
  // (bucketed reduction as backward produces gradients: Megatron --overlap-grad-reduce, torch
  // DDP, FSDP). 0: the reduction starts after the backward.
  double dp_comm_overlap;
  // Fixed cost per iteration outside the kernels (data loader, logging, launch gaps), seconds.
  double iteration_overhead_s;
  // ZeRO-1 implemented as an all-reduce of the full gradients followed by each rank updating
  // its shard (DeepSpeed's BF16_Optimizer, nanotron), instead of a reduce-scatter (Megatron's
  // distributed optimizer): twice the gradient traffic.
  bool zero1_gradient_allreduce = false;
  // The framework's kernels relative to the profile's reference kernels (cuBLAS GEMMs, fused
  // FlashAttention-2, fused element-wise ops): GEMM and attention rate multipliers, and the
  // multiplier on element-wise HBM traffic (eager PyTorch runs unfused bias/activation/norm
  // kernels that read and write each tensor several times).
  double gemm_efficiency_scale = 1.0;
  double attention_efficiency_scale = 1.0;
  double elementwise_traffic_scale = 1.0;
  // bf16 training: HBM bytes per parameter moved after every micro-batch's backward to fold
  // the bf16 gradients into an fp32 accumulation buffer (DeepSpeed BF16_Optimizer, nanotron's
  // FP32GradientAccumulator: read 2 + read 4 + write 4). 0 when the weight-gradient GEMM
  // accumulates into fp32 directly (Megatron's gradient_accumulation_fusion); fp16 runs
  // accumulate into the fp16 .grad (DeepSpeed FP16_Optimizer).
  double bf16_grad_fold_bytes_per_param = 0.0;
  // Pipeline transfers: Megatron sends each TP rank's 1/tp slice of the activations and
  // overlaps send/recv with compute (batch_isend_irecv); DeepSpeed's pipeline engine sends the
  // full tensor from every TP rank and waits for each transfer inside its instruction stream.
  bool pipeline_scatter_gather = true;
  bool pipeline_p2p_blocking = false;
  // Memory of the pipeline's transfers, in [s, b, h] tensors per stage: the send and receive
  // buffers (Megatron: the received activation and the received gradient, 2), and whether each
  // micro-batch a stage holds keeps its output tensor until its backward (Loom: the last
  // block's output per activation slot; Megatron frees the output's data once it is sent).
  double pipeline_buffers = 2;
  bool stage_output_kept = false;
  // ZeRO-3 traffic per block: collectives per gather (FSDP: one flat parameter per wrapped
  // block; DeepSpeed: one per fetched parameter tensor), whether recompute gathers again
  // (DeepSpeed re-fetches inside checkpointed forwards; FSDP's backward gather serves it),
  // the share of a gather that prefetching hides behind the previous block's compute, and a
  // host cost per rank of the group for each collective (list-based all_gather).
  double zero3_collectives_per_gather = 1.0;
  bool zero3_regather_on_recompute = false;
  double zero3_prefetch_overlap = 1.0;
  double zero3_per_rank_overhead_us = 0.0;
  // Communication hidden behind compute still slows it: NCCL kernels occupy SMs and HBM
  // bandwidth. The hidden time x this fraction is added to the compute it overlaps.
  double overlap_compute_slowdown = 0.1;
  // Host-side cost of issuing one kernel (PyTorch dispatch + launch): a kernel that runs
  // shorter than this leaves the GPU waiting for the CPU, so every op takes at least this.
  double kernel_dispatch_us = 0.0;
  // Fixed cost of one collective beyond the link latencies (NCCL kernel launch, proxy
  // progress, stream synchronisation around it).
  double collective_launch_us = 0.0;

  // --- Checkpoints ------------------------------------------------------------------------
  // The last stage's copy of a tied embedding is a replica: its weights are saved once
  // (DeepSpeed saves only modules, Megatron's distributed checkpoint deduplicates replicas).
  // DeepSpeed's BF16_Optimizer still writes the copy's fp32 master and Adam states.
  bool tied_copy_optimizer_saved;

  // Layout constraints the framework imposes (e.g. DeepSpeed: ZeRO-2/3 with pp > 1).
  core::Status check_layout(const core::Layout& layout) const;
};

const FrameworkTraits& framework_traits(Framework f);

// Sets one numeric trait by name ("dp_comm_overlap=0.5"): what-if studies and calibration
// (`--framework-param`). Errors name the trait and list the adjustable ones.
core::Status apply_framework_param(FrameworkTraits& traits, const std::string& assignment);
core::Result<Framework> parse_framework(const std::string& s);
const char* to_string(Framework f);
std::vector<Framework> all_frameworks();

}  // namespace loom::sim
