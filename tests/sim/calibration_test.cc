// Profile calibration: the fit recovers a known GEMM efficiency from times that ComputeModel
// produced with it, and on the H200 measurements of 2026-11-28 (PyTorch 2.11 cuBLAS over the
// simulator's Llama shapes; docs/validation/gpu-runs.md) it lands where the measured fraction
// of peak says and cuts the model's GEMM error.
#include "simulator/calibration.h"

#include <gtest/gtest.h>

#include <fstream>

#include "core/cluster_profile.h"
#include "simulator/compute_model.h"
#include "simulator/framework.h"

namespace loom::sim {
namespace {

core::ClusterProfile h200() {
  auto p = core::load_cluster_profile("h200-1gpu");
  EXPECT_TRUE(p.ok()) << p.status().message();
  return p.value();
}

nlohmann::json measured() {
  std::ifstream in(std::string(LOOM_TEST_DATA_DIR) + "/calibration/h200-torch-reference-2026-11-28.json");
  EXPECT_TRUE(in.good());
  return nlohmann::json::parse(in);
}

TEST(Calibration, RecoversTheEfficiencyThatProducedTheTimes) {
  core::ClusterProfile truth = h200();
  truth.compute.gemm_max_efficiency = 0.613;
  const ComputeModel model(truth, core::Precision::kBf16);
  CalibrationMeasurements m;
  for (double t : {512.0, 2048.0, 8192.0})
    for (auto [n, k] : {std::pair{6144.0, 2048.0}, {2048.0, 2048.0}, {11264.0, 2048.0}, {2048.0, 5632.0}})
      m.gemms.push_back({"synthetic", t, n, k, 1, model.gemm_time_s(t, n, k)});
  core::ClusterProfile start = h200();
  start.compute.gemm_max_efficiency = 0.9;
  auto r = calibrate_compute(start, m);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_NEAR(r.value().after.gemm_max_efficiency, 0.613, 1e-4);
  EXPECT_LT(r.value().gemm_max_error_after, 1e-3);
  EXPECT_GT(r.value().gemm_median_error_before, 0.2);  // 0.9 vs 0.613: ~47% too fast
  // Nothing measured: the other fields keep the profile's values.
  EXPECT_EQ(r.value().after.attention_fwd_efficiency, start.compute.attention_fwd_efficiency);
  EXPECT_EQ(r.value().after.memory_efficiency, start.compute.memory_efficiency);
}

TEST(Calibration, H200MeasurementsFitWithinAFewPercent) {
  auto m = measurements_from_json(measured(), "default");
  ASSERT_TRUE(m.ok()) << m.status().message();
  EXPECT_EQ(m.value().gemms.size(), 135u);
  EXPECT_EQ(m.value().attention.size(), 6u);
  core::ClusterProfile p = h200();
  p.compute.gemm_max_efficiency = 0.78;  // the datasheet-era estimate the profile started with
  auto r = calibrate_compute(p, m.value());
  ASSERT_TRUE(r.ok()) << r.status().message();
  const CalibrationResult& c = r.value();
  // Measured fractions of peak over these shapes: 0.534 .. 0.824, median 0.681; the tile model
  // charges the quantization on top, so the fitted ceiling sits a little above the median.
  EXPECT_GT(c.after.gemm_max_efficiency, 0.68);
  EXPECT_LT(c.after.gemm_max_efficiency, 0.74);
  EXPECT_LT(c.gemm_median_error_after, 0.05);
  EXPECT_LT(c.gemm_median_error_after, c.gemm_median_error_before);
  // cuDNN SDPA, causal, head dim 128: forward 0.52-0.64 of peak, backward 0.35-0.51.
  EXPECT_NEAR(c.after.attention_fwd_efficiency, 0.605, 0.005);
  EXPECT_NEAR(c.after.attention_bwd_efficiency, 0.457, 0.005);
  EXPECT_NEAR(c.after.memory_efficiency, 4272.0 / 4800.0, 0.002);
}

TEST(Calibration, RejectsMissingFieldsAndUnknownBackends) {
  nlohmann::json j = measured();
  j["gemm"][3].erase("seconds");
  auto m = measurements_from_json(j, "default");
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("gemm[3]: field 'seconds'"), std::string::npos)
      << m.status().message();
  m = measurements_from_json(measured(), "triton");
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("'triton'"), std::string::npos);
  m = measurements_from_json(nlohmann::json::object(), "default");
  EXPECT_FALSE(m.ok());
}

// The loom framework's attention trait (simulator/framework.cc) against what it was set from:
// Loom's fused attention kernels timed by bench/attention_gpu_benchmark on the H200
// (2026-11-28) at the 1.3 B Llama's shape, B 8, T 2048, 16 heads of 128. The simulator's
// attention op (causal FLOPs at the profile's efficiency, divided by the framework's scale)
// must give each measured time within 5%; a change of the trait or of the profile's attention
// efficiencies without new measurements fails here.
TEST(Calibration, LoomAttentionScaleReproducesItsKernelBenchmark) {
  std::ifstream in(std::string(LOOM_TEST_DATA_DIR) + "/calibration/h200-loom-attention-2026-11-28.json");
  ASSERT_TRUE(in.good());
  const nlohmann::json j = nlohmann::json::parse(in);
  const ComputeModel model(h200(), core::Precision::kBf16);
  const double scale = framework_traits(Framework::kLoom).attention_efficiency_scale;
  const double fwd_flops = 4.0 * 8 * 2048.0 * 2048.0 * 16 * 128 / 2;  // causal half
  int checked = 0;
  for (const auto& r : j["benchmarks"]) {
    const std::string name = r["name"];
    const bool fwd = name.rfind("BM_Attention/0/0/8/16/16/", 0) == 0;
    const bool bwd = name.rfind("BM_Attention/0/1/8/16/16/", 0) == 0;
    if (!fwd && !bwd) continue;
    ASSERT_EQ(r["time_unit"], "ms");
    const double measured = r["real_time"].get<double>() / 1e3;
    const double predicted = model.attention_time_s(bwd ? 2.5 * fwd_flops : fwd_flops, bwd) / scale;
    EXPECT_NEAR(predicted / measured, 1.0, 0.05) << name << ": predicted " << predicted << " s, measured " << measured << " s";
    ++checked;
  }
  EXPECT_EQ(checked, 2);
}

}  // namespace
}  // namespace loom::sim
