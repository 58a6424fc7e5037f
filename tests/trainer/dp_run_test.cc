// `loom train --dp N --zero S` end to end (trainer/dp_run.h) against the single-process trainer
// (`loom train --no-spike-guard`, trainer.cc) on the same seed: the per-iteration losses of 20
// iterations agree within issue 7's 1e-5 relative — with N ranks as threads of one process and,
// when Open MPI is installed, as 4 processes under mpirun (run as root with the flags that
// needs). And the launch errors: a process count that is not --dp, checkpoints refused by name.
#include <array>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

namespace {

struct Output {
  int exit_code = -1;
  std::string text;  // stdout only (the JSON); stderr goes to the test log
};

Output run(const std::string& cmd) {
  Output out;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return out;
  std::array<char, 4096> buf{};
  size_t n = 0;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) out.text.append(buf.data(), n);
  const int status = pclose(pipe);
  out.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

const std::string kTrain = std::string(LOOM_BINARY) +
                           " train --model tiny-bloom --synthetic --steps 20 --mbs 2 --gbs 8 "
                           "--seq 32 --threads 1 --json";

std::vector<double> losses(const Output& o) {
  EXPECT_EQ(o.exit_code, 0) << o.text;
  if (o.exit_code != 0) return {};
  return nlohmann::json::parse(o.text).at("losses").get<std::vector<double>>();
}

void expect_close(const std::vector<double>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), 20u);
  ASSERT_EQ(want.size(), 20u);
  for (size_t i = 0; i < want.size(); ++i)
    EXPECT_LT(std::abs(got[i] - want[i]) / want[i], 1e-5) << "iteration " << i + 1;
}

TEST(DpRun, ThreadRanksMatchTheSingleProcessTrainer) {
  const std::vector<double> single = losses(run(kTrain + " --no-spike-guard"));
  expect_close(losses(run(kTrain + " --dp 2 --zero 2")), single);
  expect_close(losses(run(kTrain + " --dp 4 --zero 1")), single);
}

TEST(DpRun, MpiRanksMatchTheSingleProcessTrainer) {
#ifndef LOOM_MPIEXEC
  GTEST_SKIP() << "built without MPI";
#else
  const std::string mpirun = std::string(LOOM_MPIEXEC) + " -np 4 --oversubscribe --allow-run-as-root ";
  const std::vector<double> single = losses(run(kTrain + " --no-spike-guard"));
  expect_close(losses(run(mpirun + kTrain + " --dp 4 --zero 1")), single);
  expect_close(losses(run(mpirun + kTrain + " --dp 4 --zero 2")), single);
  const Output wrong = run(mpirun + kTrain + " --dp 2 2>&1");
  EXPECT_NE(wrong.exit_code, 0);
  EXPECT_NE(wrong.text.find("--dp 2: the launch (openmpi) started 4 processes"), std::string::npos)
      << wrong.text;
#endif
}

TEST(DpRun, RefusesWhatItDoesNotDoYet) {
  const Output o = run(kTrain + " --dp 2 --zero 1 --save /tmp/loom_dp_never 2>&1");
  EXPECT_NE(o.exit_code, 0);
  EXPECT_NE(o.text.find("--save/--resume: not supported with --dp/--zero (sharded checkpoints"),
            std::string::npos)
      << o.text;
  const Output z = run(kTrain + " --dp 2 --zero 3 2>&1");
  EXPECT_NE(z.exit_code, 0);
  EXPECT_NE(z.text.find("--zero 3"), std::string::npos) << z.text;
}

}  // namespace
