// Kernel time model: see compute_model.h. The tile set and penalties follow cuBLAS's
// behaviour on Ampere/Hopper as fitted in docs/validation/step-time.md (GEMM section).
#include "simulator/compute_model.h"

#include <algorithm>
#include <cmath>

namespace loom::sim {

namespace {

struct Tile {
  double m, n;
  double efficiency;  // smaller tiles reuse less data per load and issue more instructions
};
constexpr Tile kTiles[] = {{256, 128, 1.0}, {128, 256, 1.0}, {128, 128, 1.0},
                           {128, 64, 0.9},  {64, 128, 0.9},  {64, 64, 0.75}};
// Short reductions pay the prologue/epilogue of each tile: K / (K + 64).
constexpr double kDepthHalf = 64.0;

}  // namespace

ComputeModel::ComputeModel(const core::ClusterProfile& p, core::Precision precision)
    : spec_(p.compute) {
  const double tflops = precision == core::Precision::kFp32   ? p.device.peak_tflops_fp32
                        : precision == core::Precision::kFp16 ? p.device.peak_tflops_fp16
                                                              : p.device.peak_tflops_bf16;
  peak_flops_ = tflops * 1e12;
  bandwidth_bytes_s_ = p.device.memory_bandwidth_gb_s * 1e9 * spec_.memory_efficiency;
}

double ComputeModel::gemm_time_s(double m, double n, double k, double batch) const {
  const double flops = 2.0 * m * n * k * batch;
  // Bytes of A, B and C in 16-bit (fp32 reads twice as much, the roofline rarely binds there).
  const double bytes = 2.0 * (m * k + k * n + m * n) * batch;
  const double sms = static_cast<double>(spec_.sm_count);
  const double depth = k / (k + kDepthHalf);
  double best = 1e300;
  for (const Tile& t : kTiles) {
    const double tiles = std::ceil(m / t.m) * std::ceil(n / t.n) * batch;
    const double waves = std::ceil(tiles / sms);
    // Useful work over the work the launched waves could do.
    const double utilisation = (m * n * batch) / (waves * sms * t.m * t.n);
    const double rate = peak_flops_ * spec_.gemm_max_efficiency * t.efficiency * utilisation * depth;
    best = std::min(best, std::max(flops / rate, bytes / bandwidth_bytes_s_));
  }
  return spec_.gemm_launch_us * 1e-6 + best;
}

double ComputeModel::attention_time_s(double flops, bool backward) const {
  const double efficiency =
      backward ? spec_.attention_bwd_efficiency : spec_.attention_fwd_efficiency;
  return spec_.gemm_launch_us * 1e-6 + flops / (peak_flops_ * efficiency);
}

double ComputeModel::elementwise_time_s(double bytes) const {
  return spec_.elementwise_launch_us * 1e-6 + bytes / bandwidth_bytes_s_;
}

double ComputeModel::op_time_s(const Op& op) const {
  switch (op.kind) {
    case OpKind::kGemm: return gemm_time_s(op.m, op.n, op.k, op.batch);
    case OpKind::kAttention: return attention_time_s(op.flops, op.backward);
    case OpKind::kElementwise: return elementwise_time_s(op.bytes);
    default: return 0.0;
  }
}

}  // namespace loom::sim
