// Learning (label slow): a ~10 M-parameter Llama trained on `loom data synth` text -- a random
// Markov source whose entropy rate is known exactly -- reaches a validation loss within 5% of
// that rate, the best any model can do, in a bounded number of iterations.
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/shell_command.h"

namespace {

// Output and exit code; the iteration lines are echoed as progress.
std::string run(const std::string& cmd, int* code) {
  const loom::testing::ShellOutput o = loom::testing::run_shell(cmd + " 2>&1", /*echo=*/true);
  *code = o.exit_code;
  return o.text;
}

TEST(Learning, TenMillionParameterLlamaReachesTheEntropyRate) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / "loom_learning_test";
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string loom = LOOM_BINARY;
  const std::string prefix = (dir / "markov").string();
  int code = 0;
  run(loom + " data synth --vocab 64 --tokens 2000000 --seed 7 --concentration 0.5 --output " +
          prefix, &code);
  ASSERT_EQ(code, 0);
  const auto meta = nlohmann::json::parse(std::ifstream(prefix + ".json"));
  const double rate = meta.at("entropy_rate_nats").get<double>();
  const std::string model = std::string(LOOM_TEST_DATA_DIR) + "/models/llama-10m.yaml";
  run(loom + " train --model " + model + " --data " + prefix +
          " --steps 300 --mbs 8 --gbs 16 --seq 128 --lr 2e-3 --warmup 30 --save " +
          (dir / "ck").string() + " --eval-interval 50 --eval-iters 4", &code);
  ASSERT_EQ(code, 0);
  const std::string out = run(loom + " eval --checkpoint " + (dir / "ck").string() +
                                  " --data " + prefix + " --max-batches 32 --json", &code);
  ASSERT_EQ(code, 0) << out;
  const double loss = nlohmann::json::parse(out.substr(out.find("{\n")))["loss"].get<double>();
  std::printf("entropy rate %.4f nats/token, validation loss %.4f (%.2f%% above)\n", rate, loss,
              100.0 * (loss / rate - 1.0));
  EXPECT_GE(loss, rate * 0.98);  // no model beats the source (2%: finite validation sample)
  EXPECT_LE(loss, rate * 1.05);
  fs::remove_all(dir);
}

}  // namespace
