// Time of one kernel on one device. GEMMs: the better of a set of cuBLAS-like tiles, each with
// tile and wave quantization over the SMs (NVIDIA, "Matrix Multiplication Background"), a
// K-depth factor, the profile's best achievable efficiency, a launch cost, and the memory
// roofline; it reproduces measured A100/H100 transformer GEMMs to ~9% RMS (docs/validation/
// step-time.md). Flash attention: FLOPs at the profile's attention efficiency. Element-wise
// kernels: bytes at the profile's achieved HBM bandwidth. Tested in compute_model_test.cc.
#pragma once

#include "core/cluster_profile.h"
#include "core/layout.h"
#include "simulator/block_ops.h"

namespace loom::sim {

class ComputeModel {
 public:
  // The profile must have a compute section (ClusterProfile::compute.present).
  ComputeModel(const core::ClusterProfile& profile, core::Precision precision);

  double gemm_time_s(double m, double n, double k, double batch = 1) const;
  double attention_time_s(double flops, bool backward) const;
  double elementwise_time_s(double bytes) const;
  // Any compute op of block_ops.h (collectives are priced by the communication model).
  double op_time_s(const Op& op) const;

  double peak_flops() const { return peak_flops_; }

 private:
  core::ComputeSpec spec_;
  double peak_flops_ = 0;       // dense FLOP/s for the precision
  double bandwidth_bytes_s_ = 0;  // achieved HBM bytes/s
};

}  // namespace loom::sim
