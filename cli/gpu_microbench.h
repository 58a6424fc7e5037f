// Loom's own GPU microbenchmarks for `loom calibrate --measure` on a GPU profile (issue 5), in
// place of scripts/gpu_torch_reference.py: every GEMM shape the simulator prices for a model and
// layout (cpu_microbench.h simulator_gemm_shapes) through the CUDA backend's cuBLASLt GEMMs in
// the trainer's orientations and dtypes (bf16 in, fp32 accumulate; weight gradients fp32,
// accumulated); the causal attention forward and backward at the layout's shape through
// cuDNN's fused SDPA (the profiles' attention reference, kernels/cuda/attention_cudnn.h) and,
// reported beside it, Loom's fused kernels (their ratio is the loom framework's
// attention_efficiency_scale); a 1 GiB device-to-device copy (HBM bandwidth); and, with several
// local GPUs, NCCL's all-reduce among them (the intra-node fabric). Times are CUDA-event medians
// after warm-up. Built only with CUDA.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "cli/cpu_ranks.h"
#include "core/layout.h"
#include "core/model_spec.h"
#include "core/status.h"
#include "simulator/calibration.h"

namespace loom::cli {

// On the current device. layout: resolved (core::resolve_layout). progress: a line per shape,
// or nullptr. Attention samples come from cuDNN only; where cuDNN cannot run the shape they are
// left out (the profile keeps its attention efficiencies) and *note says why.
core::Result<sim::CalibrationMeasurements> measure_gpu(const core::ModelSpec& model,
                                                      const core::Layout& layout,
                                                      std::ostream* progress, std::string* note);

// NCCL's fp32 sum all-reduce among `gpus` local GPUs (one thread and one NcclComm each, one
// process) at each size in `sizes` (bytes): the median of 10 timed calls after 2 warm-ups. For
// fit_intra_node (cpu_ranks.h), which turns them into the profile's intra-node fabric. Errors
// when fewer GPUs are visible or the build has no NCCL.
core::Result<std::vector<CollectiveTiming>> measure_nccl_all_reduce(int gpus,
                                                                   const std::vector<double>& sizes);

}  // namespace loom::cli
