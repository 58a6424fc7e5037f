// Fused cross-entropy on the device (kernels/cuda/cross_entropy.h) against
// cpu::cross_entropy_fwd_bwd / cross_entropy_fwd in fp32 on the same bf16 logits: GPT-2's 50257
// vocabulary padded to 50304 (padding logits set to 50 so that counting them would dominate),
// ignored rows (target -1), a row with a +500 common offset, BLOOM's 250880 vocabulary, and a
// 37-word vocabulary smaller than the block (threads without columns). Checks losses, the
// in-place bf16 gradient, exact zeros in padding and ignored rows, that the forward-only variant
// leaves the logits untouched, and run-to-run determinism.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "gpu_test_util.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/cross_entropy.h"
#include "linalg_test_util.h"

namespace loom::kernels::cuda {
namespace {

using testing::download;
using testing::from_bf16;
using testing::to_bf16;
using testing::upload;
using testing::linalg::as_bf16;

using testing::linalg::kLogSumTol;

struct Case {
  int64_t n, vp, v;
  std::vector<int32_t> targets;
  float logit_scale;
  float grad_scale;
  uint64_t seed;
};

std::vector<int32_t> random_targets(int64_t n, int64_t v, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, static_cast<int32_t>(v - 1));
  std::vector<int32_t> t(static_cast<std::size_t>(n));
  for (auto& x : t) x = dist(rng);
  return t;
}

// bf16-valued logits N(0, scale), padding columns at 50, row 2 (if any) offset by +500 (bf16
// spacing 2 there: the kernel must subtract the max before exp, or exp overflows).
std::vector<float> make_logits(const Case& c) {
  auto x = testing::random_bf16_values(static_cast<std::size_t>(c.n * c.vp), c.seed, c.logit_scale);
  for (int64_t r = 0; r < c.n; ++r) {
    for (int64_t j = 0; j < c.vp; ++j) {
      float& e = x[static_cast<std::size_t>(r * c.vp + j)];
      if (j >= c.v)
        e = 50.0f;
      else if (r == 2)
        e = bf16_round(e + 500.0f);
    }
  }
  return x;
}

void expect_matches_cpu(const Case& c) {
  SCOPED_TRACE(::testing::Message() << "N=" << c.n << " Vp=" << c.vp << " V=" << c.v);
  const auto logits = make_logits(c);
  std::vector<float> cpu_grad = logits;
  std::vector<float> cpu_loss(static_cast<std::size_t>(c.n), -1.0f);
  cpu::cross_entropy_fwd_bwd(c.n, c.vp, c.v, c.targets.data(), cpu_grad.data(), c.grad_scale,
                             cpu_loss.data());

  const auto targets = upload(c.targets);
  const auto logits16 = to_bf16(logits);
  auto d_grad = upload(logits16);
  DeviceBuffer<float> d_loss(static_cast<std::size_t>(c.n));
  cross_entropy_fwd_bwd(c.n, c.vp, c.v, targets.get(), as_bf16(d_grad), c.grad_scale, d_loss.get(),
                        nullptr);
  const auto gpu_loss = download(d_loss);
  const auto gpu_grad16 = download(d_grad);

  // The losses against an fp64 reference: the CPU's fp32 sequential sum of S is itself off by
  // ~1e-4 relative at V = 250880 on the +500 row, whose bf16 logits lie on a grid of spacing 2
  // so that equal terms round alike (measured on the H200, 2026-11-28: CPU fp32 12.582767 vs
  // GPU 12.583886); the bound kLogSumTol is for the GPU's blocked sum against the exact value.
  const std::vector<double> logits64(logits.begin(), logits.end());
  std::vector<double> ref64(static_cast<std::size_t>(c.n), -1.0);
  cpu::cross_entropy_fwd<double>(c.n, c.vp, c.v, c.targets.data(), logits64.data(), ref64.data());
  const std::vector<float> ref_loss(ref64.begin(), ref64.end());
  EXPECT_TRUE(testing::all_close(gpu_loss, ref_loss, 1e-6, kLogSumTol));
  EXPECT_TRUE(testing::all_close(cpu_loss, ref_loss, 1e-6, 2e-3)) << "the CPU's own fp32 loss";
  for (int64_t r = 0; r < c.n; ++r) {
    if (c.targets[r] < 0) {
      EXPECT_EQ(gpu_loss[r], 0.0f) << "ignored row " << r;
    }
  }

  // Gradient: p = exp((x - max) - log S) has the relative error of S (kLogSumTol) before the
  // bf16 rounding, and the two roundings differ by at most one bf16 ulp (2^-7 relative). At
  // the target column, (p - 1) * scale may cancel: there the error is p * kLogSumTol * scale
  // <= kLogSumTol * scale absolute. Padding columns and ignored rows must be exactly 0 (zero
  // bound).
  std::vector<float> want(cpu_grad.size());
  std::vector<double> abs_bound(cpu_grad.size(), 0.0);
  for (std::size_t i = 0; i < cpu_grad.size(); ++i) want[i] = bf16_round(cpu_grad[i]);
  for (int64_t r = 0; r < c.n; ++r) {
    if (c.targets[r] >= 0) {
      abs_bound[static_cast<std::size_t>(r * c.vp + c.targets[r])] = kLogSumTol * c.grad_scale;
    }
  }
  EXPECT_TRUE(testing::linalg::within_bounds(from_bf16(gpu_grad16), want,
                                             testing::linalg::kBf16Ulp + kLogSumTol, abs_bound));

  // The same launch again gives the same bits (fixed-order block merge).
  auto d_again = upload(logits16);
  cross_entropy_fwd_bwd(c.n, c.vp, c.v, targets.get(), as_bf16(d_again), c.grad_scale, d_loss.get(),
                        nullptr);
  EXPECT_TRUE(testing::linalg::bitwise_equal(download(d_again), gpu_grad16));
  EXPECT_TRUE(testing::linalg::bitwise_equal(download(d_loss), gpu_loss));

  // Forward only: the same losses bit for bit (same pass 1), logits untouched; and the CPU's
  // forward agrees with its fwd_bwd.
  const auto d_logits = upload(logits16);
  DeviceBuffer<float> d_fwd_loss(static_cast<std::size_t>(c.n));
  cross_entropy_fwd(c.n, c.vp, c.v, targets.get(), as_bf16(d_logits), d_fwd_loss.get(), nullptr);
  EXPECT_TRUE(testing::linalg::bitwise_equal(download(d_fwd_loss), gpu_loss));
  EXPECT_TRUE(testing::linalg::bitwise_equal(download(d_logits), logits16));
}

TEST(CrossEntropyGpu, Gpt2VocabularyPaddedTo50304WithIgnoredRows) {
  LOOM_REQUIRE_GPU();
  Case c{16, 50304, 50257, random_targets(16, 50257, 1), 2.0f, 1.0f / 16, 2};
  c.targets[1] = -1;
  c.targets[5] = -1;
  c.targets[6] = 0;          // first column
  c.targets[7] = 50257 - 1;  // last unpadded column, next to the padding
  c.targets[15] = -1;
  expect_matches_cpu(c);
}

TEST(CrossEntropyGpu, Bloom250880Vocabulary) {
  LOOM_REQUIRE_GPU();
  Case c{4, 250880, 250880, random_targets(4, 250880, 3), 2.0f, 0.25f, 4};
  c.targets[3] = -1;
  expect_matches_cpu(c);
}

TEST(CrossEntropyGpu, VocabularySmallerThanTheBlock) {
  LOOM_REQUIRE_GPU();
  // 37 < 1024 threads: most threads hold the empty softmax state, which the merge must skip.
  Case c{6, 40, 37, {5, 36, -1, 0, 17, 5}, 3.0f, 1.0f, 5};
  expect_matches_cpu(c);
}

}  // namespace
}  // namespace loom::kernels::cuda
