// `loom train --backend cuda` against `loom train` on the CPU with the same fault injections: a
// NaN gradient at iteration 25 and 50x loss spikes at 31-33 must be skipped by the spike guard
// on both backends, the third consecutive skip must roll both back to the checkpoint of
// iteration 30, and the iterations after it must train as on the CPU (bf16 vs fp32: 1e-2
// relative, the bound of tests/trainer/cuda_trainer_gpu_test.cc). Recompute runs too.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/kernels/gpu_test_util.h"
#include "tests/shell_command.h"

namespace loom::train {
namespace {

std::string fresh_dir(const std::string& name) {
  const auto d = std::filesystem::temp_directory_path() /
                 ("loom_cuda_run_" + std::to_string(getpid()) + "_" + name);
  std::filesystem::remove_all(d);
  return d.string();
}

nlohmann::json train(const std::string& flags, const std::string& name) {
  const std::string dir = fresh_dir(name), log = dir + ".log";
  const testing::ShellOutput o = testing::run_shell(
      testing::loom_binary() +
      " train --model tiny-llama --synthetic --mbs 2 --gbs 8 --seq 64 --lr-decay-iters 40 "
      "--steps 40 --json --save-interval 5 --debug-nan-grad-at 25 --debug-loss-spike-at "
      "31,32,33:50 --save " + dir + " " + flags + " 2>" + log);
  const testing::ShellOutput err = testing::run_shell("tail -5 " + log);
  std::filesystem::remove_all(dir);
  std::filesystem::remove(log);
  EXPECT_EQ(o.exit_code, 0) << err.text;
  if (o.exit_code != 0) return nlohmann::json();
  return nlohmann::json::parse(o.text);
}

TEST(CudaRun, SpikeGuardSkipsAndRollsBackAsOnTheCpu) {
  LOOM_REQUIRE_GPU();
  const nlohmann::json cpu = train("--threads 2", "cpu");
  ASSERT_FALSE(cpu.is_null());
  EXPECT_EQ(cpu.at("skipped"), 4);
  EXPECT_EQ(cpu.at("rollbacks"), 1);
  const auto want = cpu.at("losses").get<std::vector<double>>();
  ASSERT_EQ(want.size(), 43u);  // 40 iterations, 3 of them again after the rollback
  for (const char* flags : {"--backend cuda", "--backend cuda --recompute full"}) {
    SCOPED_TRACE(flags);
    const nlohmann::json gpu = train(flags, "gpu");
    ASSERT_FALSE(gpu.is_null());
    EXPECT_EQ(gpu.at("skipped"), 4);
    EXPECT_EQ(gpu.at("rollbacks"), 1);
    const auto got = gpu.at("losses").get<std::vector<double>>();
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_LT(std::abs(got[i] - want[i]) / want[i], 1e-2) << "record " << i;
  }
}

}  // namespace
}  // namespace loom::train
