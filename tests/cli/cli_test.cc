// The loom executable end to end: bad input gets a message naming the field and the allowed
// values and a non-zero exit; --json output carries the stable field names later issues use.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>

#include "core/cluster_profile.h"
#include "tests/shell_command.h"

namespace {

using Output = loom::testing::ShellOutput;  // text: stdout + stderr

Output run_loom(const std::string& args) {
  return loom::testing::run_shell(std::string(LOOM_BINARY) + " " + args + " 2>&1");
}

const char* kBloom =
    "memory --model bloom-176b --cluster jean-zay-a100-80gb --framework megatron-deepspeed "
    "--gpus 384 --tp 4 --pp 12 --zero 1 --mbs 2 --gbs 2048 --seq 2048 --recompute full "
    "--partition-method embedding-as-layer";

TEST(Cli, MemoryJsonHasTheStableFields) {
  const Output o = run_loom(std::string(kBloom) + " --json");
  ASSERT_EQ(o.exit_code, 0) << o.text;
  const auto j = nlohmann::json::parse(o.text);
  EXPECT_TRUE(j["fits"].get<bool>());
  EXPECT_GT(j["peak_gib"].get<double>(), 10);
  ASSERT_EQ(j["per_stage"].size(), 12u);
  EXPECT_EQ(j["per_stage"][0]["holds"], "embedding + blocks 0-4");
  EXPECT_TRUE(j["per_stage"][0]["items"]["weights"].contains("bytes"));
  EXPECT_TRUE(j["per_stage"][0]["items"]["weights"].contains("gib"));
  EXPECT_GT(j["checkpoint"]["bytes"].get<double>(), 2e12);
  EXPECT_GT(j["checkpoint"]["write_time_s"].get<double>(), 0);
}

TEST(Cli, MemoryTableSaysWhatEachStageHolds) {
  const Output o = run_loom(kBloom);
  ASSERT_EQ(o.exit_code, 0) << o.text;
  EXPECT_NE(o.text.find("embedding + blocks 0-4"), std::string::npos) << o.text;
  EXPECT_NE(o.text.find("blocks 65-69 + LM head + loss"), std::string::npos);
  EXPECT_NE(o.text.find("fits"), std::string::npos);
}

TEST(Cli, UnknownPresetFailsWithTheAvailableNames) {
  const Output o = run_loom("memory --model llama-8b --cluster dgx-a100-80gb --gpus 8 --gbs 8");
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_NE(o.text.find("unknown model preset 'llama-8b'"), std::string::npos) << o.text;
  EXPECT_NE(o.text.find("llama-7b"), std::string::npos);
}

TEST(Cli, UnknownClusterFails) {
  const Output o = run_loom("memory --model llama-7b --cluster dgx-z100 --gpus 8 --gbs 8");
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_NE(o.text.find("unknown cluster profile 'dgx-z100'"), std::string::npos) << o.text;
}

TEST(Cli, ImpossibleLayoutFailsNamingTheField) {
  Output o = run_loom("memory --model llama-7b --cluster dgx-a100-80gb --gpus 8 --tp 3 --gbs 8");
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_NE(o.text.find("--tp 3"), std::string::npos) << o.text;
  o = run_loom("memory --model llama-7b --cluster dgx-a100-80gb --gpus 8 --gbs 12 --mbs 1");
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_NE(o.text.find("--gbs 12"), std::string::npos) << o.text;
  o = run_loom("memory --model llama-7b --cluster dgx-a100-80gb --gpus 8 --gbs 8 --recompute half");
  EXPECT_NE(o.exit_code, 0);
  EXPECT_NE(o.text.find("allowed: none, selective, full"), std::string::npos) << o.text;
  o = run_loom("memory --model llama-7b --cluster dgx-a100-80gb --gpus 8 --gbs 8 --framework jax");
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_NE(o.text.find("framework 'jax' is not known"), std::string::npos) << o.text;
}

TEST(Cli, MalformedModelFileFailsWithLine) {
  const std::string path = ::testing::TempDir() + "/bad_model.yaml";
  std::ofstream(path) << "name: bad\nnum_layers: [2\n";
  Output o = run_loom("memory --model " + path + " --cluster dgx-a100-80gb --gpus 8 --gbs 8");
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_NE(o.text.find("YAML syntax error"), std::string::npos) << o.text;
  const std::string typo = ::testing::TempDir() + "/typo_model.yaml";
  std::ofstream(typo) << "name: typo\nnum_layers: 2\nhidden_size: 64\nnum_heads: 4\n"
                         "ffn_hidden_size: 256\nvocab_size: 256\nmax_seq_len: 128\nnorm: rmsnorm\n"
                         "mlp: swiglu\nposition: rope\ntied: true\n";
  o = run_loom("memory --model " + typo + " --cluster dgx-a100-80gb --gpus 8 --gbs 8");
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_NE(o.text.find(":11: unknown key 'tied'"), std::string::npos) << o.text;
}

TEST(Cli, MissingFileFails) {
  const Output o = run_loom("memory --model /nonexistent/m.yaml --cluster dgx-a100-80gb --gpus 8 --gbs 8");
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_NE(o.text.find("does not exist"), std::string::npos) << o.text;
}

TEST(Cli, ListsModelsAndClusters) {
  Output o = run_loom("models --json");
  ASSERT_EQ(o.exit_code, 0) << o.text;
  EXPECT_GE(nlohmann::json::parse(o.text).size(), 27u);
  o = run_loom("clusters --json");
  ASSERT_EQ(o.exit_code, 0) << o.text;
  EXPECT_GE(nlohmann::json::parse(o.text).size(), 9u);
}

}  // namespace

