// Fused softmax cross-entropy over a padded vocabulary on the CPU: loss per row and, in place of
// the logits, grad_scale * (softmax - onehot), with padded columns (>= V) excluded and given a
// zero gradient. Numerically stable (max subtraction); no [N, Vp] buffer besides the logits.
// Parallel over rows; the returned sum adds rows in order, so it is deterministic. Tested in
// tests/kernels_cpu/cross_entropy_test.cc (naive log-softmax, finite differences).
#include <cassert>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel.h"

namespace loom::kernels::cpu {
namespace {

// log sum_{j < v} exp(x_j) kept as max + log_sum, log_sum = log sum_j exp(x_j - max): the
// max is subtracted first so that no exp overflows, and losses and probabilities are formed
// from the shifted logits x_j - max, so that a large common offset (|x| ~ 1000, where an fp32
// ulp is 6e-5) does not round them. Accumulates in T (fp32 for training, like llm.c's fused
// classifier).
template <typename T>
struct RowLse {
  T max;
  T log_sum;
};

template <typename T>
RowLse<T> row_logsumexp(int64_t v, const T* x) {
  T max = x[0];
  for (int64_t j = 1; j < v; ++j) max = x[j] > max ? x[j] : max;
  T sum = 0;
  for (int64_t j = 0; j < v; ++j) sum += std::exp(x[j] - max);
  return {max, std::log(sum)};
}

// Sum of per-row losses in row order (deterministic whatever the thread count).
template <typename T>
double sum_rows(int64_t n, const T* loss_n) {
  double total = 0;
  for (int64_t row = 0; row < n; ++row) total += static_cast<double>(loss_n[row]);
  return total;
}

}  // namespace

// loss_n may be nullptr (only the sum is wanted): a [N] scratch vector then holds the row
// losses so that they can be summed in order.
template <typename T>
double cross_entropy_fwd_bwd(int64_t n, int64_t vp, int64_t v, const int32_t* targets, T* logits,
                             T grad_scale, T* loss_n) {
  std::vector<T> scratch(loss_n == nullptr ? n : 0);
  T* losses = loss_n == nullptr ? scratch.data() : loss_n;
#pragma omp parallel for schedule(static) if (n * vp >= kParallelMinElements)
  for (int64_t row = 0; row < n; ++row) {
    T* x = logits + row * vp;
    const int32_t target = targets[row];
    if (target < 0) {  // ignored row (padding / masked token): no loss, no gradient
      for (int64_t j = 0; j < vp; ++j) x[j] = T(0);
      losses[row] = T(0);
      continue;
    }
    assert(target < v && "cross_entropy: target outside the unpadded vocabulary");
    const RowLse<T> lse = row_logsumexp(v, x);
    losses[row] = lse.log_sum - (x[target] - lse.max);
    // d loss / d x_j = softmax_j - [j == target]; the softmax is recomputed from lse in place.
    for (int64_t j = 0; j < v; ++j) x[j] = std::exp((x[j] - lse.max) - lse.log_sum) * grad_scale;
    x[target] -= grad_scale;
    for (int64_t j = v; j < vp; ++j) x[j] = T(0);
  }
  return sum_rows(n, losses);
}

template <typename T>
double cross_entropy_fwd(int64_t n, int64_t vp, int64_t v, const int32_t* targets, const T* logits,
                         T* loss_n) {
  std::vector<T> scratch(loss_n == nullptr ? n : 0);
  T* losses = loss_n == nullptr ? scratch.data() : loss_n;
#pragma omp parallel for schedule(static) if (n * vp >= kParallelMinElements)
  for (int64_t row = 0; row < n; ++row) {
    const T* x = logits + row * vp;
    const int32_t target = targets[row];
    if (target < 0) {
      losses[row] = T(0);
      continue;
    }
    assert(target < v && "cross_entropy: target outside the unpadded vocabulary");
    const RowLse<T> lse = row_logsumexp(v, x);
    losses[row] = lse.log_sum - (x[target] - lse.max);
  }
  return sum_rows(n, losses);
}

#define LOOM_INSTANTIATE_CROSS_ENTROPY(T)                                                         \
  template double cross_entropy_fwd_bwd<T>(int64_t, int64_t, int64_t, const int32_t*, T*, T, T*); \
  template double cross_entropy_fwd<T>(int64_t, int64_t, int64_t, const int32_t*, const T*, T*);

LOOM_INSTANTIATE_CROSS_ENTROPY(float)
LOOM_INSTANTIATE_CROSS_ENTROPY(double)
#undef LOOM_INSTANTIATE_CROSS_ENTROPY

}  // namespace loom::kernels::cpu
