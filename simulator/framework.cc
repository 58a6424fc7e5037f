// The framework trait table: every value is cited to the code that implies it.
#include "simulator/framework.h"

namespace loom::sim {

namespace {

// PyTorch's caching allocator keeps freed activation blocks reserved: max_memory_reserved
// exceeds the live tensors by about 0.3 x the stashed activations. Fitted once (best 0.27,
// rounded) on the 26 nanotron runs of published_runs.yaml, the only published runs that
// report reserved memory; docs/validation/memory.md gives the fit and its leave-one-out
// error. Shared by every framework built on the PyTorch allocator.
constexpr double kPyTorchReserveFraction = 0.3;
// The default overlap_compute_slowdown (0.1, in framework.h): NCCL runs its collectives with
// 8-16 thread blocks on A100/H100 (NCCL_MIN/MAX_NCHANNELS defaults), 7-15% of 108-132 SMs,
// while they overlap GEMMs; an estimate, not fitted.

// Logits per chunk of Loom's fused cross-entropy (kLogitsChunkElements in
// trainer/transformer.cc and trainer/cuda_transformer.cc).
constexpr double kLoomLogitsChunk = 16777216;  // 2^24

const FrameworkTraits kTraits[] = {
    {
        .id = Framework::kMegatron,
        .name = "megatron",
        .description =
        "Megatron-LM / Megatron-Core: fp32 main grads fused into the grad buffer, distributed "
        "optimizer = ZeRO-1, vocab-parallel cross-entropy, Transformer Engine flash attention",
        .grad_bytes_bf16 = 4,  // accumulate_allreduce_grads_in_fp32 is forced on for bf16
        .grad_bytes_fp16 = 2,  // fp16 grads; the optimizer keeps an fp32 copy (below)
        .half_grad_transient_bytes = 0,  // gradient_accumulation_fusion writes main_grad
        .fsdp_flat_params = false,
        // docs/source/api-guide/dist_optimizer.md: fp16 params + fp16 grads = 20 bytes/param
        // (2 + 2 + 16 optimizer-side: fp32 param, fp32 grad, Adam m, v).
        .extra_optimizer_bytes_fp16 = 4,
        .ddp_bucket_bytes = 0,  // DDP buckets are views into the grad buffer
        .zero3_gathered_layers = 2, .zero3_gather_bytes_per_param = 2,
        .zero3_unsharded_grad_bytes = 4,
        .zero3_max_live_params = 0, .zero3_reduce_bucket_params = 0,
        .swiglu_saved_f = 3,  // fused bias_swiglu saves fc1 output [2f]; fc2 saves its input [f]
        .attention_extra_kv_copies = 0,
        // _VocabParallelCrossEntropy: bf16 logits (2) + .float() copy kept as softmax (4).
        .logits_bytes_per_element = 6,
        .flash_attention = true,
        .allocator_reserve_fraction = kPyTorchReserveFraction,
        // Megatron-LM defaults: --tp-comm-overlap off, --overlap-grad-reduce off (the 2021-22
        // runs had neither; Megatron-Core runs that set them override these).
        .tp_comm_overlap = 0.0, .dp_comm_overlap = 0.0, .iteration_overhead_s = 0.0,
        .tied_copy_optimizer_saved = false,
    },
    {
        .id = Framework::kMegatron2021,
        .name = "megatron-2021",
        .description =
        "Megatron-LM as Narayanan et al. 2021 (SC21) ran it: TP, PP with the interleaved "
        "schedule, DP; fused-softmax attention (no FlashAttention before 2022), no sequence "
        "parallelism or selective recompute (Korthikanti et al. 2022), no distributed optimizer "
        "(2022); the CUDA 11 stack of that time",
        .grad_bytes_bf16 = 4,
        .grad_bytes_fp16 = 2,
        .half_grad_transient_bytes = 0,
        .fsdp_flat_params = false,
        .extra_optimizer_bytes_fp16 = 4,  // fp16 optimizer: 20 bytes per parameter
        .ddp_bucket_bytes = 0,
        .zero3_gathered_layers = 2, .zero3_gather_bytes_per_param = 2,
        .zero3_unsharded_grad_bytes = 4,
        .zero3_max_live_params = 0, .zero3_reduce_bucket_params = 0,
        .swiglu_saved_f = 3,
        .attention_extra_kv_copies = 0,
        .logits_bytes_per_element = 6,
        .flash_attention = false,
        .dropout = true,  // arguments.py: --hidden-dropout 0.1, --attention-dropout 0.1
        .allocator_reserve_fraction = kPyTorchReserveFraction,
        .tp_comm_overlap = 0.0, .dp_comm_overlap = 0.0, .iteration_overhead_s = 0.0,
        // The 2020-22 stack's GEMM and attention rate on A100 relative to today's (the value
        // fitted on the 25 Megatron-LM / BLOOM runs, simulator/validation_runs.cc
        // k2022StackEfficiency; docs/validation/step-time.md).
        .gemm_efficiency_scale = 0.9,
        .attention_efficiency_scale = 0.9,
        .tied_copy_optimizer_saved = false,
    },
    {
        .id = Framework::kMegatronDeepSpeed,
        .name = "megatron-deepspeed",
        .description =
        "Megatron-DeepSpeed (BigScience, vTrain): Megatron model code, DeepSpeed pipeline and "
        "ZeRO; bf16 through DeepSpeed's BF16_Optimizer; fused softmax attention (2022)",
        .grad_bytes_bf16 = 4,  // BF16_Optimizer: fp32 gradient accumulation buffer
        .grad_bytes_fp16 = 2,  // Megatron's fp16 optimizer path (ZeRO-0)
        .half_grad_transient_bytes = 2,  // bf16 .grad until update_hp_grads folds it in
        .fsdp_flat_params = false,
        // DeepSpeed's FP16_Optimizer and ZeRO keep fp32 gradients only inside step(), when the
        // activations are gone: 2 + 2 + 4 + 8 = 16 bytes per parameter at the peak.
        .extra_optimizer_bytes_fp16 = 0,
        .ddp_bucket_bytes = 0,
        .zero3_gathered_layers = 2, .zero3_gather_bytes_per_param = 2,
        .zero3_unsharded_grad_bytes = 2,
        // DeepSpeed defaults: stage3_max_live_parameters 1e9, reduce_bucket_size 5e8.
        .zero3_max_live_params = 1e9, .zero3_reduce_bucket_params = 5e8,
        .swiglu_saved_f = 3,
        .attention_extra_kv_copies = 0,
        .logits_bytes_per_element = 6,  // same vocab-parallel cross-entropy as Megatron
        .flash_attention = false,
        .allocator_reserve_fraction = kPyTorchReserveFraction,
        // BLOOM / vTrain: TP collectives on the critical path; DeepSpeed reduces gradients
        // after the backward of the last micro-batch (overlap_comm off for BF16_Optimizer).
        .tp_comm_overlap = 0.0, .dp_comm_overlap = 0.0, .iteration_overhead_s = 0.0,
        // BF16_Optimizer all-reduces the fp32 gradients, then updates its partition.
        .zero1_gradient_allreduce = true,
        .bf16_grad_fold_bytes_per_param = 10,
        // deepspeed/runtime/pipe/engine.py: SendActivation / RecvActivation instructions run in
        // order with blocking p2p; with tensor parallelism each rank sends its 1/tp partition
        // (is_pipe_partitioned) and the receiver all-gathers it.
        .pipeline_scatter_gather = true,
        .pipeline_p2p_blocking = true,
        // ZeRO-3 as DeepSpeed ran it in 2021 (SC21 Table 2): one all-gather per weight matrix
        // plus one for the coalesced biases and norms (5 per GPT block), re-fetched for the
        // checkpointed forward; prefetch and per-rank costs fitted below.
        .zero3_collectives_per_gather = 5,
        .zero3_regather_on_recompute = true,
        // Fitted on SC21 Table 2's six ZeRO-3 runs (175B/530B on 384-2240 GPUs; grid in
        // docs/validation/step-time.md): no effective prefetch, and ~18 us of host work per
        // rank of the group per collective (2021 DeepSpeed gathered into per-rank tensor lists).
        .zero3_prefetch_overlap = 0.0,
        .zero3_per_rank_overhead_us = 18,
        // Fitted on vTrain's 723 single-node runs (scripts/calibrate_frameworks.py megatron-deepspeed
        // kernel_dispatch_us=40,60,80,100 collective_launch_us=20,40,80): small models at
        // micro-batch 1 are bound by the host issuing ~2-3 PyTorch kernels per Loom op.
        .kernel_dispatch_us = 60,
        .collective_launch_us = 40,
        .tied_copy_optimizer_saved = true,
    },
    {
        .id = Framework::kFsdp,
        .name = "fsdp",
        .description =
        "PyTorch FSDP as MosaicML llm-foundry runs it: fp32 flat parameters sharded over DP, "
        "low-precision copies gathered per wrapped block under autocast, fused cross-entropy",
        .grad_bytes_bf16 = 4,  // fp32 gradients of the fp32 flat parameters
        .grad_bytes_fp16 = 4,
        .half_grad_transient_bytes = 0,
        .fsdp_flat_params = true,
        .extra_optimizer_bytes_fp16 = 0,
        .ddp_bucket_bytes = 0,
        // FULL_SHARD with backward prefetch: current + next unit gathered; under amp_bf16 the
        // gathered parameter is fp32 (4) and autocast caches a bf16 cast (2).
        .zero3_gathered_layers = 2, .zero3_gather_bytes_per_param = 6,
        .zero3_unsharded_grad_bytes = 4,
        .zero3_max_live_params = 0, .zero3_reduce_bucket_params = 0,
        .swiglu_saved_f = 4,  // eager PyTorch: gate/up output, silu output, product
        .attention_extra_kv_copies = 0,
        // llm-foundry's default loss_fn fused_crossentropy (flash-attn's xentropy kernel):
        // bf16 logits (2) and their bf16 gradient (2); no fp32 copy.
        .logits_bytes_per_element = 4,
        .flash_attention = true,
        .allocator_reserve_fraction = kPyTorchReserveFraction,
        // FSDP reduce-scatters each unit's gradients as soon as its backward finishes.
        .tp_comm_overlap = 0.0, .dp_comm_overlap = 1.0, .iteration_overhead_s = 0.0,
        // Fitted on MosaicML's 61 MPT runs (scripts/calibrate_frameworks.py fsdp attention_efficiency_scale=0.45..0.7
        // elementwise_traffic_scale=1,1.5,2,3): llm-foundry's triton flash attention runs at
        // 0.55 of FlashAttention-2 (errors grew with sequence length), and its eager
        // bias/GeLU/LayerNorm kernels move 1.5x the fused traffic.
        .attention_efficiency_scale = 0.55,
        .elementwise_traffic_scale = 1.5,
        .tied_copy_optimizer_saved = false,
    },
    {
        .id = Framework::kNanotron,
        .name = "nanotron",
        .description =
        "Hugging Face nanotron: bf16 weights, full fp32 gradient accumulator even under ZeRO-1, "
        "fp32 master + AdamW sharded by ZeRO-1, flash-attn, eager SwiGLU",
        .grad_bytes_bf16 = 4,  // FP32GradientAccumulator: buffer over all parameters
        .grad_bytes_fp16 = 4,
        .half_grad_transient_bytes = 2,  // bf16 .grad until accumulated after backward
        .fsdp_flat_params = false,
        .extra_optimizer_bytes_fp16 = 0,
        .ddp_bucket_bytes = 2,  // torch DDP (ZeRO-0, dp > 1) with its own bf16 buckets
        .zero3_gathered_layers = 2, .zero3_gather_bytes_per_param = 2,
        .zero3_unsharded_grad_bytes = 2,
        .zero3_max_live_params = 0, .zero3_reduce_bucket_params = 0,
        .swiglu_saved_f = 4,  // GLUActivation: merged gate/up [2f] + silu [f] + product [f]
        .attention_extra_kv_copies = 1,  // concatenated K/V copy for flash_attn_varlen_kvpacked
        // cast_to_fp32 copy (4) + logits - max copy (4) + bf16 logits (2).
        .logits_bytes_per_element = 10,
        .flash_attention = true,
        .allocator_reserve_fraction = kPyTorchReserveFraction,
        // tp_linear_async_communication overlaps the all-gather with the matmul (not the
        // reduce-scatter); DDP buckets overlap the gradient all-reduce with backward.
        .tp_comm_overlap = 0.5, .dp_comm_overlap = 1.0,
        // Fitted on nanotron's 26 runs (scripts/calibrate_frameworks.py nanotron iteration_overhead_s=0.05,0.1,0.15
        // gemm_efficiency_scale=0.8,0.9 collective_launch_us=0,40 ...).
        .iteration_overhead_s = 0.1,
        // sync_gradients_across_dp(reduce_scatter=False): full fp32 all-reduce under ZeRO-1.
        .zero1_gradient_allreduce = true,
        .gemm_efficiency_scale = 0.8,
        .bf16_grad_fold_bytes_per_param = 10,
        .collective_launch_us = 40,
        .tied_copy_optimizer_saved = false,
    },
    {
        .id = Framework::kLoom,
        .name = "loom",
        .description =
        "Loom's CUDA trainer: one device allocation per buffer class, fused chunked LM-head "
        "cross-entropy that overwrites the logits with their gradients",
        .grad_bytes_bf16 = 4,
        .grad_bytes_fp16 = 4,
        .half_grad_transient_bytes = 0,
        .fsdp_flat_params = false,
        .extra_optimizer_bytes_fp16 = 0,
        .ddp_bucket_bytes = 0,
        .zero3_gathered_layers = 2, .zero3_gather_bytes_per_param = 2,
        .zero3_unsharded_grad_bytes = 4,
        .zero3_max_live_params = 0, .zero3_reduce_bucket_params = 0,
        .swiglu_saved_f = 3,
        .attention_extra_kv_copies = 0,
        .logits_bytes_per_element = 2,  // bf16 logits, overwritten in place by dlogits
        .logits_chunk_elements = kLoomLogitsChunk,
        .flash_attention = true,
        // trainer/cuda_transformer.cc prepare(): dr, dxn, mlp_out [h]; dattn, dq [q]; dk, dv
        // [kv]; dact [f] besides dg, du.
        .backward_h_buffers = 3, .backward_q_buffers = 2, .backward_kv_buffers = 2,
        .backward_extra_f_buffers = 1,
        // trainer/cuda_transformer.cc: selective recompute keeps q, k, v and reruns the attention
        // (one output and log-sum-exp buffer for all blocks).
        .selective_drops_attention_output = true,
        .allocator_reserve_fraction = 0.0,  // no caching allocator: fixed arenas
        .fixed_arenas = true,
        // Loom's CUDA trainer: no tensor parallelism on GPUs yet; its data-parallel all-reduce
        // runs on NCCL's stream per unit during the backward (trainer/cuda_data_parallel.h),
        // but how much of it hides has not been measured on more than one GPU: no overlap
        // credited until it is.
        .tp_comm_overlap = 0.0, .dp_comm_overlap = 0.0, .iteration_overhead_s = 0.0,
        // Loom's fused attention (kernels/cuda/attention_fused.cu, mma.sync at 12.5% occupancy)
        // against the profile's reference (cuDNN's fused SDPA): measured on one H200 on
        // 2026-11-28 by bench/attention_gpu_benchmark at the 1.3 B Llama's shapes, 146 / 113
        // TFLOP/s forward / backward against h200-1gpu's 598 / 452 (0.245, 0.251;
        // tests/data/calibration/h200-loom-attention-2026-11-28.json, checked in
        // tests/sim/calibration_test.cc). Not measured on other GPUs.
        .attention_efficiency_scale = 0.25,
        .tied_copy_optimizer_saved = false,
    },
    {
        .id = Framework::kLoomCpu,
        .name = "loom-cpu",
        .description =
        "Loom's CPU trainer (trainer/transformer.h, the parallel trainer's ranks): fp32, "
        "buffers sized once per shape, chunked LM-head cross-entropy",
        .grad_bytes_bf16 = 4,
        .grad_bytes_fp16 = 4,
        .half_grad_transient_bytes = 0,
        .fsdp_flat_params = false,
        .extra_optimizer_bytes_fp16 = 0,
        .ddp_bucket_bytes = 0,
        // trainer/zero_shards.h: the unit being computed is gathered (no prefetch), with its full
        // gradients until they are reduce-scattered; fp32 throughout.
        .zero3_gathered_layers = 1, .zero3_gather_bytes_per_param = 4,
        .zero3_unsharded_grad_bytes = 4,
        .zero3_max_live_params = 0, .zero3_reduce_bucket_params = 0,
        .zero2_unit_gradients = true,  // trainer/zero_shards.h
        .zero_staging_bytes_per_param = 4,
        .swiglu_saved_f = 3,  // g, u and the product (the down projection's input)
        .attention_extra_kv_copies = 0,
        .logits_bytes_per_element = 2,  // one logits chunk in the activation dtype (fp32: 4)
        .logits_chunk_elements = kLoomLogitsChunk,
        .flash_attention = true,  // kernels/cpu attention keeps the log-sum-exp only
        // trainer/transformer.cc prepare(): dxn, dres and the stage's dx, dx2 [h]; dattn, dq
        // [q]; dk, dv [kv]; dact [f] besides dg (SwiGLU) and du.
        .backward_h_buffers = 4, .backward_q_buffers = 2, .backward_kv_buffers = 2,
        .backward_extra_f_buffers = 1,
        .selective_drops_attention_output = true,
        .allocator_reserve_fraction = 0.0,
        .fixed_arenas = true,
        .tp_comm_overlap = 0.0, .dp_comm_overlap = 0.0, .iteration_overhead_s = 0.0,
        // trainer/parallel_trainer.cc run_pipeline: received activation, received gradient,
        // gradient to send; transformer.h Slot::x_final.
        .pipeline_buffers = 3,
        .stage_output_kept = true,
        .tied_copy_optimizer_saved = false,
    },
};

}  // namespace

const FrameworkTraits& framework_traits(Framework f) {
  for (const auto& t : kTraits) {
    if (t.id == f) return t;
  }
  return kTraits[0];
}

std::vector<Framework> all_frameworks() {
  std::vector<Framework> out;
  for (const auto& t : kTraits) out.push_back(t.id);
  return out;
}

const char* to_string(Framework f) { return framework_traits(f).name; }

core::Result<Framework> parse_framework(const std::string& s) {
  std::string names;
  for (const auto& t : kTraits) {
    if (s == t.name) return t.id;
    names += (names.empty() ? "" : ", ") + std::string(t.name);
  }
  return core::error(core::ErrorCode::kInvalidArgument,
                     "framework '{}' is not known (allowed: {})", s, names);
}

namespace {

struct NumericTrait {
  const char* name;
  double FrameworkTraits::*member;
};
constexpr NumericTrait kNumericTraits[] = {
    {"tp_comm_overlap", &FrameworkTraits::tp_comm_overlap},
    {"dp_comm_overlap", &FrameworkTraits::dp_comm_overlap},
    {"iteration_overhead_s", &FrameworkTraits::iteration_overhead_s},
    {"gemm_efficiency_scale", &FrameworkTraits::gemm_efficiency_scale},
    {"attention_efficiency_scale", &FrameworkTraits::attention_efficiency_scale},
    {"elementwise_traffic_scale", &FrameworkTraits::elementwise_traffic_scale},
    {"zero3_collectives_per_gather", &FrameworkTraits::zero3_collectives_per_gather},
    {"zero3_prefetch_overlap", &FrameworkTraits::zero3_prefetch_overlap},
    {"zero3_per_rank_overhead_us", &FrameworkTraits::zero3_per_rank_overhead_us},
    {"bf16_grad_fold_bytes_per_param", &FrameworkTraits::bf16_grad_fold_bytes_per_param},
    {"overlap_compute_slowdown", &FrameworkTraits::overlap_compute_slowdown},
    {"kernel_dispatch_us", &FrameworkTraits::kernel_dispatch_us},
    {"collective_launch_us", &FrameworkTraits::collective_launch_us},
    {"allocator_reserve_fraction", &FrameworkTraits::allocator_reserve_fraction},
    {"logits_bytes_per_element", &FrameworkTraits::logits_bytes_per_element},
};

}  // namespace

core::Status apply_framework_param(FrameworkTraits& traits, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  std::string names;
  for (const auto& t : kNumericTraits) names += (names.empty() ? "" : ", ") + std::string(t.name);
  if (eq == std::string::npos) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "--framework-param '{}': expected NAME=VALUE (NAME one of: {})", assignment,
                       names);
  }
  const std::string name = assignment.substr(0, eq), value = assignment.substr(eq + 1);
  for (const auto& t : kNumericTraits) {
    if (name != t.name) continue;
    try {
      size_t used = 0;
      const double v = std::stod(value, &used);
      if (used != value.size() || v < 0) throw std::invalid_argument(value);
      traits.*(t.member) = v;
      return core::ok_status();
    } catch (const std::exception&) {
      return core::error(core::ErrorCode::kInvalidArgument,
                         "--framework-param {}: '{}' is not a non-negative number", name, value);
    }
  }
  return core::error(core::ErrorCode::kInvalidArgument,
                     "--framework-param: unknown trait '{}' (adjustable: {})", name, names);
}