namespace {

TEST(CliPlan, PlansWritesAPlanFileAndExportsIt) {
  const std::string plan = ::testing::TempDir() + "/cli_plan.yaml";
  Output o = run_loom("plan --model tiny-llama --cluster dgx-a100-80gb --gpus 8 --gbs 16 --seq 128 "
                      "--json --out " + plan);
  ASSERT_EQ(o.exit_code, 0) << o.text;
  const auto j = nlohmann::json::parse(o.text);
  EXPECT_GT(j["candidates"].get<int64_t>(), 0);
  EXPECT_GE(j["wall_s"].get<double>(), 0);
  ASSERT_FALSE(j["plans"].empty());
  o = run_loom("export --plan " + plan + " --format megatron");
  ASSERT_EQ(o.exit_code, 0) << o.text;
  EXPECT_NE(o.text.find("--tensor-model-parallel-size"), std::string::npos);
  EXPECT_NE(o.text.find("--global-batch-size 16"), std::string::npos) << o.text;
}

TEST(CliPlan, ImpossibleRequestSaysWhy) {
  const Output o = run_loom("plan --model tiny-llama --cluster dgx-a100-80gb --gpus 7 --gbs 16 --seq 128");
  EXPECT_NE(o.exit_code, 0);
  EXPECT_NE(o.text.find("no layout of tiny-llama runs on 7"), std::string::npos) << o.text;
  EXPECT_NE(o.text.find("global batch not divisible by dp"), std::string::npos) << o.text;
}

TEST(CliBudget, ReportsDaysGoodputAndCostPerGpuCount) {
  const Output o = run_loom("budget --model tiny-llama --cluster dgx-a100-80gb --tokens 1B "
                            "--gpus 8,16 --gbs 64 --seq 128 --json");
  ASSERT_EQ(o.exit_code, 0) << o.text;
  const auto j = nlohmann::json::parse(o.text);
  ASSERT_EQ(j["rows"].size(), 2u);
  for (const auto& row : j["rows"]) {
    for (const char* key : {"gpus", "plan", "tokens_per_s", "days_ideal", "days_to_train",
                            "gpu_hours", "cost", "checkpoint_interval_s", "goodput"}) {
      EXPECT_TRUE(row.contains(key)) << key;
    }
    EXPECT_GE(row["days_to_train"].get<double>(), row["days_ideal"].get<double>());
  }
  const Output bad = run_loom("budget --model tiny-llama --cluster dgx-a100-80gb --tokens lots");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.text.find("--tokens"), std::string::npos) << bad.text;
}

// Narayanan et al. 2021 (SC21), Sec. 5.1: GPT-3 175B on 300 B tokens with 1024 A100s at their
// measured 140 TFLOP/s per GPU takes "about 34 days". Under their conditions (Megatron-LM of
// 2021: no flash attention, dropout 0.1, full recompute, TP 8 x PP 16) Loom's whole-run
// budget must land within 15% of it.
TEST(CliBudget, Gpt3On1024A100sTakesAbout34DaysUnderTheSc21Stack) {
  const Output o = run_loom(
      "budget --model gpt3-175b --cluster dgx-a100-80gb --gpus 1024 --gbs 1536 --seq 2048 "
      "--tokens 300B --framework megatron-2021 --constraint tp=8 pp=16 recompute=full vpp=1 "
      "--json");
  ASSERT_EQ(o.exit_code, 0) << o.text;
  const auto row = nlohmann::json::parse(o.text)["rows"][0];
  EXPECT_NEAR(row["days_to_train"].get<double>(), 34.0, 0.15 * 34.0);
  EXPECT_NE(row["plan"]["layout"].get<std::string>().find("tp8 pp16"), std::string::npos);
}

