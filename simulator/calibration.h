// Calibration of a cluster profile's compute section from measurements on the real device:
// GEMM times over the shapes the simulator prices, flash-attention times, and the achieved
// memory bandwidth of a large copy. The fit uses ComputeModel itself (no second copy of the
// kernel-time formula): gemm_max_efficiency is the value that minimises the squared log error
// of ComputeModel::gemm_time_s over the measured GEMMs; the attention efficiencies are the
// medians of measured FLOP/s over the dense peak (forward and backward separately, FLOPs as
// simulator/block_ops.cc counts them); memory_efficiency is the copy bandwidth over the
// datasheet bandwidth. The measurements come from scripts/gpu_torch_reference.py on a GPU
// (measurements_from_json reads its JSON) and, later, from Loom's own microbenchmarks.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/cluster_profile.h"
#include "core/status.h"

namespace loom::sim {

struct GemmSample {
  std::string label;  // e.g. "llama-1.3b T=8192 mlp_in fwd"
  double m = 0, n = 0, k = 0, batch = 1;
  double seconds = 0;
};

struct AttentionSample {
  std::string label;
  double flops = 0;  // causal, as block_ops.cc counts (forward 2 s^2 d per head; backward 2.5x)
  bool backward = false;
  double seconds = 0;
};

struct CalibrationMeasurements {
  std::string source;  // where they came from (device name, tool)
  std::vector<GemmSample> gemms;
  std::vector<AttentionSample> attention;
  std::optional<double> copy_gb_s;  // bytes read + written / s of a large device copy, 1e9
                                    // (CPU: of the trainer's element-wise kernels; fitted)
  std::optional<double> large_copy_gb_s;  // CPU: the 256 MiB copy, reported only
};

struct GemmFitRow {
  std::string label;
  double measured_s = 0, before_s = 0, after_s = 0;
};

struct CalibrationResult {
  core::ComputeSpec before, after;
  std::vector<GemmFitRow> gemm_rows;
  // |log(predicted / measured)| statistics over the GEMMs, as relative errors (exp(x) - 1).
  double gemm_median_error_before = 0, gemm_median_error_after = 0;
  double gemm_max_error_before = 0, gemm_max_error_after = 0;
  int attention_fwd_samples = 0, attention_bwd_samples = 0;
};

// Reads scripts/gpu_torch_reference.py's JSON: "gemm" rows (m, n, k, seconds), "attention"
// rows of the chosen backend ("default", "flash", "cudnn"), "memory".copy_gb_s. Errors name
// the missing field.
core::Result<CalibrationMeasurements> measurements_from_json(const nlohmann::json& j,
                                                            const std::string& attention_backend);

// Fits the compute section of `profile` (bf16 peak) to the measurements. Fields without
// measurements keep the profile's values. The profile must have a compute section.
core::Result<CalibrationResult> calibrate_compute(const core::ClusterProfile& profile,
                                                  const CalibrationMeasurements& measurements);

}  // namespace loom::sim
