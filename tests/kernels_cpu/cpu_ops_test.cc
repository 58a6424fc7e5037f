// Tests of the GEMMs, bias, residual add and embedding of kernels/cpu/cpu_ops.h: forwards
// against naive loops (including the exact beta == 0 / NaN rule), backwards against central
// finite differences in fp64 (< 1e-6) and fp32 analytic against fp64 analytic (< 1e-4); the
// tolerances are justified in grad_check.h.
#include "kernels/cpu/cpu_ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "grad_check.h"

namespace loom::kernels::cpu {
namespace {

using testing::OpRun;
using testing::Tensors;

// Naive C = beta C + op(A) op(B) with element accessors, in double.
template <typename GetA, typename GetB>
std::vector<double> naive_gemm(int64_t m, int64_t n, int64_t k, GetA a, GetB b,
                               const std::vector<double>& c, double beta) {
  std::vector<double> out(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double sum = 0;
      for (int64_t p = 0; p < k; ++p) sum += a(i, p) * b(p, j);
      out[i * n + j] = (beta == 0 ? 0.0 : beta * c[i * n + j]) + sum;
    }
  }
  return out;
}

TEST(Matmul, AllLayoutsMatchNaiveLoopsForEveryBeta) {
  const int64_t m = 5, n = 7, k = 3;
  const auto a_mk = testing::random_vector(m * k, 1);  // also read as A[K, M] for _tn
  const auto b_nk = testing::random_vector(n * k, 2);  // also read as B[K, N] for _nn/_tn
  const auto c0 = testing::random_vector(m * n, 3);
  for (double beta : {0.0, 1.0, 0.5}) {
    std::vector<double> c_nt = c0, c_nn = c0, c_tn = c0;
    if (beta == 0) {  // beta == 0 must ignore C entirely, even NaN (0 * NaN would be NaN)
      std::fill(c_nt.begin(), c_nt.end(), std::numeric_limits<double>::quiet_NaN());
      c_nn = c_tn = c_nt;
    }
    matmul_nt(m, n, k, a_mk.data(), b_nk.data(), c_nt.data(), beta);
    matmul_nn(m, n, k, a_mk.data(), b_nk.data(), c_nn.data(), beta);
    matmul_tn(m, n, k, a_mk.data(), b_nk.data(), c_tn.data(), beta);
    const auto ref_nt = naive_gemm(
        m, n, k, [&](int64_t i, int64_t p) { return a_mk[i * k + p]; },
        [&](int64_t p, int64_t j) { return b_nk[j * k + p]; }, c0, beta);
    const auto ref_nn = naive_gemm(
        m, n, k, [&](int64_t i, int64_t p) { return a_mk[i * k + p]; },
        [&](int64_t p, int64_t j) { return b_nk[p * n + j]; }, c0, beta);
    const auto ref_tn = naive_gemm(
        m, n, k, [&](int64_t i, int64_t p) { return a_mk[p * m + i]; },
        [&](int64_t p, int64_t j) { return b_nk[p * n + j]; }, c0, beta);
    EXPECT_LT(testing::max_rel_error(c_nt, ref_nt), testing::kDoubleFwdTol) << beta;
    EXPECT_LT(testing::max_rel_error(c_nn, ref_nn), testing::kDoubleFwdTol) << beta;
    EXPECT_LT(testing::max_rel_error(c_tn, ref_tn), testing::kDoubleFwdTol) << beta;
  }
}

// Linear layer y = x W^T (x [M, K], W [N, K]); dx = dy W, dW += dy^T x.
template <typename T>
OpRun run_linear(int64_t m, int64_t n, int64_t k, const Tensors& in, const std::vector<double>& r,
                 bool with_grads) {
  const auto x = testing::cast_vector<T>(in[0]);
  const auto w = testing::cast_vector<T>(in[1]);
  std::vector<T> y(m * n);
  matmul_nt(m, n, k, x.data(), w.data(), y.data(), T(0));
  OpRun run{testing::widen(y), {}};
  if (!with_grads) return run;
  const auto dy = testing::cast_vector<T>(r);
  std::vector<T> dx(m * k), dw(n * k, T(0));
  matmul_nn(m, k, n, dy.data(), w.data(), dx.data(), T(0));
  matmul_tn(n, k, m, dy.data(), x.data(), dw.data(), T(1));
  run.grads = {testing::widen(dx), testing::widen(dw)};
  return run;
}

TEST(Matmul, LinearGradientsMatchFiniteDifferences) {
  const int64_t m = 4, n = 5, k = 6;
  const Tensors in{testing::random_vector(m * k, 11), testing::random_vector(n * k, 12)};
  const auto r = testing::random_vector(m * n, 13);
  auto run_d = [&](const Tensors& x, const std::vector<double>& rr, bool g) {
    return run_linear<double>(m, n, k, x, rr, g);
  };
  auto run_f = [&](const Tensors& x, const std::vector<double>& rr, bool g) {
    return run_linear<float>(m, n, k, x, rr, g);
  };
  const auto fd = testing::fd_errors(run_d, in, r);
  const auto fl = testing::float_errors(run_f, run_d, in, r);
  testing::report("linear fd64 dx dw", fd);
  testing::report("linear fp32 y dx dw", fl);
  for (double e : fd) EXPECT_LT(e, testing::kDoubleGradTol);
  for (double e : fl) EXPECT_LT(e, testing::kFloatGradTol);
}

// y = x + bias (broadcast over rows); dx = dy, dbias += sum_n dy.
template <typename T>
OpRun run_bias(int64_t n, int64_t c, const Tensors& in, const std::vector<double>& r,
               bool with_grads) {
  auto y = testing::cast_vector<T>(in[0]);
  const auto bias = testing::cast_vector<T>(in[1]);
  bias_add(n, c, bias.data(), y.data());
  OpRun run{testing::widen(y), {}};
  if (!with_grads) return run;
  const auto dy = testing::cast_vector<T>(r);
  std::vector<T> dbias(c, T(0));
  bias_bwd(n, c, dy.data(), dbias.data());
  run.grads = {r, testing::widen(dbias)};
  return run;
}

TEST(Bias, GradientMatchesFiniteDifferences) {
  const int64_t n = 5, c = 70;  // c > 64: two column blocks in bias_bwd
  const Tensors in{testing::random_vector(n * c, 21), testing::random_vector(c, 22)};
  const auto r = testing::random_vector(n * c, 23);
  auto run_d = [&](const Tensors& x, const std::vector<double>& rr, bool g) {
    return run_bias<double>(n, c, x, rr, g);
  };
  auto run_f = [&](const Tensors& x, const std::vector<double>& rr, bool g) {
    return run_bias<float>(n, c, x, rr, g);
  };
  const auto fd = testing::fd_errors(run_d, in, r);
  const auto fl = testing::float_errors(run_f, run_d, in, r);
  testing::report("bias fd64 dx dbias", fd);
  testing::report("bias fp32 y dx dbias", fl);
  for (double e : fd) EXPECT_LT(e, testing::kDoubleGradTol);
  for (double e : fl) EXPECT_LT(e, testing::kFloatGradTol);
}

TEST(Bias, BackwardAccumulatesIntoDbias) {
  const std::vector<double> dy{1, 2, 3, 4, 5, 6};  // [2, 3]
  std::vector<double> dbias{10, 20, 30};
  bias_bwd(2, 3, dy.data(), dbias.data());
  EXPECT_EQ(dbias, (std::vector<double>{15, 27, 39}));
}

TEST(AddInplace, AddsElementwise) {
  std::vector<float> y{1, 2, 3};
  const std::vector<float> x{0.5f, -2, 4};
  add_inplace(3, x.data(), y.data());
  EXPECT_EQ(y, (std::vector<float>{1.5f, 0, 7}));
}

// out[n] = table[tokens[n]]; dtable[tokens[n]] += dout[n].
template <typename T>
OpRun run_embedding(int64_t c, const std::vector<int32_t>& tokens, const Tensors& in,
                    const std::vector<double>& r, bool with_grads) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  const auto table = testing::cast_vector<T>(in[0]);
  std::vector<T> out(n * c);
  embedding_fwd(n, c, tokens.data(), table.data(), out.data());
  OpRun run{testing::widen(out), {}};
  if (!with_grads) return run;
  const auto dout = testing::cast_vector<T>(r);
  std::vector<T> dtable(table.size(), T(0));
  embedding_bwd(n, c, tokens.data(), dout.data(), dtable.data());
  run.grads = {testing::widen(dtable)};
  return run;
}