TEST(CliFramework, Megatron2021RejectsFeaturesOf2022) {
  const std::string base =
      "simulate --model gpt3-175b --cluster dgx-a100-80gb --framework megatron-2021 --gpus 1024 "
      "--tp 8 --pp 16 --gbs 1536 --seq 2048 ";
  Output o = run_loom(base + "--sp");
  EXPECT_NE(o.exit_code, 0);
  EXPECT_NE(o.text.find("megatron-2021 has no sequence parallelism"), std::string::npos) << o.text;
  o = run_loom(base + "--zero 1");
  EXPECT_NE(o.exit_code, 0);
  EXPECT_NE(o.text.find("no distributed optimizer"), std::string::npos) << o.text;
  o = run_loom(base + "--recompute full");
  EXPECT_EQ(o.exit_code, 0) << o.text;
}

// `loom calibrate` writes a profile that loads and differs from its source only in the
// calibrated values; bad input names the file or the value and writes nothing.
TEST(CliCalibrate, WritesALoadableProfileAndRejectsBadInput) {
  const std::string meas =
      std::string(LOOM_TEST_DATA_DIR) + "/calibration/h200-torch-reference-2026-11-28.json";
  const std::string out = ::testing::TempDir() + "loom-calibrated-h200.yaml";
  std::remove(out.c_str());
  Output o = run_loom("calibrate --cluster h200-1gpu --measurements " + meas + " --out " + out +
                      " --name h200-test --json");
  ASSERT_EQ(o.exit_code, 0) << o.text;
  const auto j = nlohmann::json::parse(o.text);
  EXPECT_EQ(j["name"], "h200-test");
  EXPECT_NEAR(j["fields"]["memory_efficiency"]["after"].get<double>(), 0.89, 0.001);
  o = run_loom("simulate --model llama-1.3b --cluster " + out +
               " --framework loom --gpus 1 --mbs 8 --gbs 16 --seq 2048 --json");
  ASSERT_EQ(o.exit_code, 0) << o.text;
  EXPECT_EQ(nlohmann::json::parse(o.text)["cluster"], "h200-test");

  o = run_loom("calibrate --cluster h200-1gpu --measurements /nonexistent.json --out " + out + "2");
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_NE(o.text.find("'/nonexistent.json': cannot open"), std::string::npos) << o.text;
  o = run_loom("calibrate --cluster h200-1gpu --measurements " + meas +
               " --attention-backend xformers --out " + out + "2");
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_NE(o.text.find("expected default, flash or cudnn"), std::string::npos) << o.text;
  std::ifstream none(out + "2");
  EXPECT_FALSE(none.good());
}

// `loom calibrate --measure` times Loom's CPU kernels over the shapes the simulator prices for
// a model, fits the CPU profile (efficiencies in (0, 1], the fitted GEMM model within 50% of the
// measured times at the median), and writes a profile that simulates; GPU profiles and missing
// inputs are refused by name.
TEST(CliCalibrate, MeasuresTheCpuKernelsAndFitsTheCpuProfile) {
  const std::string out = ::testing::TempDir() + "loom-local-cpu-measured.yaml";
  std::remove(out.c_str());
  Output o = run_loom("calibrate --cluster local-cpu --measure --model tiny-llama --mbs 2 --seq 64 "
                      "--name local-test --json --out " + out);
  ASSERT_EQ(o.exit_code, 0) << o.text;
  const auto j = nlohmann::json::parse(o.text);
  EXPECT_GE(j["gemm"]["samples"].get<int>(), 10);
  // The fit minimises the sum of squared log errors (simulator/calibration.cc: a 0.005 grid,
  // then golden-section), so that sum cannot exceed the profile's beyond the grid's resolution
  // (0.1% here). The median is not what it minimises, and on this shared, noisy 2-core VM it
  // ranges 0.14-0.56 after the fit: a sanity bound only, not a speed claim.
  double sse_before = 0, sse_after = 0;
  for (const auto& row : j["gemm_rows"]) {
    const double m = row["measured_s"];
    sse_before += std::pow(std::log(row["predicted_before_s"].get<double>() / m), 2);
    sse_after += std::pow(std::log(row["predicted_after_s"].get<double>() / m), 2);
  }
  EXPECT_LE(sse_after, sse_before * 1.001);
  EXPECT_LT(j["gemm"]["median_error_after"].get<double>(), 0.75);
  for (const char* f : {"attention_fwd_efficiency", "attention_bwd_efficiency", "memory_efficiency"}) {
    const double after = j["fields"][f]["after"];
    EXPECT_GT(after, 0) << f;
    EXPECT_LE(after, 1) << f;
  }
  o = run_loom("simulate --model tiny-llama --cluster " + out +
               " --framework loom --gpus 1 --mbs 2 --gbs 4 --seq 64 --precision fp32 --json");
  ASSERT_EQ(o.exit_code, 0) << o.text;
  EXPECT_EQ(nlohmann::json::parse(o.text)["cluster"], "local-test");

  o = run_loom("calibrate --cluster h200-1gpu --measure --model tiny-llama --ranks 2");
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_NE(o.text.find("--ranks 2: splits a CPU into ranks; cluster 'h200-1gpu' is a gpu profile"),
            std::string::npos)
      << o.text;
  // A GPU profile times Loom's CUDA kernels: refused by name without CUDA or without a device
  // (with one, tests/cli/calibrate_gpu_test.cc runs it).
  o = run_loom("calibrate --cluster h200-1gpu --measure --model tiny-llama --out " +
               ::testing::TempDir() + "loom-h200-measured.yaml");
  if (o.exit_code != 0) {
    EXPECT_EQ(o.exit_code, 2);
    EXPECT_NE(o.text.find("Loom's CUDA kernels"), std::string::npos) << o.text;
  }
  o = run_loom("calibrate --cluster local-cpu --measure");
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_NE(o.text.find("--measure needs --model"), std::string::npos) << o.text;
  o = run_loom("calibrate --cluster local-cpu");
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_NE(o.text.find("give either --measurements FILE"), std::string::npos) << o.text;
}

