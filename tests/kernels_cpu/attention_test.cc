// Tests of the flash-style causal attention (kernels/cpu/cpu_attention*.cc): out and lse against
// a naive softmax(QK^T / sqrt(D) + ALiBi + causal mask) V in fp64; dq, dk, dv against central
// finite differences in fp64 (< 1e-6) for MHA, GQA, ALiBi, MQA and D not a power of two, and
// fp32 analytic against fp64 analytic (< 1e-4); ALiBi slopes against hand-computed values.
// T = 35 or 70 spans several 32-row tiles, so the online-softmax rescaling is exercised.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "grad_check.h"
#include "kernels/cpu/cpu_ops.h"

namespace loom::kernels::cpu {
namespace {

using testing::OpRun;
using testing::Tensors;

struct AttnShape {
  int64_t b, t, hq, hkv, d;
  bool alibi;
};

std::vector<float> slopes_for(const AttnShape& s) {
  std::vector<float> slopes(s.hq);
  alibi_slopes(s.hq, slopes.data());
  return slopes;
}

template <typename T>
OpRun run_attention(const AttnShape& s, const Tensors& in, const std::vector<double>& r,
                    bool with_grads) {
  const auto q = testing::cast_vector<T>(in[0]);
  const auto k = testing::cast_vector<T>(in[1]);
  const auto v = testing::cast_vector<T>(in[2]);
  const std::vector<float> slopes = slopes_for(s);
  const float* alibi = s.alibi ? slopes.data() : nullptr;
  std::vector<T> out(q.size()), lse(s.b * s.hq * s.t);
  attention_fwd(s.b, s.t, s.hq, s.hkv, s.d, q.data(), k.data(), v.data(), alibi, out.data(),
                lse.data());
  OpRun run{testing::widen(out), {testing::widen(lse)}};
  if (!with_grads) return run;
  const auto dout = testing::cast_vector<T>(r);
  std::vector<T> dq(q.size()), dk(k.size()), dv(v.size());
  attention_bwd(s.b, s.t, s.hq, s.hkv, s.d, q.data(), k.data(), v.data(), alibi, out.data(),
                lse.data(), dout.data(), dq.data(), dk.data(), dv.data());
  run.grads = {testing::widen(dq), testing::widen(dk), testing::widen(dv)};
  return run;
}

Tensors random_qkv(const AttnShape& s, uint64_t seed) {
  // Range [-2, 2]: scores spread over a few units, so the softmax is far from uniform.
  return {testing::random_vector(s.b * s.t * s.hq * s.d, seed, -2.0, 2.0),
          testing::random_vector(s.b * s.t * s.hkv * s.d, seed + 1, -2.0, 2.0),
          testing::random_vector(s.b * s.t * s.hkv * s.d, seed + 2)};
}

// Naive reference: full score rows, explicit mask, two-pass softmax, all in fp64.
void naive_attention(const AttnShape& s, const Tensors& in, std::vector<double>& out,
                     std::vector<double>& lse) {
  const std::vector<float> slopes = slopes_for(s);
  out.assign(in[0].size(), 0.0);
  lse.assign(s.b * s.hq * s.t, 0.0);
  std::vector<double> scores(s.t);
  for (int64_t bb = 0; bb < s.b; ++bb) {
    for (int64_t h = 0; h < s.hq; ++h) {
      const int64_t kvh = h / (s.hq / s.hkv);
      for (int64_t i = 0; i < s.t; ++i) {
        const double* qi = &in[0][((bb * s.t + i) * s.hq + h) * s.d];
        double max = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < s.t; ++j) {
          const double* kj = &in[1][((bb * s.t + j) * s.hkv + kvh) * s.d];
          double dot = 0;
          for (int64_t e = 0; e < s.d; ++e) dot += qi[e] * kj[e];
          const double bias = s.alibi ? -static_cast<double>(slopes[h]) * (i - j) : 0.0;
          scores[j] = j <= i ? dot / std::sqrt(static_cast<double>(s.d)) + bias
                             : -std::numeric_limits<double>::infinity();
          max = std::max(max, scores[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j < s.t; ++j) sum += std::exp(scores[j] - max);
        double* oi = &out[((bb * s.t + i) * s.hq + h) * s.d];
        for (int64_t j = 0; j <= i; ++j) {
          const double p = std::exp(scores[j] - max) / sum;
          const double* vj = &in[2][((bb * s.t + j) * s.hkv + kvh) * s.d];
          for (int64_t e = 0; e < s.d; ++e) oi[e] += p * vj[e];
        }
        lse[(bb * s.hq + h) * s.t + i] = max + std::log(sum);
      }
    }
  }
}

TEST(Attention, ForwardMatchesNaiveSoftmaxReference) {
  for (const AttnShape s : {AttnShape{2, 70, 4, 2, 64, true}, AttnShape{1, 70, 3, 3, 24, false}}) {
    const Tensors in = testing::float_representable_all(random_qkv(s, 91));
    std::vector<double> ref_out, ref_lse;
    naive_attention(s, in, ref_out, ref_lse);
    const OpRun d = run_attention<double>(s, in, {}, false);
    const OpRun f = run_attention<float>(s, in, {}, false);
    EXPECT_LT(testing::max_rel_error(d.out, ref_out), testing::kDoubleFwdTol);
    EXPECT_LT(testing::max_rel_error(d.grads[0], ref_lse), testing::kDoubleFwdTol);
    const std::vector<double> fl{testing::max_rel_error(f.out, ref_out),
                                 testing::max_rel_error(f.grads[0], ref_lse)};
    testing::report("attention fp32 fwd out lse", fl);
    for (double e : fl) EXPECT_LT(e, testing::kFloatFwdTol);
  }
}

// Gradient checks of one configuration: fd64 for dq, dk, dv and fp32 against fp64.
void check_attention_grads(const AttnShape& s, const char* name, uint64_t seed) {
  const Tensors in = random_qkv(s, seed);
  const auto r = testing::random_vector(s.b * s.t * s.hq * s.d, seed + 7);
  auto run_d = [&](const Tensors& x, const std::vector<double>& rr, bool g) {
    return run_attention<double>(s, x, rr, g);
  };
  auto run_f = [&](const Tensors& x, const std::vector<double>& rr, bool g) {
    return run_attention<float>(s, x, rr, g);
  };
  const auto fd = testing::fd_errors(run_d, in, r);
  const auto fl = testing::float_errors(run_f, run_d, in, r);
  testing::report((std::string(name) + " fd64 dq dk dv").c_str(), fd);
  testing::report((std::string(name) + " fp32 out dq dk dv").c_str(), fl);
  for (double e : fd) EXPECT_LT(e, testing::kDoubleGradTol) << name;
  for (double e : fl) EXPECT_LT(e, testing::kFloatGradTol) << name;
}

TEST(Attention, MhaGradientsMatchFiniteDifferences) {
  check_attention_grads({2, 35, 2, 2, 8, false}, "attn mha", 100);
}

TEST(Attention, GqaGradientsMatchFiniteDifferences) {
  check_attention_grads({1, 35, 4, 2, 8, false}, "attn gqa", 200);
}

TEST(Attention, AlibiGradientsMatchFiniteDifferences) {
  check_attention_grads({1, 35, 4, 2, 8, true}, "attn alibi gqa", 300);
}

TEST(Attention, MqaWithOddHeadDimGradientsMatchFiniteDifferences) {
  check_attention_grads({1, 35, 3, 1, 5, true}, "attn mqa d=5", 400);
}

TEST(AlibiSlopes, PowerOfTwoHeadsAreGeometric) {
  // 8 heads: base 2^(-8/8) = 1/2, slopes 1/2, 1/4, ..., 1/256 (Press et al. 2022, section 3).
  std::vector<float> slopes(8);
  alibi_slopes(8, slopes.data());
  for (int i = 0; i < 8; ++i) EXPECT_EQ(slopes[i], std::ldexp(1.0f, -(i + 1))) << i;
}

TEST(AlibiSlopes, TwelveHeadsInterleaveTheSixteenHeadSequence) {
  // 12 heads: the 8-head slopes 2^-1..2^-8, then the odd powers 1, 3, 5, 7 of 2^(-4/8) = 2^-0.5
  // (build_alibi_tensor's extra_base): 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5.
  const double expected[12] = {0.5,        0.25,       0.125,      0.0625,
                               0.03125,    0.015625,   0.0078125,  0.00390625,
                               0.70710678, 0.35355339, 0.17677670, 0.08838835};
  std::vector<float> slopes(12);
  alibi_slopes(12, slopes.data());
  // The extra slopes are powers of the float32 base (relative 6e-8) rounded to float.
  for (int i = 0; i < 12; ++i) EXPECT_NEAR(slopes[i], expected[i], 2e-7 * expected[i] + 5e-9);
}

}  // namespace
}  // namespace loom::kernels::cpu
