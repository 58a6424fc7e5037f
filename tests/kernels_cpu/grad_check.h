// Test helpers for the CPU operators: seeded random tensors, the scalar objective
// L = sum(out * R) with a fixed random R, central finite differences and the normalised error
// max|a - n| / max|n| used by every gradient check in tests/kernels_cpu. The tolerances of those
// checks live here, each with its justification.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <utility>
#include <vector>

namespace loom::kernels::cpu::testing {

// Central differences in fp64 with step h: truncation error ~ h^2 |f'''| / 6 ~ 1e-12 and
// rounding error ~ eps |f| / h ~ 1e-16 * 10 / 1e-5 ~ 1e-10 for the O(1)-curvature, O(10)-valued
// objectives of these tests, so 1e-6 leaves four orders of magnitude of margin.
inline constexpr double kFiniteDiffStep = 1e-5;
inline constexpr double kDoubleGradTol = 1e-6;
// fp32 analytic gradients are compared against the fp64 analytic ones (themselves checked
// against finite differences) on the same fp32-representable inputs: fp32 finite differences
// would measure the step's rounding (eps_fp32 / h ~ 1e-7 / 1e-3), not the kernel. Expected
// error: eps_fp32 = 6e-8 times the accumulation depth (sums of <= ~100 terms here) times the
// conditioning of the op (softmax and normalisation subtract nearly equal terms, ~10x), i.e.
// ~1e-5; 1e-4 keeps a 10x margin and is 10x stricter than the 1e-3 the issue allows.
inline constexpr double kFloatGradTol = 1e-4;
// Forward outputs against fp64 naive references computed in the test.
inline constexpr double kDoubleFwdTol = 1e-12;  // different summation order only
inline constexpr double kFloatFwdTol = 1e-5;    // eps_fp32 x accumulation depth x 10

// Uniform values in [lo, hi) from a fixed seed (mt19937_64 is specified by the standard).
inline std::vector<double> random_vector(int64_t n, uint64_t seed, double lo = -1.0,
                                         double hi = 1.0) {
  std::mt19937_64 gen(seed);
  std::vector<double> out(static_cast<size_t>(n));
  for (double& x : out) {
    // Top 53 bits of one draw: the same value on every platform (unlike
    // std::uniform_real_distribution, whose algorithm is unspecified).
    x = lo + (hi - lo) * static_cast<double>(gen() >> 11) * 0x1.0p-53;
  }
  return out;
}

// The same values rounded to float, so that float and double runs see identical inputs.
inline std::vector<double> float_representable(std::vector<double> x) {
  for (double& v : x) v = static_cast<double>(static_cast<float>(v));
  return x;
}

inline std::vector<std::vector<double>> float_representable_all(
    std::vector<std::vector<double>> xs) {
  for (auto& x : xs) x = float_representable(std::move(x));
  return xs;
}

template <typename T>
std::vector<T> cast_vector(const std::vector<double>& x) {
  return std::vector<T>(x.begin(), x.end());
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// d f / d x by central differences, perturbing each element of x in place (restored after).
inline std::vector<double> numeric_gradient(const std::function<double()>& f,
                                            std::vector<double>& x, double h = kFiniteDiffStep) {
  std::vector<double> grad(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    const double f_plus = f();
    x[i] = saved - h;
    const double f_minus = f();
    x[i] = saved;
    grad[i] = (f_plus - f_minus) / (2 * h);
  }
  return grad;
}

// max|a - ref| / max(max|ref|, tiny): an error relative to the gradient's scale, robust to
// individual entries near zero.
template <typename A, typename B>
double max_rel_error(const std::vector<A>& a, const std::vector<B>& ref) {
  double max_diff = 0;
  double max_ref = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    max_diff =
        std::max(max_diff, std::abs(static_cast<double>(a[i]) - static_cast<double>(ref[i])));
    max_ref = std::max(max_ref, std::abs(static_cast<double>(ref[i])));
  }
  return max_diff / std::max(max_ref, 1e-300);
}

// One evaluation of an op under test: its output and the gradients of L = sum(out * r) with
// respect to each input (same order as the inputs), both widened to double.
using Tensors = std::vector<std::vector<double>>;
struct OpRun {
  std::vector<double> out;
  Tensors grads;
};
// Runs the op in some scalar type; with_grads = false may skip the backward.
using RunFn =
    std::function<OpRun(const Tensors& inputs, const std::vector<double>& r, bool with_grads)>;

template <typename T>
std::vector<double> widen(const std::vector<T>& x) {
  return std::vector<double>(x.begin(), x.end());
}

// Max relative error of the analytic fp64 gradient of each input against central differences.
inline std::vector<double> fd_errors(const RunFn& run, Tensors inputs,
                                     const std::vector<double>& r) {
  const OpRun analytic = run(inputs, r, true);
  std::vector<double> errors;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const std::vector<double> numeric =
        numeric_gradient([&] { return dot(run(inputs, r, false).out, r); }, inputs[i]);
    errors.push_back(max_rel_error(analytic.grads[i], numeric));
  }
  return errors;
}

// Max relative error of the fp32 run's output and gradients against the fp64 run's, on inputs
// and r rounded to float; element 0 is the output, element i + 1 the gradient of input i.
inline std::vector<double> float_errors(const RunFn& run_float, const RunFn& run_double,
                                        Tensors inputs, std::vector<double> r) {
  for (auto& x : inputs) x = float_representable(x);
  r = float_representable(r);
  const OpRun f = run_float(inputs, r, true);
  const OpRun d = run_double(inputs, r, true);
  std::vector<double> errors{max_rel_error(f.out, d.out)};
  for (size_t i = 0; i < inputs.size(); ++i) {
    errors.push_back(max_rel_error(f.grads[i], d.grads[i]));
  }
  return errors;
}

// Prints a measured error so that test logs carry the numbers (gtest shows only failures).
inline void report(const char* what, const std::vector<double>& errors) {
  std::printf("[  error   ] %-28s", what);
  for (double e : errors) std::printf(" %.2e", e);
  std::printf("\n");
}

}  // namespace loom::kernels::cpu::testing