core::Status FrameworkTraits::check_layout(const core::Layout& layout) const {
  if (id == Framework::kLoom || id == Framework::kLoomCpu) {
    // What trainer/parallel_trainer.h runs (ParallelTrainer::check_layout says the same).
    if (layout.zero >= 2 && layout.pp > 1) {
      return core::error(core::ErrorCode::kInfeasible,
                         "--zero {} with pp {}: {} shards gradients or parameters by unit without "
                         "pipelining, as DeepSpeed (use --zero 1 or pp 1)",
                         layout.zero, layout.pp, name);
    }
  }
  if (layout.zero >= 2 && layout.pp > 1 &&
      (id == Framework::kMegatronDeepSpeed || id == Framework::kMegatron)) {
    return core::error(core::ErrorCode::kInfeasible,
                       "--zero {} with pp {}: {} cannot shard gradients or parameters across a "
                       "pipeline (DeepSpeed's pipeline engine asserts ZeRO <= 1; Megatron-FSDP "
                       "supports TP/CP/EP, not PP); use --zero 1 or pp 1",
                       layout.zero, layout.pp, name);
  }
  if (id == Framework::kMegatron2021) {
    // Features that arrived in Megatron-LM in 2022 (sequence parallelism and selective
    // recompute: Korthikanti et al. 2022; the distributed optimizer: Megatron-LM v3.0).
    if (layout.sp || layout.recompute == core::Recompute::kSelective) {
      return core::error(core::ErrorCode::kInfeasible,
                         "{}: megatron-2021 has no {} (2022 features; allowed: no --sp, "
                         "--recompute none or full)",
                         layout.sp ? "--sp" : "--recompute selective",
                         layout.sp ? "sequence parallelism" : "selective recompute");
    }
    if (layout.zero > 0) {
      return core::error(core::ErrorCode::kInfeasible,
                         "--zero {}: megatron-2021 has no distributed optimizer (allowed: 0)",
                         layout.zero);
    }
  }
  if (id == Framework::kMegatronDeepSpeed) {
    // The BigScience Megatron-DeepSpeed fork and DeepSpeed's pipeline engine: no sequence
    // parallelism, no interleaved schedule, activation checkpointing of whole layers only.
    if (layout.sp) {
      return core::error(core::ErrorCode::kInfeasible,
                         "--sp: megatron-deepspeed has no sequence parallelism (allowed: no --sp)");
    }
    if (layout.vpp > 1) {
      return core::error(core::ErrorCode::kInfeasible,
                         "--vpp {}: DeepSpeed's pipeline engine has no interleaved schedule "
                         "(allowed: vpp 1)",
                         layout.vpp);
    }
    if (layout.recompute == core::Recompute::kSelective) {
      return core::error(core::ErrorCode::kInfeasible,
                         "--recompute selective: megatron-deepspeed checkpoints whole layers "
                         "(allowed: none, full)");
    }
  }
  return core::ok_status();
}

}  // namespace loom::sim
