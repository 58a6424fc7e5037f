// Data parallelism of the CUDA trainer (trainer/cuda_data_parallel.h). One rank through NCCL
// (--dp 1: the overlapped per-unit reductions, the watchdog's wait and the loss sum, on a
// one-rank group whose sums are exact) must train bit for bit as the one-GPU path. Two ranks
// (two GPUs, launched as torchrun launches them) must train as one GPU on the same global batch:
// the gradients of the two halves are summed in another order than one GPU's accumulation
// (fp32 sums of bf16 products, ~1e-7 relative), so the losses agree to 1e-4 relative over 10
// iterations, far inside the 1e-2 bound of the GPU-vs-CPU test. A launch of the wrong size is
// an error naming both counts.
#include <gtest/gtest.h>

#include <cuda_runtime.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/kernels/gpu_test_util.h"
#include "tests/shell_command.h"

namespace loom::train {
namespace {

const std::string kTrain = testing::loom_binary() +
                           " train --backend cuda --model tiny-llama --synthetic --mbs 2 --gbs 8 "
                           "--seq 64 --steps 10 --lr-decay-iters 10 --json";

std::vector<double> losses(const std::string& cmd) {
  const testing::ShellOutput o = testing::run_shell(cmd + " 2>/dev/null");
  EXPECT_EQ(o.exit_code, 0) << cmd;
  if (o.exit_code != 0) return {};
  return nlohmann::json::parse(o.text).at("losses").get<std::vector<double>>();
}

TEST(CudaDataParallel, OneRankThroughNcclTrainsBitForBitAsOneGpu) {
  LOOM_REQUIRE_GPU();
  const std::vector<double> one = losses(kTrain);
  ASSERT_EQ(one.size(), 10u);
  EXPECT_EQ(losses(kTrain + " --dp 1"), one);
  EXPECT_EQ(losses(kTrain + " --dp 1 --recompute full"), one);
}

TEST(CudaDataParallel, TwoGpusTrainAsOneOnTheSameGlobalBatch) {
  LOOM_REQUIRE_GPU();
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices < 2)
    GTEST_SKIP() << "needs 2 CUDA devices (NCCL refuses two ranks on one)";
  const std::vector<double> one = losses(kTrain);
  const std::string dir = ::testing::TempDir();
  const std::string env = "WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=" +
                          std::to_string(29500 + static_cast<int>(::getpid() % 1000)) + " ";
  const testing::ShellOutput o = testing::run_shell(
      env + "RANK=1 LOCAL_RANK=1 " + kTrain + " --dp 2 > " + dir + "dp_rank1.json 2>&1 & " + env +
      "RANK=0 LOCAL_RANK=0 " + kTrain + " --dp 2 2>/dev/null; rc=$?; wait $! || rc=1; exit $rc");
  ASSERT_EQ(o.exit_code, 0) << o.text;
  const std::vector<double> two = nlohmann::json::parse(o.text).at("losses").get<std::vector<double>>();
  ASSERT_EQ(two.size(), one.size());
  for (size_t i = 0; i < one.size(); ++i)
    EXPECT_LT(std::abs(two[i] - one[i]) / one[i], 1e-4) << "iteration " << i + 1;
  std::printf("two GPUs vs one, 10 iterations: first loss %.6f / %.6f, last %.6f / %.6f\n", two[0],
              one[0], two.back(), one.back());
}

TEST(CudaDataParallel, ALaunchOfTheWrongSizeIsAnErrorNamingBothCounts) {
  LOOM_REQUIRE_GPU();
  const testing::ShellOutput o = testing::run_shell(kTrain + " --dp 2 2>&1");
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_NE(o.text.find("--dp 2 with --backend cuda runs one process per GPU, but the launch "
                        "(single) started 1 process"),
            std::string::npos)
      << o.text;
  const testing::ShellOutput odd = testing::run_shell(kTrain + " --gbs 6 --dp 2 2>&1");
  EXPECT_EQ(odd.exit_code, 2);
  EXPECT_NE(odd.text.find("do not split evenly"), std::string::npos) << odd.text;
}

}  // namespace
}  // namespace loom::train
