// launch_info_from_env() for torchrun, Open MPI, Slurm and no launcher, the precedence between
// them, and the errors for bad values (each naming the variable and the value).
#include "comm/launch_env.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace loom::comm {
namespace {

class LaunchEnv : public ::testing::Test {
 protected:
  static constexpr const char* kVars[] = {"RANK",
                                          "LOCAL_RANK",
                                          "WORLD_SIZE",
                                          "MASTER_ADDR",
                                          "MASTER_PORT",
                                          "OMPI_COMM_WORLD_RANK",
                                          "OMPI_COMM_WORLD_LOCAL_RANK",
                                          "OMPI_COMM_WORLD_SIZE",
                                          "SLURM_PROCID",
                                          "SLURM_LOCALID",
                                          "SLURM_NTASKS"};
  void SetUp() override { clear(); }
  void TearDown() override { clear(); }
  static void clear() {
    for (const char* v : kVars) unsetenv(v);
  }
  static void set(const char* name, const char* value) { setenv(name, value, 1); }
  static std::string error() {
    auto info = launch_info_from_env();
    return info.ok() ? "" : info.status().message();
  }
};

TEST_F(LaunchEnv, NoLauncherIsASingleProcess) {
  auto info = launch_info_from_env();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->source, "single");
  EXPECT_EQ(info->rank, 0);
  EXPECT_EQ(info->world_size, 1);
}

TEST_F(LaunchEnv, Torchrun) {
  set("RANK", "5");
  set("LOCAL_RANK", "1");
  set("WORLD_SIZE", "8");
  set("MASTER_ADDR", "node017");
  set("MASTER_PORT", "29500");
  auto info = launch_info_from_env();
  ASSERT_TRUE(info.ok()) << info.status().message();
  EXPECT_EQ(info->source, "torchrun");
  EXPECT_EQ(info->rank, 5);
  EXPECT_EQ(info->local_rank, 1);
  EXPECT_EQ(info->world_size, 8);
  EXPECT_EQ(info->master_addr, "node017");
  EXPECT_EQ(info->master_port, 29500);
}

TEST_F(LaunchEnv, OpenMpi) {
  set("OMPI_COMM_WORLD_RANK", "3");
  set("OMPI_COMM_WORLD_LOCAL_RANK", "3");
  set("OMPI_COMM_WORLD_SIZE", "4");
  auto info = launch_info_from_env();
  ASSERT_TRUE(info.ok()) << info.status().message();
  EXPECT_EQ(info->source, "openmpi");
  EXPECT_EQ(info->rank, 3);
  EXPECT_EQ(info->local_rank, 3);
  EXPECT_EQ(info->world_size, 4);
  EXPECT_EQ(info->master_addr, "");
}

TEST_F(LaunchEnv, Slurm) {
  set("SLURM_PROCID", "9");
  set("SLURM_LOCALID", "1");
  set("SLURM_NTASKS", "16");
  auto info = launch_info_from_env();
  ASSERT_TRUE(info.ok()) << info.status().message();
  EXPECT_EQ(info->source, "slurm");
  EXPECT_EQ(info->rank, 9);
  EXPECT_EQ(info->local_rank, 1);
  EXPECT_EQ(info->world_size, 16);
}

TEST_F(LaunchEnv, PrecedenceTorchrunThenOpenMpiThenSlurm) {
  set("SLURM_PROCID", "0");
  set("SLURM_NTASKS", "2");
  set("OMPI_COMM_WORLD_RANK", "1");
  set("OMPI_COMM_WORLD_SIZE", "2");
  EXPECT_EQ(launch_info_from_env()->source, "openmpi");
  set("RANK", "0");
  set("WORLD_SIZE", "1");
  EXPECT_EQ(launch_info_from_env()->source, "torchrun");
}

TEST_F(LaunchEnv, BadValuesNameTheVariableAndValue) {
  set("RANK", "two");
  set("WORLD_SIZE", "4");
  EXPECT_EQ(error(), "torchrun launch: RANK='two' is not a non-negative integer");
  set("RANK", "4");
  EXPECT_EQ(error(), "torchrun launch: RANK=4 is not below WORLD_SIZE=4");
  set("RANK", "1");
  set("MASTER_PORT", "70000");
  EXPECT_EQ(error(), "torchrun launch: MASTER_PORT=70000 is not a port (1..65535)");
  clear();
  set("OMPI_COMM_WORLD_RANK", "0");
  EXPECT_EQ(error(), "openmpi launch: OMPI_COMM_WORLD_SIZE is not set");
  set("OMPI_COMM_WORLD_SIZE", "-3");
  EXPECT_EQ(error(), "openmpi launch: OMPI_COMM_WORLD_SIZE='-3' is not a non-negative integer");
  set("OMPI_COMM_WORLD_SIZE", "0");
  EXPECT_EQ(error(), "openmpi launch: OMPI_COMM_WORLD_SIZE=0 (must be >= 1)");
  clear();
  set("SLURM_PROCID", "2");
  set("SLURM_LOCALID", "3");
  set("SLURM_NTASKS", "4");
  EXPECT_EQ(error(), "slurm launch: SLURM_LOCALID=3 exceeds SLURM_PROCID=2");
  set("SLURM_LOCALID", "1x");
  EXPECT_EQ(error(), "slurm launch: SLURM_LOCALID='1x' is not a non-negative integer");
}

}  // namespace
}  // namespace loom::comm