// `loom calibrate --measure --ranks 2` describes this CPU as two devices (one per rank of
// `loom run`): half the peak and memory each, two per node, the thread communicator's
// all-reduce as the intra-node fabric; `loom run` then plans and trains two-rank layouts on it
// and reports every rank against its pipeline stage.
TEST(CliCalibrate, SplitsTheCpuIntoRanksForLoomRun) {
  const unsigned cores = std::thread::hardware_concurrency();
  if (cores < 2 || cores % 2 != 0) GTEST_SKIP() << cores << " cores: two ranks need an even count";
  const std::string out = ::testing::TempDir() + "loom-local-cpu-2ranks.yaml";
  std::remove(out.c_str());
  Output o = run_loom("calibrate --cluster local-cpu --measure --model tiny-llama --mbs 2 --seq 64 "
                      "--ranks 2 --name local-2 --json --out " + out);
  ASSERT_EQ(o.exit_code, 0) << o.text;
  auto j = nlohmann::json::parse(o.text);
  EXPECT_EQ(j["ranks"], 2);
  EXPECT_EQ(j["all_reduce"].size(), 4u);
  EXPECT_GT(j["intra_node"]["latency_us"].get<double>(), 0);
  EXPECT_GT(j["intra_node"]["bandwidth_gb_s"].get<double>(), 0);
  const auto whole = loom::core::load_cluster_profile("local-cpu").value();
  const auto split = loom::core::load_cluster_profile(out).value();
  EXPECT_EQ(split.gpus_per_node, 2);
  EXPECT_NEAR(split.device.peak_tflops_fp32, whole.device.peak_tflops_fp32 / 2, 1e-3);
  EXPECT_NEAR(split.device.memory_gib, whole.device.memory_gib / 2, 0.01);
  EXPECT_EQ(split.compute.sm_count, whole.compute.sm_count / 2);
  EXPECT_EQ(split.intra_node.collective_efficiency, 1.0);

  o = run_loom("run --model tiny-llama --cluster " + out +
               " --gpus 2 --gbs 4 --seq 64 --steps 2 --constraint pp=2 --json");
  ASSERT_EQ(o.exit_code, 0) << o.text;
  j = nlohmann::json::parse(o.text.substr(o.text.find("{\n")));
  ASSERT_EQ(j.at("ranks").size(), 2u);
  EXPECT_EQ(j["ranks"][0]["pipeline_stage"], 0);
  EXPECT_EQ(j["ranks"][1]["pipeline_stage"], 1);
  EXPECT_NE(j["ranks"][0]["predicted_peak_gib"], j["ranks"][1]["predicted_peak_gib"]);
  // Pipeline transfers happen and are timed on the compared stage's rank.
  EXPECT_GT(j.at("breakdown").at("pipeline transfers").at("measured_s").get<double>(), 0);

  o = run_loom("calibrate --cluster local-cpu --measure --model tiny-llama --ranks 3");
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_NE(o.text.find("--ranks 3: this machine has"), std::string::npos) << o.text;
  o = run_loom("calibrate --cluster " + out + " --measure --model tiny-llama --ranks 2");
  EXPECT_EQ(o.exit_code, 2);
  EXPECT_NE(o.text.find("already has 2 devices per node"), std::string::npos) << o.text;
}

