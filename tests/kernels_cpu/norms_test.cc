// Tests of RMSNorm and LayerNorm (kernels/cpu/cpu_norms.cc): forwards against their formulas
// evaluated naively in fp64, backwards (dx, dw, db) against central finite differences in fp64
// (< 1e-6) and fp32 analytic against fp64 analytic (< 1e-4); tolerances in grad_check.h.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "grad_check.h"
#include "kernels/cpu/cpu_ops.h"

namespace loom::kernels::cpu {
namespace {

using testing::OpRun;
using testing::Tensors;

constexpr double kEps = 1e-5;  // the Llama / GPT-2 default epsilon

template <typename T>
OpRun run_rmsnorm(int64_t n, int64_t c, const Tensors& in, const std::vector<double>& r,
                  bool with_grads) {
  const auto x = testing::cast_vector<T>(in[0]);
  const auto w = testing::cast_vector<T>(in[1]);
  std::vector<T> y(n * c), rstd(n);
  rmsnorm_fwd(n, c, x.data(), w.data(), kEps, y.data(), rstd.data());
  OpRun run{testing::widen(y), {}};
  if (!with_grads) return run;
  const auto dy = testing::cast_vector<T>(r);
  std::vector<T> dx(n * c), dw(c, T(0));
  rmsnorm_bwd(n, c, dy.data(), x.data(), w.data(), rstd.data(), dx.data(), dw.data());
  run.grads = {testing::widen(dx), testing::widen(dw)};
  return run;
}

template <typename T>
OpRun run_layernorm(int64_t n, int64_t c, const Tensors& in, const std::vector<double>& r,
                    bool with_grads) {
  const auto x = testing::cast_vector<T>(in[0]);
  const auto w = testing::cast_vector<T>(in[1]);
  const auto b = testing::cast_vector<T>(in[2]);
  std::vector<T> y(n * c), mean(n), rstd(n);
  layernorm_fwd(n, c, x.data(), w.data(), b.data(), kEps, y.data(), mean.data(), rstd.data());
  OpRun run{testing::widen(y), {}};
  if (!with_grads) return run;
  const auto dy = testing::cast_vector<T>(r);
  std::vector<T> dx(n * c), dw(c, T(0)), db(c, T(0));
  layernorm_bwd(n, c, dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(), dw.data(),
                db.data());
  run.grads = {testing::widen(dx), testing::widen(dw), testing::widen(db)};
  return run;
}

TEST(RmsNorm, ForwardMatchesFormula) {
  const int64_t n = 4, c = 70;
  const auto x = testing::random_vector(n * c, 41, -2.0, 2.0);
  const auto w = testing::random_vector(c, 42, 0.5, 1.5);
  const OpRun run = run_rmsnorm<double>(n, c, {x, w}, {}, false);
  std::vector<double> ref(n * c);
  for (int64_t i = 0; i < n; ++i) {
    double ms = 0;
    for (int64_t j = 0; j < c; ++j) ms += x[i * c + j] * x[i * c + j] / c;
    for (int64_t j = 0; j < c; ++j) ref[i * c + j] = x[i * c + j] / std::sqrt(ms + kEps) * w[j];
  }
  EXPECT_LT(testing::max_rel_error(run.out, ref), testing::kDoubleFwdTol);
}

TEST(RmsNorm, GradientsMatchFiniteDifferences) {
  const int64_t n = 6, c = 70;  // c > 64: two column blocks in the dw reduction
  const Tensors in{testing::random_vector(n * c, 43, -2.0, 2.0),
                   testing::random_vector(c, 44, 0.5, 1.5)};
  const auto r = testing::random_vector(n * c, 45);
  auto run_d = [&](const Tensors& x, const std::vector<double>& rr, bool g) {
    return run_rmsnorm<double>(n, c, x, rr, g);
  };
  auto run_f = [&](const Tensors& x, const std::vector<double>& rr, bool g) {
    return run_rmsnorm<float>(n, c, x, rr, g);
  };
  const auto fd = testing::fd_errors(run_d, in, r);
  const auto fl = testing::float_errors(run_f, run_d, in, r);
  testing::report("rmsnorm fd64 dx dw", fd);
  testing::report("rmsnorm fp32 y dx dw", fl);
  for (double e : fd) EXPECT_LT(e, testing::kDoubleGradTol);
  for (double e : fl) EXPECT_LT(e, testing::kFloatGradTol);
}

TEST(LayerNorm, ForwardMatchesFormula) {
  const int64_t n = 4, c = 70;
  // An offset of 3 makes |mean| > std, where a one-pass variance would lose digits.
  const auto x = testing::random_vector(n * c, 51, 2.0, 4.0);
  const auto w = testing::random_vector(c, 52, 0.5, 1.5);
  const auto b = testing::random_vector(c, 53);
  const OpRun run = run_layernorm<double>(n, c, {x, w, b}, {}, false);
  std::vector<double> ref(n * c);
  for (int64_t i = 0; i < n; ++i) {
    double mean = 0, var = 0;
    for (int64_t j = 0; j < c; ++j) mean += x[i * c + j] / c;
    for (int64_t j = 0; j < c; ++j) var += (x[i * c + j] - mean) * (x[i * c + j] - mean) / c;
    for (int64_t j = 0; j < c; ++j) {
      ref[i * c + j] = (x[i * c + j] - mean) / std::sqrt(var + kEps) * w[j] + b[j];
    }
  }
  EXPECT_LT(testing::max_rel_error(run.out, ref), testing::kDoubleFwdTol);
}

TEST(LayerNorm, GradientsMatchFiniteDifferences) {
  const int64_t n = 5, c = 70;
  const Tensors in{testing::random_vector(n * c, 54, -2.0, 2.0),
                   testing::random_vector(c, 55, 0.5, 1.5), testing::random_vector(c, 56)};
  const auto r = testing::random_vector(n * c, 57);
  auto run_d = [&](const Tensors& x, const std::vector<double>& rr, bool g) {
    return run_layernorm<double>(n, c, x, rr, g);
  };
  auto run_f = [&](const Tensors& x, const std::vector<double>& rr, bool g) {
    return run_layernorm<float>(n, c, x, rr, g);
  };
  const auto fd = testing::fd_errors(run_d, in, r);
  const auto fl = testing::float_errors(run_f, run_d, in, r);
  testing::report("layernorm fd64 dx dw db", fd);
  testing::report("layernorm fp32 y dx dw db", fl);
  for (double e : fd) EXPECT_LT(e, testing::kDoubleGradTol);
  for (double e : fl) EXPECT_LT(e, testing::kFloatGradTol);
}

TEST(LayerNorm, BackwardAccumulatesParameterGradientsAndOverwritesDx) {
  const int64_t n = 3, c = 5;
  const auto x = testing::random_vector(n * c, 58);
  const std::vector<double> w(c, 1.0), b(c, 0.0);
  const auto dy = testing::random_vector(n * c, 59);
  std::vector<double> y(n * c), mean(n), rstd(n);
  layernorm_fwd(n, c, x.data(), w.data(), b.data(), kEps, y.data(), mean.data(), rstd.data());
  std::vector<double> dx1(n * c, 7.0), dw1(c, 0.0), db1(c, 0.0);
  layernorm_bwd(n, c, dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx1.data(),
                dw1.data(), db1.data());
  std::vector<double> dx2(n * c, -3.0), dw2 = dw1, db2 = db1;
  layernorm_bwd(n, c, dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx2.data(),
                dw2.data(), db2.data());
  EXPECT_EQ(dx1, dx2);
  for (int64_t j = 0; j < c; ++j) {
    EXPECT_EQ(dw2[j], 2 * dw1[j]);
    EXPECT_EQ(db2[j], 2 * db1[j]);
  }
}

}  // namespace
}  // namespace loom::kernels::cpu
