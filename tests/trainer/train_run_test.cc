// `loom train` / `loom eval` / `loom export-hf` end to end on a tiny model: resume after
// kill -9 is bit-identical to an uninterrupted run (losses and final weights); the spike guard
// skips a NaN gradient and a 10x loss spike and rolls back; a corrupt newest checkpoint is
// refused in favour of the previous one; the Hugging Face export reproduces Loom's logits in
// an independent NumPy forward pass (scripts/hf_reference_forward.py); bad flags are named.
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/shell_command.h"

namespace {

namespace fs = std::filesystem;

using Output = loom::testing::ShellOutput;

Output run(const std::string& cmd) { return loom::testing::run_shell(cmd + " 2>&1"); }

// One thread per process: ctest runs tests in parallel, and OpenMP teams that spin-wait on an
// oversubscribed machine slow each other down by an order of magnitude.
Output loom(const std::string& args) {
  return run(std::string("OMP_NUM_THREADS=1 ") + LOOM_BINARY + " " + args);
}

class TrainRun : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("loom_train_test_" + std::to_string(getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string synth() {
    const Output o = loom("data synth --vocab 64 --tokens 60000 --seed 3 --output " +
                          path("synth"));
    EXPECT_EQ(o.exit_code, 0) << o.text;
    return path("synth");
  }
  fs::path dir_;
};

// step -> loss of the last occurrence of each step in a JSON-lines log.
std::map<int64_t, double> losses(const std::string& log) {
  std::map<int64_t, double> out;
  std::ifstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    out[j["step"].get<int64_t>()] = j["loss"].get<double>();
  }
  return out;
}

std::string read_bytes(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST_F(TrainRun, ResumeAfterKillNineIsBitIdentical) {
  const std::string data = synth();
  const std::string common = "train --model tiny-llama --data " + data +
                             " --steps 40 --mbs 2 --gbs 4 --seq 32 --lr 3e-3 --warmup 5 "
                             "--threads 1 --quiet --save-interval 20 ";
  const Output a = loom(common + "--save " + path("a") + " --log " + path("a.jsonl"));
  ASSERT_EQ(a.exit_code, 0) << a.text;
  const Output b1 = loom(common + "--save " + path("b") + " --log " + path("b.jsonl") +
                         " --debug-kill-at 27");
  ASSERT_TRUE(b1.killed) << b1.exit_code << " " << b1.text;
  const Output b2 = loom(common + "--save " + path("b") + " --log " + path("b.jsonl") +
                         " --resume");
  ASSERT_EQ(b2.exit_code, 0) << b2.text;
  EXPECT_NE(b2.text.find("resumed from"), std::string::npos) << b2.text;
  const auto la = losses(path("a.jsonl")), lb = losses(path("b.jsonl"));
  ASSERT_EQ(la.size(), 40u);
  ASSERT_EQ(lb.size(), 40u);
  for (const auto& [step, loss] : la) EXPECT_EQ(loss, lb.at(step)) << "iteration " << step;
  EXPECT_LT(la.at(40), la.at(1));  // it learns
  const std::string wa = read_bytes(path("a/step-00000040/model.safetensors"));
  ASSERT_FALSE(wa.empty());
  EXPECT_TRUE(wa == read_bytes(path("b/step-00000040/model.safetensors")))
      << "final weights differ";
  EXPECT_TRUE(read_bytes(path("a/step-00000040/optimizer.safetensors")) ==
              read_bytes(path("b/step-00000040/optimizer.safetensors")));
}

TEST_F(TrainRun, SpikeGuardSkipsNanAndSpikesThenRollsBack) {
  const std::string data = synth();
  const Output o = loom("train --model tiny-llama --data " + data +
                        " --steps 40 --mbs 2 --gbs 4 --seq 32 --lr 3e-3 --threads 1 --save " +
                        path("c") + " --save-interval 10 --log " + path("c.jsonl") +
                        " --debug-nan-grad-at 25 --debug-loss-spike-at 32,33,34:10 --json");
  ASSERT_EQ(o.exit_code, 0) << o.text;
  std::map<int64_t, std::string> events;
  std::ifstream in(path("c.jsonl"));
  std::string line;
  int64_t lines = 0;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    ++lines;
    if (j.contains("event")) events[j["step"].get<int64_t>()] += j["event"].get<std::string>();
  }
  EXPECT_NE(events[25].find("non-finite gradient"), std::string::npos) << events[25];
  EXPECT_NE(events[32].find("spike: loss"), std::string::npos) << events[32];
  EXPECT_NE(events[33].find("spike"), std::string::npos) << events[33];
  EXPECT_NE(events[34].find("rolled back from iteration 34 to 30"), std::string::npos)
      << events[34];
  EXPECT_EQ(lines, 44);  // 40 iterations + the 4 repeated after rolling back from 34 to 30
  const auto summary = nlohmann::json::parse(o.text.substr(o.text.find("{\n")));
  EXPECT_EQ(summary["rollbacks"].get<int>(), 1);
  EXPECT_EQ(summary["skipped"].get<int>(), 4);
  EXPECT_EQ(summary["last_step"].get<int>(), 40);
}

TEST_F(TrainRun, CorruptNewestCheckpointFallsBackToThePreviousOne) {
  const std::string data = synth();
  const Output o = loom("train --model tiny-bloom --data " + data +
                        " --steps 4 --mbs 1 --gbs 2 --seq 16 --quiet --save " + path("d") +
                        " --save-interval 2");
  ASSERT_EQ(o.exit_code, 0) << o.text;
  const std::string shard = path("d/step-00000004/model.safetensors");
  std::string bytes = read_bytes(shard);
  ASSERT_GT(bytes.size(), 1000u);
  bytes[bytes.size() - 7] ^= 0x5a;
  std::ofstream(shard, std::ios::binary | std::ios::trunc) << bytes;
  const Output e = loom("eval --checkpoint " + path("d") + " --data " + data + " --json");
  ASSERT_EQ(e.exit_code, 0) << e.text;
  EXPECT_NE(e.text.find("crc32c"), std::string::npos) << e.text;
  const auto j = nlohmann::json::parse(e.text.substr(e.text.find("{\n")));
  EXPECT_EQ(j["step"].get<int>(), 2);
  EXPECT_NEAR(std::exp(j["loss"].get<double>()), j["perplexity"].get<double>(), 1e-9);
  const Output bad = loom("eval --checkpoint " + path("d/step-00000004") + " --data " + data);
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.text.find("model.safetensors"), std::string::npos) << bad.text;
}

