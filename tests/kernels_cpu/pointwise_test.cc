// Tests of RoPE, SwiGLU and GeLU (kernels/cpu/cpu_pointwise.cc): RoPE against a direct
// complex-rotation formula in fp64 (z * e^{i t theta_i}, Su et al. 2021 eq. 34), activations
// against their formulas, and every backward against central finite differences in fp64
// (< 1e-6) and fp32 analytic against fp64 analytic (< 1e-4); tolerances in grad_check.h.
#include <gtest/gtest.h>

#include <cmath>
#include <complex>
#include <vector>

#include "grad_check.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/numerics.h"

namespace loom::kernels::cpu {
namespace {

using testing::OpRun;
using testing::Tensors;

struct RopeShape {
  int64_t b = 2, t = 9, h = 3, d = 8, rot_dim = 6;  // rot_dim < d: a pass-through tail
  double theta = 10000.0;
};

template <typename T>
OpRun run_rope(const RopeShape& s, const Tensors& in, const std::vector<double>& r,
               bool with_grads) {
  std::vector<float> cos_tr(s.t * s.rot_dim / 2), sin_tr(s.t * s.rot_dim / 2);
  rope_tables(s.t, s.rot_dim, s.theta, cos_tr.data(), sin_tr.data());
  auto x = testing::cast_vector<T>(in[0]);
  rope_fwd(s.b, s.t, s.h, s.d, s.rot_dim, cos_tr.data(), sin_tr.data(), x.data());
  OpRun run{testing::widen(x), {}};
  if (!with_grads) return run;
  auto dx = testing::cast_vector<T>(r);
  rope_bwd(s.b, s.t, s.h, s.d, s.rot_dim, cos_tr.data(), sin_tr.data(), dx.data());
  run.grads = {testing::widen(dx)};
  return run;
}

TEST(Rope, ForwardMatchesComplexRotation) {
  const RopeShape s;
  const auto x = testing::random_vector(s.b * s.t * s.h * s.d, 61);
  const OpRun run = run_rope<double>(s, {x}, {}, false);
  const int64_t half = s.rot_dim / 2;
  std::vector<double> ref = x;
  for (int64_t bt = 0; bt < s.b * s.t; ++bt) {
    const double pos = static_cast<double>(bt % s.t);
    for (int64_t hh = 0; hh < s.h; ++hh) {
      const int64_t base = (bt * s.h + hh) * s.d;
      for (int64_t i = 0; i < half; ++i) {
        // Pair i of rotate_half is (x_i, x_{i + rot_dim/2}), i.e. z = x_i + i x_{i+half}.
        const double freq = std::pow(s.theta, -2.0 * static_cast<double>(i) / s.rot_dim);
        const std::complex<double> z(x[base + i], x[base + i + half]);
        const std::complex<double> rotated = z * std::polar(1.0, pos * freq);
        ref[base + i] = rotated.real();
        ref[base + i + half] = rotated.imag();
      }
    }
  }
  // The tables are fp32 by contract: the angle t * inv_freq and its cos/sin are each rounded to
  // float (relative 6e-8), so an entry may differ from the exact rotation by ~|angle| * 6e-8 +
  // 6e-8 <= 1e-6 for angles up to 8 (t < 9).
  EXPECT_LT(testing::max_rel_error(run.out, ref), 1e-6);
  for (int64_t i = 0; i < s.b * s.t * s.h; ++i) {  // dims >= rot_dim pass through
    for (int64_t k = s.rot_dim; k < s.d; ++k) EXPECT_EQ(run.out[i * s.d + k], x[i * s.d + k]);
  }
}

TEST(Rope, TablesHoldCosSinOfPositionTimesInverseFrequency) {
  const int64_t t = 6, rot_dim = 64;
  std::vector<float> cos_tr(t * rot_dim / 2), sin_tr(t * rot_dim / 2);
  rope_tables(t, rot_dim, 10000.0, cos_tr.data(), sin_tr.data());
  for (int64_t pos = 0; pos < t; ++pos) {
    for (int64_t i = 0; i < rot_dim / 2; ++i) {
      const double angle = pos * std::pow(10000.0, -2.0 * i / rot_dim);
      // fp32 inv_freq and angle (relative 6e-8 each) plus the final rounding: < 1e-6 for
      // angles up to 5.
      EXPECT_NEAR(cos_tr[pos * rot_dim / 2 + i], std::cos(angle), 1e-6);
      EXPECT_NEAR(sin_tr[pos * rot_dim / 2 + i], std::sin(angle), 1e-6);
    }
  }
  EXPECT_EQ(cos_tr[0], 1.0f);  // position 0 is the identity
  EXPECT_EQ(sin_tr[0], 0.0f);
}

TEST(Rope, GradientMatchesFiniteDifferences) {
  const RopeShape s;
  const Tensors in{testing::random_vector(s.b * s.t * s.h * s.d, 62)};
  const auto r = testing::random_vector(s.b * s.t * s.h * s.d, 63);
  auto run_d = [&](const Tensors& x, const std::vector<double>& rr, bool g) {
    return run_rope<double>(s, x, rr, g);
  };
  auto run_f = [&](const Tensors& x, const std::vector<double>& rr, bool g) {
    return run_rope<float>(s, x, rr, g);
  };
  const auto fd = testing::fd_errors(run_d, in, r);
  const auto fl = testing::float_errors(run_f, run_d, in, r);
  testing::report("rope fd64 dx", fd);
  testing::report("rope fp32 y dx", fl);
  for (double e : fd) EXPECT_LT(e, testing::kDoubleGradTol);
  for (double e : fl) EXPECT_LT(e, testing::kFloatGradTol);
}

template <typename T>
OpRun run_swiglu(const Tensors& in, const std::vector<double>& r, bool with_grads) {
  const int64_t n = static_cast<int64_t>(in[0].size());
  const auto gate = testing::cast_vector<T>(in[0]);
  const auto up = testing::cast_vector<T>(in[1]);
  std::vector<T> out(n);
  swiglu_fwd(n, gate.data(), up.data(), out.data());
  OpRun run{testing::widen(out), {}};
  if (!with_grads) return run;
  const auto dout = testing::cast_vector<T>(r);
  std::vector<T> dgate(n), dup(n);
  swiglu_bwd(n, dout.data(), gate.data(), up.data(), dgate.data(), dup.data());
  run.grads = {testing::widen(dgate), testing::widen(dup)};
  return run;
}

TEST(SwiGlu, ForwardMatchesFormulaAndGradientsMatchFiniteDifferences) {
  const int64_t n = 64;
  const Tensors in{testing::random_vector(n, 71, -5.0, 5.0), testing::random_vector(n, 72)};
  const auto r = testing::random_vector(n, 73);
  const OpRun fwd = run_swiglu<double>(in, r, false);
  for (int64_t i = 0; i < n; ++i) {
    const double g = in[0][i];
    EXPECT_NEAR(fwd.out[i], g / (1 + std::exp(-g)) * in[1][i], 1e-15);
  }
  const auto fd = testing::fd_errors(run_swiglu<double>, in, r);
  const auto fl = testing::float_errors(run_swiglu<float>, run_swiglu<double>, in, r);
  testing::report("swiglu fd64 dgate dup", fd);
  testing::report("swiglu fp32 y dgate dup", fl);
  for (double e : fd) EXPECT_LT(e, testing::kDoubleGradTol);
  for (double e : fl) EXPECT_LT(e, testing::kFloatGradTol);
}

template <typename T>
OpRun run_gelu(const Tensors& in, const std::vector<double>& r, bool with_grads) {
  const int64_t n = static_cast<int64_t>(in[0].size());
  const auto x = testing::cast_vector<T>(in[0]);
  std::vector<T> y(n);
  gelu_fwd(n, x.data(), y.data());
  OpRun run{testing::widen(y), {}};
  if (!with_grads) return run;
  const auto dy = testing::cast_vector<T>(r);
  std::vector<T> dx(n);
  gelu_bwd(n, dy.data(), x.data(), dx.data());
  run.grads = {testing::widen(dx)};
  return run;
}

TEST(Gelu, ForwardMatchesFormulaAndGradientMatchesFiniteDifferences) {
  const int64_t n = 64;
  const Tensors in{testing::random_vector(n, 81, -5.0, 5.0)};
  const auto r = testing::random_vector(n, 82);
  const OpRun fwd = run_gelu<double>(in, r, false);
  for (int64_t i = 0; i < n; ++i) {
    const double x = in[0][i];
    const double ref = 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
    EXPECT_NEAR(fwd.out[i], ref, 1e-15);
  }
  const auto fd = testing::fd_errors(run_gelu<double>, in, r);
  const auto fl = testing::float_errors(run_gelu<float>, run_gelu<double>, in, r);
  testing::report("gelu fd64 dx", fd);
  testing::report("gelu fp32 y dx", fl);
  for (double e : fd) EXPECT_LT(e, testing::kDoubleGradTol);
  for (double e : fl) EXPECT_LT(e, testing::kFloatGradTol);
}

}  // namespace
}  // namespace loom::kernels::cpu