// `loom run` plans within what the trainer runs, trains it and reports both sides: the JSON keys
// scripts read, finite positive figures on each side (their agreement is a report, measured on
// this machine in docs/validation/cpu-runs.md, not a unit-test assertion).
TEST(CliRun, PlansTrainsAndReportsPredictedAndMeasured) {
  const Output o = run_loom("run --model tiny-llama --cluster local-cpu --gbs 4 --seq 64 --steps 3 --json");
  ASSERT_EQ(o.exit_code, 0) << o.text;
  const auto j = nlohmann::json::parse(o.text.substr(o.text.find("{\n")));
  for (const char* k : {"predicted_step_time_s", "measured_step_time_s", "predicted_peak_gib",
                        "measured_peak_gib", "predicted_tokens_per_s", "measured_tokens_per_s"}) {
    EXPECT_GT(j.at(k).get<double>(), 0) << k;
  }
  EXPECT_NE(j.at("plan").get<std::string>().find("tp: 1"), std::string::npos);
  EXPECT_EQ(j.at("iterations"), 3);
  EXPECT_EQ(j.at("ranks").size(), 1u);
  // The last iteration by phase on both sides; one rank does all of it in compute.
  const auto& compute = j.at("breakdown").at("compute (TP collectives inside)");
  EXPECT_GT(compute.at("predicted_s").get<double>(), 0);
  EXPECT_GT(compute.at("measured_s").get<double>(), 0);
  EXPECT_EQ(j.at("breakdown").at("data-parallel reduction").at("measured_s").get<double>(), 0);
  const Output bad = run_loom("run --model tiny-llama --cluster local-cpu --gbs 4 --seq 64 --constraint tp=2");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.text.find("no layout the trainer runs fits"), std::string::npos) << bad.text;
  // Several GPUs of a GPU profile: the data-parallel plans of the CUDA trainer (tp 1, pp 1,
  // ZeRO-0), which a single process cannot train: refused by name without CUDA, without a
  // device, or for not being launched as one process per GPU.
  const Output gpus = run_loom("run --model tiny-llama --cluster dgx-h100-80gb --gpus 2 --gbs 4 --seq 64");
  EXPECT_EQ(gpus.exit_code, 2) << gpus.text;
  EXPECT_TRUE(gpus.text.find("built without CUDA") != std::string::npos ||
              (gpus.text.find("tp1 pp1 dp2 zero0") != std::string::npos &&
               (gpus.text.find("--backend cuda: no CUDA device") != std::string::npos ||
                gpus.text.find("runs one process per GPU, but the launch (single) started 1 "
                               "process") != std::string::npos)))
      << gpus.text;
}

// `loom devices` says what it finds, or why there is nothing: with CUDA, the cuDNN and NCCL it
// would use (or why not).
TEST(CliDevices, ListsDevicesAndTheLibrariesOrWhyNot) {
  const Output o = run_loom("devices --json");
  ASSERT_EQ(o.exit_code, 0) << o.text;
  const auto j = nlohmann::json::parse(o.text);
  if (!j.at("cuda_build").get<bool>()) {
    EXPECT_NE(j.at("no_device_reason").get<std::string>().find("built without CUDA"), std::string::npos);
    return;
  }
  EXPECT_FALSE(j.at("cudnn").get<std::string>().empty());
  EXPECT_FALSE(j.at("nccl").get<std::string>().empty());
  if (j.at("devices").empty()) EXPECT_FALSE(j.at("no_device_reason").get<std::string>().empty());
}

// Without a usable GPU, `--backend cuda` is a clear error naming why (a build without CUDA, or
// the driver's answer), exit code 2; with one, the run trains and the test has nothing to check.
TEST(CliTrain, CudaBackendWithoutADeviceIsAClearError) {
  const Output o = run_loom("train --backend cuda --model tiny-llama --synthetic --steps 1 --quiet");
  if (o.exit_code == 0) GTEST_SKIP() << "a CUDA device is present";
  EXPECT_EQ(o.exit_code, 2) << o.text;
  EXPECT_TRUE(o.text.find("--backend cuda: no CUDA device: ") != std::string::npos ||
              o.text.find("this build trains with: cpu (built without CUDA)") != std::string::npos)
      << o.text;
}

}  // namespace
