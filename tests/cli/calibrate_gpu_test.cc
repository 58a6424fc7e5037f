// `loom calibrate --measure` on a GPU profile (cli/gpu_microbench.h): Loom's cuBLASLt GEMMs over
// the shapes the simulator prices for the 1.3 B Llama, cuDNN's SDPA and a device copy, fitted
// into h200-1gpu's compute section. The fitted profile must load and simulate, its efficiencies
// must be fractions of the datasheet, and the fitted GEMM model must describe the measured
// GEMMs (median error under 25%: the wave model of simulator/compute_model.h against cuBLASLt's
// tiles; the PyTorch-measured fit of 2026-11-28 reached 6%).
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/kernels/gpu_test_util.h"
#include "tests/shell_command.h"

namespace loom {
namespace {

TEST(GpuCalibrate, MeasuresLoomsCudaKernelsAndFitsTheGpuProfile) {
  LOOM_REQUIRE_GPU();
  const std::string out = ::testing::TempDir() + "loom-h200-loom-measured.yaml";
  std::remove(out.c_str());
  const testing::ShellOutput o = testing::run_shell(
      testing::loom_binary() + " calibrate --cluster h200-1gpu --measure --model llama-1.3b "
      "--mbs 2 --seq 2048 --name h200-loom-measured --json --out " + out + " 2>/dev/null");
  ASSERT_EQ(o.exit_code, 0) << o.text;
  const auto j = nlohmann::json::parse(o.text);
  EXPECT_GE(j["gemm"]["samples"].get<int>(), 10);
  EXPECT_LT(j["gemm"]["median_error_after"].get<double>(), 0.25);
  for (const char* f : {"attention_fwd_efficiency", "attention_bwd_efficiency", "memory_efficiency"}) {
    const double after = j["fields"][f]["after"];
    EXPECT_GT(after, 0.1) << f;
    EXPECT_LE(after, 1) << f;
  }
  const testing::ShellOutput sim = testing::run_shell(
      testing::loom_binary() + " simulate --model llama-1.3b --cluster " + out +
      " --framework loom --gpus 1 --mbs 8 --gbs 16 --seq 2048 --json 2>&1");
  ASSERT_EQ(sim.exit_code, 0) << sim.text;
  EXPECT_EQ(nlohmann::json::parse(sim.text)["cluster"], "h200-loom-measured");
  std::printf("%s\n", o.text.c_str());
}

}  // namespace
}  // namespace loom