TEST(Embedding, ForwardGathersRowsAndGradientMatchesFiniteDifferences) {
  const int64_t v = 7, c = 70;
  const std::vector<int32_t> tokens{3, 0, 6, 3, 3, 1, 0, 5, 2, 6, 3, 1};  // repeats; no row 4
  const Tensors in{testing::random_vector(v * c, 31)};
  const auto r = testing::random_vector(static_cast<int64_t>(tokens.size()) * c, 32);
  auto run_d = [&](const Tensors& x, const std::vector<double>& rr, bool g) {
    return run_embedding<double>(c, tokens, x, rr, g);
  };
  auto run_f = [&](const Tensors& x, const std::vector<double>& rr, bool g) {
    return run_embedding<float>(c, tokens, x, rr, g);
  };
  const OpRun fwd = run_d(in, r, true);
  for (size_t row = 0; row < tokens.size(); ++row) {
    for (int64_t j = 0; j < c; ++j) {
      ASSERT_EQ(fwd.out[row * c + j], in[0][tokens[row] * c + j]);
    }
  }
  for (int64_t j = 0; j < c; ++j) EXPECT_EQ(fwd.grads[0][4 * c + j], 0.0);  // unused row
  const auto fd = testing::fd_errors(run_d, in, r);
  const auto fl = testing::float_errors(run_f, run_d, in, r);
  testing::report("embedding fd64 dtable", fd);
  testing::report("embedding fp32 out dtable", fl);
  for (double e : fd) EXPECT_LT(e, testing::kDoubleGradTol);
  for (double e : fl) EXPECT_LT(e, testing::kFloatGradTol);
}

}  // namespace
}  // namespace loom::kernels::cpu
