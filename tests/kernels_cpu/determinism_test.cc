// Determinism of the CPU operators' reductions: bias_bwd, embedding_bwd, rmsnorm_bwd,
// layernorm_bwd, attention_bwd and cross-entropy run with 1 and with 2 OpenMP threads must give
// bit-identical results (the reductions sum in a fixed order; parallel loops only split disjoint
// outputs). Sizes exceed kParallelMinElements (kernels/cpu/parallel.h) so the parallel paths run.
#include <gtest/gtest.h>
#include <omp.h>

#include <cstring>
#include <functional>
#include <vector>

#include "grad_check.h"
#include "kernels/cpu/cpu_ops.h"

namespace loom::kernels::cpu {
namespace {

// Runs `op` (which fills its outputs from scratch) with 1 and then 2 threads and compares.
void expect_same_bits_for_1_and_2_threads(const std::function<std::vector<float>()>& op) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const std::vector<float> one = op();
  omp_set_num_threads(2);
  const std::vector<float> two = op();
  omp_set_num_threads(saved);
  ASSERT_EQ(one.size(), two.size());
  EXPECT_EQ(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)), 0);
}

std::vector<float> random_floats(int64_t n, uint64_t seed) {
  return testing::cast_vector<float>(testing::random_vector(n, seed));
}

constexpr int64_t kN = 300, kC = 200;  // 60000 elements > kParallelMinElements (32768)

TEST(Determinism, BiasBwdIsBitIdenticalAcrossThreadCounts) {
  const auto dy = random_floats(kN * kC, 1);
  expect_same_bits_for_1_and_2_threads([&] {
    std::vector<float> db(kC, 0.0f);
    bias_bwd(kN, kC, dy.data(), db.data());
    return db;
  });
}

TEST(Determinism, EmbeddingBwdIsBitIdenticalAcrossThreadCounts) {
  const int64_t v = 17;
  std::vector<int32_t> tokens(kN);
  for (int64_t i = 0; i < kN; ++i) tokens[i] = static_cast<int32_t>((i * 7) % v);  // repeats
  const auto dout = random_floats(kN * kC, 2);
  expect_same_bits_for_1_and_2_threads([&] {
    std::vector<float> dtable(v * kC, 0.0f);
    embedding_bwd(kN, kC, tokens.data(), dout.data(), dtable.data());
    return dtable;
  });
}

TEST(Determinism, NormBwdIsBitIdenticalAcrossThreadCounts) {
  const auto x = random_floats(kN * kC, 3);
  const auto dy = random_floats(kN * kC, 4);
  const auto w = random_floats(kC, 5);
  const auto b = random_floats(kC, 6);
  expect_same_bits_for_1_and_2_threads([&] {
    std::vector<float> y(kN * kC), mean(kN), rstd(kN), dx(kN * kC), dw(kC, 0.0f), db(kC, 0.0f);
    layernorm_fwd(kN, kC, x.data(), w.data(), b.data(), 1e-5, y.data(), mean.data(), rstd.data());
    layernorm_bwd(kN, kC, dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(),
                  dw.data(), db.data());
    std::vector<float> all = dx;
    all.insert(all.end(), dw.begin(), dw.end());
    all.insert(all.end(), db.begin(), db.end());
    std::vector<float> dw_rms(kC, 0.0f);
    rmsnorm_fwd(kN, kC, x.data(), w.data(), 1e-5, y.data(), rstd.data());
    rmsnorm_bwd(kN, kC, dy.data(), x.data(), w.data(), rstd.data(), dx.data(), dw_rms.data());
    all.insert(all.end(), dx.begin(), dx.end());
    all.insert(all.end(), dw_rms.begin(), dw_rms.end());
    return all;
  });
}

TEST(Determinism, AttentionBwdIsBitIdenticalAcrossThreadCounts) {
  // B H T^2 D = 4.2M > kParallelMinAttentionWork, two (batch, kv head) units per thread.
  const int64_t b = 2, t = 128, hq = 4, hkv = 2, d = 32;
  const auto q = random_floats(b * t * hq * d, 7);
  const auto k = random_floats(b * t * hkv * d, 8);
  const auto v = random_floats(b * t * hkv * d, 9);
  const auto dout = random_floats(b * t * hq * d, 10);
  std::vector<float> slopes(hq);
  alibi_slopes(hq, slopes.data());
  expect_same_bits_for_1_and_2_threads([&] {
    std::vector<float> out(q.size()), lse(b * hq * t), dq(q.size()), dk(k.size()), dv(v.size());
    attention_fwd(b, t, hq, hkv, d, q.data(), k.data(), v.data(), slopes.data(), out.data(),
                  lse.data());
    attention_bwd(b, t, hq, hkv, d, q.data(), k.data(), v.data(), slopes.data(), out.data(),
                  lse.data(), dout.data(), dq.data(), dk.data(), dv.data());
    std::vector<float> all = out;
    for (const auto* part : {&lse, &dq, &dk, &dv})
      all.insert(all.end(), part->begin(), part->end());
    return all;
  });
}

TEST(Determinism, CrossEntropyIsBitIdenticalAcrossThreadCounts) {
  const int64_t n = 64, vp = 1024, v = 1000;
  const auto logits = random_floats(n * vp, 11);
  std::vector<int32_t> targets(n);
  for (int64_t i = 0; i < n; ++i) targets[i] = i % 5 == 0 ? -1 : static_cast<int32_t>(i * 13);
  expect_same_bits_for_1_and_2_threads([&] {
    std::vector<float> grad = logits, loss(n);
    const double total =
        cross_entropy_fwd_bwd(n, vp, v, targets.data(), grad.data(), 1.0f / n, loss.data());
    grad.insert(grad.end(), loss.begin(), loss.end());
    grad.push_back(static_cast<float>(total));
    return grad;
  });
}

}  // namespace
}  // namespace loom::kernels::cpu