TEST_F(TrainRun, BadFlagsAreNamed) {
  Output o = loom("train --model tiny-llama --synthetic --mbs 2 --gbs 5");
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_NE(o.text.find("--gbs 5 is not a multiple of --mbs 2"), std::string::npos) << o.text;
  o = loom("train --model no-such-model --synthetic");
  EXPECT_EQ(o.exit_code, 2) << o.text;
  o = loom("train --model tiny-llama --data " + path("missing"));
  EXPECT_NE(o.exit_code, 0);
  EXPECT_NE(o.text.find("missing"), std::string::npos) << o.text;
  o = loom("train --model tiny-gpt --synthetic --seq 4096");
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_NE(o.text.find("learned positions"), std::string::npos) << o.text;
}

class HfExport : public TrainRun, public ::testing::WithParamInterface<const char*> {};

TEST_P(HfExport, NumpyReferenceReproducesLoomLogits) {
  if (!fs::exists("/usr/bin/python3") ||
      run("/usr/bin/python3 -c 'import numpy'").exit_code != 0) {
    GTEST_SKIP() << "/usr/bin/python3 with numpy is needed for the reference forward pass";
  }
  const std::string model = GetParam();
  Output o = loom("train --model " + model + " --synthetic --steps 3 --mbs 2 --gbs 2 --seq 16 "
                  "--lr 1e-2 --quiet --save " + path("ck"));
  ASSERT_EQ(o.exit_code, 0) << o.text;
  o = loom("export-hf --checkpoint " + path("ck") + " --out " + path("hf"));
  ASSERT_EQ(o.exit_code, 0) << o.text;
  std::ofstream(path("tokens.txt")) << "5 17 200 3 3 99 256 0 41 7 250 12";
  o = loom("eval --checkpoint " + path("ck") + " --tokens " + path("tokens.txt") +
           " --dump-logits " + path("loom.npy"));
  ASSERT_EQ(o.exit_code, 0) << o.text;
  o = run(std::string("/usr/bin/python3 ") + LOOM_SOURCE_DIR +
          "/scripts/hf_reference_forward.py --model " + path("hf") +
          " --tokens \"5 17 200 3 3 99 256 0 41 7 250 12\" --out " + path("ref.npy"));
  ASSERT_EQ(o.exit_code, 0) << o.text;
  o = run("/usr/bin/python3 -c \"import numpy as np; a=np.load('" + path("loom.npy") +
          "'); b=np.load('" + path("ref.npy") +
          "'); assert a.shape==b.shape, (a.shape,b.shape); "
          "print(float(np.abs(a-b).max()), float(np.abs(b).max()))\"");
  ASSERT_EQ(o.exit_code, 0) << o.text;
  double diff = 1, scale = 0;
  ASSERT_EQ(std::sscanf(o.text.c_str(), "%lf %lf", &diff, &scale), 2) << o.text;
  std::printf("%s: max |logit difference| %.3g (max |logit| %.3g)\n", model.c_str(), diff, scale);
  EXPECT_LT(diff, 1e-4) << model;
  EXPECT_GT(scale, 1e-3);  // not trivially zero
}

INSTANTIATE_TEST_SUITE_P(Families, HfExport,
                         ::testing::Values("tiny-llama", "tiny-qwen", "tiny-bloom"));

}  // namespace
