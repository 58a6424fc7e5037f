// `loom data prepare | synth | info` end to end through the loom binary: --json fields, the
// files written, and bad input giving exit code 2 with a message naming the flag.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "tests/shell_command.h"

namespace {

struct Output {
  int exit_code = -1;
  std::string out, err;
};

std::string temp_path(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / ("loom_ds_cli_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

Output run_loom(const std::string& args) {
  const std::string err_path = temp_path("stderr.txt");
  const std::string cmd = std::string(LOOM_BINARY) + " " + args + " 2>" + err_path;
  const loom::testing::ShellOutput shell = loom::testing::run_shell(cmd);
  Output o;
  o.exit_code = shell.exit_code;
  o.out = shell.text;
  std::ifstream in(err_path);
  o.err.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return o;
}

TEST(DataCommand, SynthJsonThenInfo) {
  const std::string prefix = temp_path("synth");
  const Output o = run_loom("data synth --vocab 32 --tokens 4000 --seed 5 --doc-len 500 --output " +
                            prefix + " --json");
  ASSERT_EQ(o.exit_code, 0) << o.out << o.err;
  const auto j = nlohmann::json::parse(o.out);
  EXPECT_EQ(j["vocab"], 32);
  EXPECT_EQ(j["vocab_size"], 33);
  EXPECT_EQ(j["documents"], 8);
  EXPECT_GT(j["entropy_rate_nats"].get<double>(), 0.0);
  EXPECT_LT(j["entropy_rate_nats"].get<double>(), std::log(32.0));
  const Output info = run_loom("data info " + prefix + " --json");
  ASSERT_EQ(info.exit_code, 0) << info.out << info.err;
  const auto k = nlohmann::json::parse(info.out);
  EXPECT_EQ(k["documents"], 8);
  EXPECT_EQ(k["tokens"], 4008);
  EXPECT_EQ(k["dtype"], "uint16");
  EXPECT_EQ(k["max_token_id"], 32);
  EXPECT_EQ(k["metadata"]["entropy_rate_nats"], j["entropy_rate_nats"]);
  const Output table = run_loom("data info " + prefix);
  ASSERT_EQ(table.exit_code, 0);
  EXPECT_NE(table.out.find("entropy_rate_nats"), std::string::npos) << table.out;
}

TEST(DataCommand, PrepareTextWithTheByteTokenizer) {
  const std::string input = temp_path("doc.txt");
  std::ofstream(input) << "hello world";
  const Output o = run_loom("data prepare --input " + input + " --tokenizer byte --output " +
                            temp_path("prep") + " --json");
  ASSERT_EQ(o.exit_code, 0) << o.out << o.err;
  const auto j = nlohmann::json::parse(o.out);
  EXPECT_EQ(j["documents"], 1);
  EXPECT_EQ(j["tokens"], 12);
  EXPECT_EQ(j["dtype"], "uint16");
  EXPECT_EQ(j["eod_token"], 256);
  const Output table = run_loom("data prepare --input " + input + " --output " + temp_path("prep2"));
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("uint16"), std::string::npos) << table.out;
}

TEST(DataCommand, BadInputExitsWithCode2AndNamesTheFlag) {
  const std::string input = temp_path("doc2.txt");
  std::ofstream(input) << "x";
  Output o = run_loom("data prepare --input " + input + " --tokenizer wordpiece --output " +
                      temp_path("bad"));
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_NE(o.err.find("--tokenizer 'wordpiece'"), std::string::npos) << o.err;
  o = run_loom("data synth --vocab 8 --tokens 100 --concentration -1 --output " + temp_path("bad"));
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_NE(o.err.find("--concentration"), std::string::npos) << o.err;
  o = run_loom("data info " + temp_path("does_not_exist"));
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_NE(o.err.find("does_not_exist.idx"), std::string::npos) << o.err;
}

}  // namespace
