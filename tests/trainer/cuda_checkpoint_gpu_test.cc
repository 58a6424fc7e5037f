// GPU checkpoints through the loop of `loom train --backend cuda` (trainer/cuda_run.h), in the
// CPU trainer's format (trainer_checkpoint.cc): 8 iterations straight against 4 saved, then
// resumed to 8 — the GPU continues bit for bit (losses and the saved weights); the same
// checkpoint resumed by the CPU trainer continues with the GPU's losses within the backends'
// 1e-2 bound (cuda_trainer_gpu_test.cc). And the errors of a resume that cannot work.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "checkpoint/checkpoint_store.h"
#include "core/model_io.h"
#include "tests/kernels/gpu_test_util.h"
#include "trainer/cuda_run.h"
#include "trainer/trainer.h"

namespace loom::train {
namespace {

namespace fs = std::filesystem;

TrainConfig config(int64_t steps) {
  TrainConfig c;
  c.model = "tiny-llama";
  c.synthetic = true;
  c.steps = steps;
  c.mbs = 2;
  c.gbs = 4;
  c.seq = 32;
  c.optim.lr = 3e-3;
  c.optim.warmup_steps = 2;
  c.optim.decay_steps = 8;  // the same schedule whether a run stops at 4 or 8
  c.guard.enabled = false;  // the GPU path does not run it; the CPU resume must not either
  c.quiet = true;
  return c;
}

fs::path fresh_dir(const char* name) {
  const fs::path d = fs::temp_directory_path() / (std::string("loom_cuda_ckpt_") + name);
  fs::remove_all(d);
  return d;
}

TEST(CudaCheckpoint, ResumeContinuesBitForBitAndOnTheCpu) {
  LOOM_REQUIRE_GPU();
  const fs::path gpu_dir = fresh_dir("gpu"), cpu_dir = fresh_dir("cpu"), straight_dir = fresh_dir("straight");

  TrainConfig straight_cfg = config(8);
  straight_cfg.save = straight_dir.string();  // the end-of-run checkpoint: weights to compare
  TrainSummary straight;
  ASSERT_TRUE(run_cuda_training(straight_cfg, "auto", nullptr, &straight).ok());
  ASSERT_EQ(straight.records.size(), 8u);

  TrainConfig first = config(4);
  first.save = gpu_dir.string();
  TrainSummary a;
  const core::Status sa = run_cuda_training(first, "auto", nullptr, &a);
  ASSERT_TRUE(sa.ok()) << sa.message();
  ASSERT_EQ(ckpt::list_checkpoints(first.save).size(), 1u);
  fs::copy(gpu_dir, cpu_dir, fs::copy_options::recursive);

  TrainConfig second = config(8);
  second.save = gpu_dir.string();
  second.resume = true;
  TrainSummary b;
  const core::Status sb = run_cuda_training(second, "auto", nullptr, &b);
  ASSERT_TRUE(sb.ok()) << sb.message();
  ASSERT_EQ(b.first_step, 5);
  ASSERT_EQ(b.records.size(), 4u);
  for (size_t i = 0; i < 4; ++i)
    EXPECT_EQ(b.records[i].loss, straight.records[4 + i].loss) << "iteration " << 5 + i;

  // The resumed run's final checkpoint holds the straight run's weights and moments, bit for bit.
  std::string origin;
  std::vector<std::string> warnings;
  auto resumed_state = load_trainer_state(second, core::load_model("tiny-llama").value(), &warnings, &origin);
  auto straight_state = load_trainer_state(straight_cfg, core::load_model("tiny-llama").value(), &warnings, &origin);
  ASSERT_TRUE(resumed_state.ok() && straight_state.ok());
  EXPECT_EQ(resumed_state->step, 8);
  EXPECT_EQ(resumed_state->params, straight_state->params);
  EXPECT_EQ(resumed_state->exp_avg_sq, straight_state->exp_avg_sq);
  EXPECT_EQ(resumed_state->adam_updates, straight_state->adam_updates);

  // The CPU trainer resumes the GPU's iteration-4 checkpoint.
  TrainConfig on_cpu = config(8);
  on_cpu.save = cpu_dir.string();
  on_cpu.resume = true;
  auto cpu = Trainer::create(on_cpu, nullptr);
  ASSERT_TRUE(cpu.ok()) << cpu.status().message();
  TrainSummary c;
  ASSERT_TRUE((*cpu)->run(&c).ok());
  ASSERT_EQ(c.first_step, 5);
  ASSERT_EQ(c.records.size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    const double gpu_loss = straight.records[4 + i].loss, cpu_loss = c.records[i].loss;
    EXPECT_LT(std::abs(gpu_loss - cpu_loss) / cpu_loss, 1e-2) << "iteration " << 5 + i;
  }
  for (const fs::path& d : {gpu_dir, cpu_dir, straight_dir}) fs::remove_all(d);
}

TEST(CudaCheckpoint, ResumeErrorsNameTheProblem) {
  TrainConfig no_dir = config(4);
  no_dir.resume = true;
  TrainSummary s;
  const core::Status e = run_cuda_training(no_dir, "auto", nullptr, &s);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.message().find("--resume needs --save DIR"), std::string::npos) << e.message();

  LOOM_REQUIRE_GPU();
  const fs::path dir = fresh_dir("seq");
  TrainConfig first = config(2);
  first.save = dir.string();
  ASSERT_TRUE(run_cuda_training(first, "auto", nullptr, &s).ok());
  TrainConfig other = config(4);
  other.save = dir.string();
  other.resume = true;
  other.seq = 64;
  const core::Status e2 = run_cuda_training(other, "auto", nullptr, &s);
  ASSERT_FALSE(e2.ok());
  EXPECT_NE(e2.message().find("was trained with --seq 32; this run asks for --seq 64"), std::string::npos)
      << e2.message();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace loom::train
