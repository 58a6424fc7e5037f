// The GEMM model against measured cuBLAS throughput of transformer shapes (Llama-2-70B
// projections at 4096 tokens, TP 1 and 8; microsoft/vidur data/profiling/compute/a100,
// fp16; square cuBLASLt GEMMs, Azure/AI-benchmarking-guide ND_A100_v4_results.md) and against
// its own quantization rules: one tile more than a full wave costs throughput even after
// cuBLAS picks a smaller tile; a 128-token GEMM is bound by streaming the weights.
#include "simulator/compute_model.h"

#include <gtest/gtest.h>

namespace loom::sim {
namespace {

core::ClusterProfile a100() {
  core::ClusterProfile p;
  p.device.peak_tflops_bf16 = p.device.peak_tflops_fp16 = 312;  // A100 datasheet
  p.device.peak_tflops_fp32 = 19.5;
  p.device.memory_bandwidth_gb_s = 2039;
  p.compute.present = true;
  p.compute.sm_count = 108;
  p.compute.gemm_max_efficiency = 0.80;
  p.compute.gemm_launch_us = 3;
  p.compute.memory_efficiency = 0.8;
  p.compute.elementwise_launch_us = 3;
  p.compute.attention_fwd_efficiency = 0.6;
  p.compute.attention_bwd_efficiency = 0.45;
  return p;
}

double tflops(const ComputeModel& c, double m, double n, double k) {
  return 2 * m * n * k / c.gemm_time_s(m, n, k) / 1e12;
}

TEST(ComputeModel, MatchesMeasuredTransformerGemmsOnA100) {
  const ComputeModel c(a100(), core::Precision::kBf16);
  struct Point {
    double m, n, k, measured_tflops;
  };
  // vidur Llama-2-70b mlp.csv, 4096 tokens: QKV, attention-out, fused gate+up, down; TP1, TP8.
  const Point points[] = {{4096, 10240, 8192, 239}, {4096, 8192, 8192, 231},
                          {4096, 57344, 8192, 241}, {4096, 8192, 28672, 239},
                          {4096, 1280, 8192, 247},  {4096, 8192, 1024, 232},
                          {4096, 7168, 8192, 249},  {4096, 8192, 3584, 230}};
  for (const auto& p : points) {
    EXPECT_NEAR(tflops(c, p.m, p.n, p.k), p.measured_tflops, 0.12 * p.measured_tflops)
        << p.m << "x" << p.n << "x" << p.k;
  }
  // Square fp16 cuBLASLt GEMMs: 1024^3 119.4, 2048^3 221.8, 4096^3 228.0, 8192^3 253.7 TFLOP/s.
  const Point square[] = {{1024, 1024, 1024, 119.4},
                          {2048, 2048, 2048, 221.8},
                          {4096, 4096, 4096, 228.0},
                          {8192, 8192, 8192, 253.7}};
  for (const auto& p : square) {
    EXPECT_NEAR(tflops(c, p.m, p.n, p.k), p.measured_tflops, 0.12 * p.measured_tflops) << p.m;
  }
}

TEST(ComputeModel, WaveQuantization) {
  const ComputeModel c(a100(), core::Precision::kBf16);
  // 108 tiles of 256x128 fill one wave; with 109 the best tile leaves a third of the SMs idle.
  const double one_wave = tflops(c, 256 * 108, 128, 8192);
  const double two_waves = tflops(c, 256 * 109, 128, 8192);
  EXPECT_LT(two_waves, 0.92 * one_wave);
  EXPECT_GT(two_waves, 0.5 * one_wave);
}

TEST(ComputeModel, SkinnyGemmIsBoundByWeights) {
  const ComputeModel c(a100(), core::Precision::kBf16);
  const double m = 128, n = 57344, k = 8192;
  const double weight_bytes = 2 * (m * k + k * n + m * n);
  EXPECT_NEAR(c.gemm_time_s(m, n, k), 3e-6 + weight_bytes / (2039e9 * 0.8), 1e-9);
}

TEST(ComputeModel, ElementwiseAndAttention) {
  const ComputeModel c(a100(), core::Precision::kBf16);
  EXPECT_NEAR(c.elementwise_time_s(1.6312e9), 3e-6 + 1e-3, 1e-9);  // 1.6312 GB at 1631.2 GB/s
  EXPECT_NEAR(c.attention_time_s(312e12 * 0.6 * 1e-3, false), 3e-6 + 1e-3, 1e-9);
  EXPECT_NEAR(c.attention_time_s(312e12 * 0.45 * 1e-3, true), 3e-6 + 1e-3, 1e-9);
}

}  // namespace
}  // namespace loom::sim
