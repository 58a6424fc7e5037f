// The CUDA trainer against the CPU trainer: the tiny Llama, Qwen (QKV bias), BLOOM (ALiBi,
// LayerNorm, embedding norm, biases, tied head) and GPT (learned positions, GeLU, tied head)
// trained 50 steps from the same fp32 weights on the same batches, with the CPU trainer's
// iteration (trainer.cc: mean over the global batch, global-norm clipping, AdamW without decay
// on norms and biases). The GPU runs bf16 activations and GEMM inputs, the CPU fp32 throughout;
// the bound: every step's loss within 1e-2 relative. Every attention path (fused, GEMM,
// flash, and cuDNN's SDPA for the models without ALiBi when cuDNN loads). And the GPU iteration is
// deterministic: 30 straight steps equal 20 steps, a restore from their state and 10 more,
// bit for bit (what a resume from a checkpoint does).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "core/model_io.h"
#ifdef LOOM_WITH_CUDNN
#include "kernels/cuda/cudnn_api.h"
#endif
#include "tests/kernels/gpu_test_util.h"
#include "trainer/cuda_transformer.h"
#include "trainer/optimizer.h"
#include "trainer/transformer.h"

namespace loom::train {
namespace {

constexpr int64_t kMbs = 4, kMicro = 2, kSeq = 64;

std::vector<float> init_params(const ParamLayout& layout, int64_t layers, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<float> w(layout.total());
  const double std_dev = 0.02, residual = 0.02 / std::sqrt(2.0 * double(layers));
  for (const auto& p : layout.params()) {
    for (int64_t i = p.offset; i < p.offset + p.size; ++i) {
      switch (p.init) {
        case InitKind::kNormal: w[i] = float(std_dev * normal(rng)); break;
        case InitKind::kNormalResidual: w[i] = float(residual * normal(rng)); break;
        case InitKind::kOnes: w[i] = 1.f; break;
        case InitKind::kZeros: w[i] = 0.f; break;
      }
    }
  }
  return w;
}

// A learnable stream: each token follows the previous by a fixed affine rule 80% of the time.
std::vector<int32_t> batch(int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(kMbs * (kSeq + 1));
  for (int64_t r = 0; r < kMbs; ++r) {
    int32_t prev = static_cast<int32_t>(rng() % vocab);
    for (int64_t i = 0; i <= kSeq; ++i) {
      t[r * (kSeq + 1) + i] = prev;
      prev = rng() % 10 < 8 ? static_cast<int32_t>((prev * 7 + 3) % vocab)
                            : static_cast<int32_t>(rng() % vocab);
    }
  }
  return t;
}

std::vector<std::vector<int32_t>> step_batches(int64_t vocab, int64_t step) {
  std::vector<std::vector<int32_t>> out;
  for (int64_t m = 0; m < kMicro; ++m) out.push_back(batch(vocab, 1000 * step + m));
  return out;
}

OptimizerConfig optimizer() {
  OptimizerConfig c;
  c.lr = 3e-3;
  c.warmup_steps = 5;
  c.decay_steps = 50;
  return c;
}

TEST(CudaTrainer, FiftyStepsTrackTheCpuTrainer) {
  LOOM_REQUIRE_GPU();
  using Attention = CudaTransformer::Attention;
  std::string no_cudnn;
#ifdef LOOM_WITH_CUDNN
  kernels::cuda::cudnn_api(&no_cudnn);
#else
  no_cudnn = "built without cuDNN";
#endif
  if (!no_cudnn.empty()) std::printf("cuDNN attention not run: %s\n", no_cudnn.c_str());
  for (const Attention attention :
       {Attention::kFused, Attention::kGemm, Attention::kFlash, Attention::kCudnn})
  for (const char* name : {"tiny-llama", "tiny-qwen", "tiny-bloom", "tiny-gpt"}) {
    const std::string path = std::string(CudaTransformer::attention_name(attention)) + " attention";
    SCOPED_TRACE(::testing::Message() << name << ", " << path);
    const core::ModelSpec spec = core::load_model(name).value();
    if (attention == Attention::kCudnn &&
        (!no_cudnn.empty() || spec.position == core::PositionKind::kAlibi))
      continue;  // ALiBi: cuDNN's graphs here are causal only (checked below)
    const OptimizerConfig cfg = optimizer();
    Transformer<float> cpu(spec, core::Recompute::kNone);
    AdamW cpu_opt(cpu.layout(), cfg);
    std::vector<float> params = init_params(cpu.layout(), spec.num_layers, 42);
    std::vector<float> grads(params.size());
    auto model = CudaTransformer::create(spec, core::Recompute::kNone, attention);
    ASSERT_TRUE(model.ok()) << model.status().message();
    CudaTrainer gpu(std::move(model).value(), cfg, params);

    double worst = 0, first = 0, last = 0;
    for (int64_t step = 1; step <= 50; ++step) {
      const auto mbs = step_batches(spec.vocab_size, step);
      const double lr = learning_rate(cfg, step);
      // CPU iteration (trainer.cc).
      std::fill(grads.begin(), grads.end(), 0.f);
      const double tokens = double(kMicro * kMbs * kSeq);
      double sum = 0;
      for (const auto& b : mbs)
        sum += cpu.forward_backward(params.data(), grads.data(), b.data(), kMbs, kSeq,
                                    float(1.0 / tokens));
      const double gnorm = AdamW::grad_norm(grads.data(), int64_t(grads.size()));
      const double coef = cfg.clip_grad > 0 && gnorm > cfg.clip_grad ? cfg.clip_grad / (gnorm + 1e-6) : 1.0;
      cpu_opt.update(params.data(), grads.data(), lr, coef);
      const double cpu_loss = sum / tokens;
      // GPU iteration.
      const CudaTrainer::Step g = gpu.train_step(mbs, kMbs, kSeq, lr);
      const double rel = std::abs(g.loss - cpu_loss) / cpu_loss;
      worst = std::max(worst, rel);
      if (step == 1) first = cpu_loss;
      last = cpu_loss;
      EXPECT_LT(rel, 1e-2) << "step " << step << ": gpu " << g.loss << " cpu " << cpu_loss;
      EXPECT_NEAR(g.grad_norm, gnorm, 0.1 * gnorm) << "step " << step;
    }
    std::printf("[ %s, %s ] loss %.4f -> %.4f over 50 steps; worst |gpu - cpu| / cpu = %.2e\n",
                name, path.c_str(), first, last, worst);
    EXPECT_LT(last, first) << "the model should learn from the affine stream";
  }
}

TEST(CudaTrainer, RestoreContinuesBitForBit) {
  LOOM_REQUIRE_GPU();
  const core::ModelSpec spec = core::load_model("tiny-llama").value();
  const OptimizerConfig cfg = optimizer();
  const std::vector<float> init = init_params(ParamLayout(spec), spec.num_layers, 7);
  auto make = [&] {
    auto m = CudaTransformer::create(spec, core::Recompute::kNone);
    EXPECT_TRUE(m.ok());
    return std::make_unique<CudaTrainer>(std::move(m).value(), cfg, init);
  };
  auto straight = make();
  std::vector<double> losses;
  for (int64_t step = 1; step <= 30; ++step)
    losses.push_back(straight->train_step(step_batches(spec.vocab_size, step), kMbs, kSeq,
                                          learning_rate(cfg, step)).loss);
  auto first = make();
  for (int64_t step = 1; step <= 20; ++step)
    first->train_step(step_batches(spec.vocab_size, step), kMbs, kSeq, learning_rate(cfg, step));
  auto resumed = make();
  resumed->restore(first->params(), first->exp_avg(), first->exp_avg_sq(), first->updates());
  for (int64_t step = 21; step <= 30; ++step) {
    const double l = resumed->train_step(step_batches(spec.vocab_size, step), kMbs, kSeq,
                                         learning_rate(cfg, step)).loss;
    EXPECT_EQ(l, losses[step - 1]) << "step " << step;
  }
  EXPECT_EQ(resumed->params(), straight->params());
  EXPECT_EQ(resumed->exp_avg_sq(), straight->exp_avg_sq());
}

// Selective recompute reruns the attention from the kept q, k, v and full recompute reruns the
// block from its kept input; the reruns are the forward's own kernels on the same inputs, so
// training is bit-for-bit the same as keeping everything, with less activation memory.
TEST(CudaTrainer, RecomputeTrainsBitForBitAsKeepingEverything) {
  LOOM_REQUIRE_GPU();
  using Attention = CudaTransformer::Attention;
  for (const char* name : {"tiny-llama", "tiny-bloom"}) {
    SCOPED_TRACE(name);
    const core::ModelSpec spec = core::load_model(name).value();
    const OptimizerConfig cfg = optimizer();
    struct Run {
      std::vector<double> losses, norms;
      std::vector<float> params;
      int64_t activation_bytes = 0;
    };
    auto train = [&](core::Recompute r) {
      auto model = CudaTransformer::create(spec, r, Attention::kFused);
      EXPECT_TRUE(model.ok()) << model.status().message();
      const ParamLayout layout(spec);
      CudaTrainer gpu(std::move(model).value(), cfg, init_params(layout, spec.num_layers, 7));
      Run run;
      for (int64_t step = 1; step <= 10; ++step) {
        const CudaTrainer::Step g =
            gpu.train_step(step_batches(spec.vocab_size, step), kMbs, kSeq, learning_rate(cfg, step));
        run.losses.push_back(g.loss);
        run.norms.push_back(g.grad_norm);
      }
      run.params = gpu.params();
      run.activation_bytes = gpu.activation_bytes();
      return run;
    };
    const Run none = train(core::Recompute::kNone);
    const Run selective = train(core::Recompute::kSelective);
    const Run full = train(core::Recompute::kFull);
    for (const Run* r : {&selective, &full}) {
      EXPECT_EQ(r->losses, none.losses);
      EXPECT_EQ(r->norms, none.norms);
      EXPECT_TRUE(r->params == none.params) << "final weights differ";
    }
    EXPECT_LT(selective.activation_bytes, none.activation_bytes);
    EXPECT_LT(full.activation_bytes, selective.activation_bytes);
    std::printf("[ %s ] activation bytes: none %lld, selective %lld, full %lld\n", name,
                static_cast<long long>(none.activation_bytes),
                static_cast<long long>(selective.activation_bytes),
                static_cast<long long>(full.activation_bytes));
  }
}

TEST(CudaTrainer, AttentionChoiceIsCheckedByName) {
  core::ModelSpec spec = core::load_model("tiny-llama").value();
  using Attention = CudaTransformer::Attention;
  auto bad = CudaTransformer::parse_attention("fast");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'fast': expected auto, fused, gemm, flash or cudnn"),
            std::string::npos)
      << bad.status().message();
  EXPECT_EQ(CudaTransformer::parse_attention("gemm").value(), Attention::kGemm);
  EXPECT_EQ(CudaTransformer::parse_attention("cudnn").value(), Attention::kCudnn);
  auto alibi = CudaTransformer::create(core::load_model("tiny-bloom").value(), core::Recompute::kNone,
                                       Attention::kCudnn);
  ASSERT_FALSE(alibi.ok());
  EXPECT_NE(alibi.status().message().find("uses ALiBi"), std::string::npos) << alibi.status().message();
  core::ModelSpec wide = spec;
  wide.head_dim = 96;
  auto fused = CudaTransformer::create(wide, core::Recompute::kNone, Attention::kFused);
  ASSERT_FALSE(fused.ok());
  EXPECT_NE(fused.status().message().find("head dimension 96"), std::string::npos) << fused.status().message();
  // A model that is created allocates on the device.
  LOOM_REQUIRE_GPU();
  auto automatic = CudaTransformer::create(spec, core::Recompute::kNone, Attention::kAuto);
  ASSERT_TRUE(automatic.ok());
  EXPECT_EQ(automatic.value()->attention(), Attention::kFused);  // head dim 16
  auto fallback = CudaTransformer::create(wide, core::Recompute::kNone, Attention::kAuto);
  ASSERT_TRUE(fallback.ok());
  EXPECT_EQ(fallback.value()->attention(), Attention::kGemm);
}

}  // namespace
}  // namespace loom::train
