// `loom train --tp T --pp P --dp D --zero S` end to end (trainer/parallel_run.h) against the
// single-process trainer (`loom train --no-spike-guard`, trainer.cc) on the same seed: the
// per-iteration losses of 20 iterations agree within issue 7's 1e-5 relative -- with the ranks
// as threads of one process and, when Open MPI is installed, as 4 processes under mpirun (run
// as root with the flags that needs). Checkpoints (sharded, with a global manifest): saved under
// TP2 PP2 and resumed by the single-process trainer and under DP2 ZeRO-1, saved under DP4 ZeRO-3
// and resumed under TP2 PP2 and DP2 ZeRO-1; a sharded checkpoint exports and evaluates as the
// single-process one:
// the losses continue as if nothing changed; under mpirun, one rank of TP2 PP2 killed with
// SIGKILL after iteration 12 and the job resumed from iteration 10; a rank that stops answering
// makes every process exit with the timeout's error instead of hanging. And the launch errors:
// a process count that is not tp x pp x dp, options refused by name.
#include <unistd.h>

#include <array>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <cstdio>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/shell_command.h"

namespace {

using Output = loom::testing::ShellOutput;  // text: stdout only (the JSON); stderr to the log

Output run(const std::string& cmd) { return loom::testing::run_shell(cmd); }

// --lr-decay-iters 20: a run stopped at 10 has the same schedule as one of 20.
const std::string kTrain = std::string(LOOM_BINARY) +
                           " train --model tiny-bloom --synthetic --mbs 2 --gbs 8 --seq 32 "
                           "--threads 1 --lr-decay-iters 20 --json";

std::string fresh_dir(const std::string& name) {
  const auto d = std::filesystem::temp_directory_path() /
                 ("loom_parallel_run_" + std::to_string(getpid()) + "_" + name);
  std::filesystem::remove_all(d);
  return d.string();
}

std::vector<double> losses(const Output& o) {
  EXPECT_EQ(o.exit_code, 0) << o.text;
  if (o.exit_code != 0) return {};
  return nlohmann::json::parse(o.text).at("losses").get<std::vector<double>>();
}

// got: iterations first..20; want: iterations 1..20.
void expect_close(const std::vector<double>& got, const std::vector<double>& want, size_t first = 1) {
  ASSERT_EQ(want.size(), 20u);
  ASSERT_EQ(got.size(), 21 - first);
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_LT(std::abs(got[i] - want[first - 1 + i]) / want[first - 1 + i], 1e-5)
        << "iteration " << first + i;
}

TEST(ParallelRun, ThreadRanksMatchTheSingleProcessTrainer) {
  const std::vector<double> single = losses(run(kTrain + " --steps 20 --no-spike-guard"));
  expect_close(losses(run(kTrain + " --steps 20 --dp 2 --zero 2")), single);
  expect_close(losses(run(kTrain + " --steps 20 --dp 4 --zero 1")), single);
  expect_close(losses(run(kTrain + " --steps 20 --tp 2 --pp 2")), single);
  expect_close(losses(run(kTrain + " --steps 20 --tp 2 --dp 2 --zero 1")), single);
}

TEST(ParallelRun, CheckpointsReshardAcrossLayouts) {
  const std::vector<double> single = losses(run(kTrain + " --steps 20 --no-spike-guard"));
  const std::string dir = fresh_dir("reshard"), copy = fresh_dir("reshard_copy");
  ASSERT_EQ(run(kTrain + " --steps 10 --tp 2 --pp 2 --save " + dir).exit_code, 0);
  std::filesystem::copy(dir, copy, std::filesystem::copy_options::recursive);
  expect_close(losses(run(kTrain + " --steps 20 --dp 2 --zero 1 --resume --save " + dir)), single, 11);
  expect_close(losses(run(kTrain + " --steps 20 --no-spike-guard --resume --save " + copy)), single, 11);
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(copy);
  // ... and back: DP4 ZeRO-3 shards into TP2 PP2 ones and into DP2 ZeRO-1 ones.
  ASSERT_EQ(run(kTrain + " --steps 10 --dp 4 --zero 3 --save " + dir).exit_code, 0);
  std::filesystem::copy(dir, copy, std::filesystem::copy_options::recursive);
  expect_close(losses(run(kTrain + " --steps 20 --tp 2 --pp 2 --resume --save " + dir)), single, 11);
  expect_close(losses(run(kTrain + " --steps 20 --dp 2 --zero 1 --resume --save " + copy)), single, 11);
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(copy);
}

// A sharded checkpoint (PP2 of an untied Llama, whose arithmetic is the single process's bit for
// bit) exports to the same Hugging Face file and evaluates to the same loss as the
// single-process checkpoint of the same run.
TEST(ParallelRun, ShardedCheckpointsExportAndEvaluateAsTheSingleProcessOnes) {
  const std::string train = std::string(LOOM_BINARY) +
                            " train --model tiny-llama --synthetic --mbs 2 --gbs 8 --seq 32 "
                            "--threads 1 --steps 4 --no-spike-guard --json --save ";
  const std::string sharded = fresh_dir("sharded"), single = fresh_dir("single");
  ASSERT_EQ(run(train + sharded + " --pp 2").exit_code, 0);
  ASSERT_EQ(run(train + single).exit_code, 0);
  const std::string manifest = sharded + "/step-00000004/manifest.json";
  EXPECT_TRUE(std::filesystem::exists(sharded + "/step-00000004/model-t0-p1.safetensors"));
  std::ifstream in(manifest);
  const auto meta = nlohmann::json::parse(in).at("meta");
  EXPECT_EQ(meta.at("format"), "loom-train-sharded-v1");
  EXPECT_EQ(meta.at("tensors").at("lm_head.weight").at("pieces")[0].at("part"), "t0-p1");
  std::vector<std::string> exported;
  for (const std::string& dir : {sharded, single}) {
    const Output e = run(std::string(LOOM_BINARY) + " export-hf --checkpoint " + dir + " --out " +
                         dir + "/hf --json");
    ASSERT_EQ(e.exit_code, 0) << e.text;
    std::ifstream f(dir + "/hf/model.safetensors", std::ios::binary);
    exported.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  EXPECT_FALSE(exported[0].empty());
  EXPECT_EQ(exported[0], exported[1]);
  const std::string tokens = sharded + "_tokens.txt";
  std::ofstream(tokens) << "5 17 200 3 3 99 256 0 41 7 250 12 9 9 31 64 128 1";
  std::vector<double> eval_loss;
  for (const std::string& dir : {sharded, single}) {
    const Output e = run(std::string(LOOM_BINARY) + " eval --checkpoint " + dir + " --tokens " +
                         tokens + " --json");
    ASSERT_EQ(e.exit_code, 0) << e.text;
    eval_loss.push_back(nlohmann::json::parse(e.text).at("loss").get<double>());
  }
  EXPECT_EQ(eval_loss[0], eval_loss[1]);
  std::filesystem::remove_all(sharded);
  std::filesystem::remove_all(single);
  std::filesystem::remove(tokens);
}

// `loom train --trace` writes the measured iteration with the span and track names of
// `loom simulate --trace` for the same layout (one rank per pipeline stage).
TEST(ParallelRun, TraceHasTheSimulatorsNames) {
  const std::string dir = fresh_dir("trace");
  std::filesystem::create_directories(dir);
  const std::string layout = " --pp 2 --dp 2 --zero 1 --mbs 2 --gbs 8 --seq 32";
  ASSERT_EQ(run(std::string(LOOM_BINARY) + " train --model tiny-llama --synthetic --steps 2 " +
                "--threads 1 --no-spike-guard --trace " + dir + "/measured.json" + layout +
                " > /dev/null")
                .exit_code,
            0);
  ASSERT_EQ(run(std::string(LOOM_BINARY) + " simulate --model tiny-llama --cluster dgx-a100-80gb " +
                "--framework loom --gpus 4 --trace " + dir + "/simulated.json" + layout +
                " > /dev/null")
                .exit_code,
            0);
  std::vector<std::set<std::string>> names, tracks;
  for (const char* f : {"/measured.json", "/simulated.json"}) {
    std::ifstream in(dir + f);
    const auto events = nlohmann::json::parse(in).at("traceEvents");
    names.emplace_back();
    tracks.emplace_back();
    for (const auto& e : events) {
      if (e.at("ph") == "M") tracks.back().insert(e.at("args").at("name").get<std::string>());
      if (e.at("ph") == "X") {
        names.back().insert(e.at("name").get<std::string>());
        EXPECT_GE(e.at("dur").get<double>(), 0.0);
      }
    }
  }
  EXPECT_EQ(names[0], names[1]);
  EXPECT_EQ(tracks[0], tracks[1]);
  EXPECT_TRUE(names[0].count("forward mb1 chunk1")) << "micro-batch 1 on stage 1";
  std::filesystem::remove_all(dir);
}

TEST(ParallelRun, MpiRanksMatchTheSingleProcessTrainer) {
#ifndef LOOM_MPIEXEC
  GTEST_SKIP() << "built without MPI";
#else
  const std::string mpirun = std::string(LOOM_MPIEXEC) + " -np 4 --oversubscribe --allow-run-as-root ";
  const std::string train = kTrain + " --steps 20";
  const std::vector<double> single = losses(run(train + " --no-spike-guard"));
  expect_close(losses(run(mpirun + train + " --dp 4 --zero 1")), single);
  expect_close(losses(run(mpirun + train + " --dp 4 --zero 2")), single);
  expect_close(losses(run(mpirun + train + " --tp 2 --pp 2")), single);
  expect_close(losses(run(mpirun + train + " --tp 2 --pp 2 --sp")), single);
  expect_close(losses(run(mpirun + train + " --pp 2 --dp 2 --zero 1")), single);

  // kill -9 of one rank after iteration 12; checkpoints every 5: the job resumes from 10.
  const std::string dir = fresh_dir("killed");
  const Output killed =
      run(mpirun + train + " --tp 2 --pp 2 --save-interval 5 --debug-kill-at 12 --save " + dir);
  EXPECT_NE(killed.exit_code, 0);
  expect_close(losses(run(mpirun + train + " --tp 2 --pp 2 --resume --save " + dir)), single, 11);
  std::filesystem::remove_all(dir);

  // The last rank stops answering after iteration 3: every process ends within the timeout.
  const auto t0 = std::chrono::steady_clock::now();
  const Output hung = run(mpirun + train + " --dp 4 --zero 1 --debug-hang-at 3 --comm-timeout 2 2>&1");
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(hung.exit_code, 0);
  EXPECT_LT(waited, 30.0);
  EXPECT_NE(hung.text.find("(4 ranks): all_reduce timed out after 2.0 s"), std::string::npos)
      << hung.text;

  const Output wrong = run(mpirun + train + " --dp 2 2>&1");
  EXPECT_NE(wrong.exit_code, 0);
  EXPECT_NE(wrong.text.find("needs tp x pp x dp = 2 ranks but the launch (openmpi) started 4"),
            std::string::npos)
      << wrong.text;
#endif
}

// `loom plan --out` then `loom train --plan`: the plan's model and layout, as written (the same
// losses as the equivalent explicit flags; a tensor-parallel, a ZeRO-3 and a
// sequence-parallel plan too).
TEST(ParallelRun, TrainsAPlanFileAsWritten) {
  const std::string dir = fresh_dir("plan");
  std::filesystem::create_directories(dir);
  const std::string plan = dir + "/plan.yaml";
  const std::string search = std::string(LOOM_BINARY) +
                             " plan --model tiny-bloom --cluster dgx-a100-80gb --gpus 2 --gbs 8 "
                             "--seq 32 --constraint tp=1 --constraint pp=1 --constraint 'zero<=2'";
  ASSERT_EQ(run(search + " --out " + plan + " > /dev/null").exit_code, 0);
  const Output planned = run(std::string(LOOM_BINARY) + " train --plan " + plan +
                             " --synthetic --steps 5 --threads 1 --json");
  ASSERT_EQ(planned.exit_code, 0) << planned.text;
  const auto j = nlohmann::json::parse(planned.text);
  const int64_t dp = j.at("dp"), zero = j.at("zero"), mbs = j.at("config").at("mbs");
  EXPECT_EQ(dp, 2);
  const std::vector<double> explicit_flags = losses(run(
      std::string(LOOM_BINARY) + " train --model tiny-bloom --synthetic --steps 5 --threads 1 --json" +
      " --gbs 8 --seq 32 --mbs " + std::to_string(mbs) + " --dp 2 --zero " + std::to_string(zero)));
  EXPECT_EQ(j.at("losses").get<std::vector<double>>(), explicit_flags);

  const std::string plan2 = std::string(LOOM_BINARY) +
                            " plan --model tiny-bloom --cluster dgx-a100-80gb --gpus 2 --gbs 8 --seq 32 ";
  // A plan under `constraint` trains as written (its layout field `key` is `value`) and its
  // losses are the single-process trainer's within 1e-5.
  auto expect_plan_trains = [&](const std::string& constraint, const char* key,
                                const nlohmann::json& value) {
    SCOPED_TRACE(constraint);
    const std::string file = dir + "/" + key + ".yaml";
    ASSERT_EQ(run(plan2 + "--constraint " + constraint + " --out " + file + " > /dev/null").exit_code, 0);
    const Output o = run(std::string(LOOM_BINARY) + " train --plan " + file +
                         " --synthetic --steps 5 --threads 1 --json");
    ASSERT_EQ(o.exit_code, 0) << o.text;
    const auto pj = nlohmann::json::parse(o.text);
    EXPECT_EQ(pj.at(key), value);
    const std::vector<double> flags = losses(run(
        std::string(LOOM_BINARY) + " train --model tiny-bloom --synthetic --steps 5 --threads 1 --json" +
        " --gbs 8 --seq 32 --no-spike-guard --mbs " + std::to_string(int64_t(pj.at("config").at("mbs")))));
    const auto got = pj.at("losses").get<std::vector<double>>();
    ASSERT_EQ(got.size(), flags.size());
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_LT(std::abs(got[i] - flags[i]) / flags[i], 1e-5) << "iteration " << i + 1;
  };
  expect_plan_trains("tp=2", "tp", 2);
  expect_plan_trains("zero=3", "zero", 3);
  expect_plan_trains("sp=1", "sp", true);
  const Output twice = run(std::string(LOOM_BINARY) + " train --plan " + plan + " --mbs 1 --synthetic 2>&1");
  EXPECT_NE(twice.exit_code, 0);
  EXPECT_NE(twice.text.find("--mbs with --plan"), std::string::npos) << twice.text;
  std::filesystem::remove_all(dir);
}

// The spike guard and the validation loss on the parallel path, against the single-process
// trainer: a NaN gradient at iteration 25 is skipped; loss spikes at 31-33 are skipped and the
// third rolls back to the checkpoint of iteration 30, whose batches since are skipped (43
// iterations run for 40); every loss and the validation losses agree within 1e-5, on a
// pipeline, on ZeRO-3 and on sequence parallelism with ZeRO-1.
TEST(ParallelRun, SpikeGuardAndEvaluationActAsInTheSingleProcessTrainer) {
  const std::string train = std::string(LOOM_BINARY) +
                            " train --model tiny-bloom --synthetic --mbs 2 --gbs 8 --seq 32 "
                            "--threads 1 --lr-decay-iters 40 --steps 40 --json --save-interval 5 "
                            "--eval-interval 10 --debug-nan-grad-at 25 --debug-loss-spike-at "
                            "31,32,33:50 --save ";
  auto summary = [&](const std::string& layout) {
    const std::string dir = fresh_dir("guard");
    const Output o = run(train + dir + " " + layout + " 2>/dev/null");
    std::filesystem::remove_all(dir);
    EXPECT_EQ(o.exit_code, 0) << o.text;
    return o.exit_code == 0 ? nlohmann::json::parse(o.text) : nlohmann::json();
  };
  const nlohmann::json single = summary("");
  ASSERT_FALSE(single.is_null());
  EXPECT_EQ(single.at("skipped"), 4);
  EXPECT_EQ(single.at("rollbacks"), 1);
  const auto want = single.at("losses").get<std::vector<double>>();
  ASSERT_EQ(want.size(), 43u);
  for (const char* layout : {"--tp 2 --pp 2", "--dp 2 --zero 3", "--tp 2 --sp --dp 2 --zero 1"}) {
    SCOPED_TRACE(layout);
    const nlohmann::json j = summary(layout);
    ASSERT_FALSE(j.is_null());
    EXPECT_EQ(j.at("skipped"), 4);
    EXPECT_EQ(j.at("rollbacks"), 1);
    const auto got = j.at("losses").get<std::vector<double>>();
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_LT(std::abs(got[i] - want[i]) / want[i], 1e-5) << "record " << i;
    const double v = j.at("validation_loss"), w = single.at("validation_loss");
    EXPECT_LT(std::abs(v - w) / w, 1e-5);
  }
}

TEST(ParallelRun, RefusesWhatItDoesNotDoYet) {
  const Output o = run(kTrain + " --steps 2 --dp 2 --debug-nan-grad-at 1 --no-spike-guard 2>&1");
  EXPECT_NE(o.exit_code, 0);
  EXPECT_NE(o.text.find("--debug-nan-grad-at/--debug-loss-spike-at with --no-spike-guard: not "
                        "supported with --tp/--pp/--dp/--zero"),
            std::string::npos)
      << o.text;
  const Output h = run(kTrain + " --steps 2 --dp 2 --debug-hang-at 1 2>&1");
  EXPECT_NE(h.exit_code, 0);
  EXPECT_NE(h.text.find("run it under mpirun"), std::string::npos) << h.text;
  const Output z = run(kTrain + " --steps 2 --pp 2 --dp 2 --zero 3 2>&1");
  EXPECT_NE(z.exit_code, 0);
  EXPECT_NE(z.text.find("layout field 'zero' = 3"), std::string::npos) << z.text;
}

}  // namespace
