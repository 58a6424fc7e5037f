// Vocabulary-parallel embedding and cross-entropy: see vocab_parallel.h.
#include "trainer/vocab_parallel.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace loom::train {

template <typename T>
void embedding_fwd_rows(int64_t n, int64_t c, const int32_t* tokens, int64_t v0, int64_t rows,
                        const T* table, T* out_nc) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = static_cast<int64_t>(tokens[i]) - v0;
    T* dst = out_nc + i * c;
    if (r >= 0 && r < rows) {
      std::copy(table + r * c, table + (r + 1) * c, dst);
    } else {
      std::fill(dst, dst + c, T(0));
    }
  }
}

template <typename T>
void embedding_bwd_rows(int64_t n, int64_t c, const int32_t* tokens, int64_t v0, int64_t rows,
                        const T* dout_nc, T* dtable) {
  // Rows in order (a token seen twice gets its gradients in a fixed order): deterministic.
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = static_cast<int64_t>(tokens[i]) - v0;
    if (r < 0 || r >= rows) continue;
    T* dst = dtable + r * c;
    const T* src = dout_nc + i * c;
    for (int64_t j = 0; j < c; ++j) dst[j] += src[j];
  }
}

template <typename T>
core::Status cross_entropy_vocab_parallel(int64_t n, int64_t cols, int64_t v0, int64_t v,
                                          const int32_t* targets, T* logits, T grad_scale,
                                          bool backward, comm::Communicator& tp,
                                          double* loss_sum) {
  const int64_t valid = std::clamp<int64_t>(v - v0, 0, cols);  // columns of real tokens here
  // 1. The row maximum over every rank (for a stable exponent).
  std::vector<T> row_max(n, -std::numeric_limits<T>::infinity());
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T* x = logits + i * cols;
    for (int64_t j = 0; j < valid; ++j) row_max[i] = std::max(row_max[i], x[j]);
  }
  LOOM_RETURN_IF_ERROR(tp.all_reduce(row_max.data(), n, comm::ReduceOp::kMax));
  // 2. Sums of exp(x - max) and the target's logit (0 on ranks that do not hold it), summed.
  std::vector<T> sums(2 * n, T(0));  // [sum exp | target logit - max]
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    if (targets[i] < 0) continue;
    const T* x = logits + i * cols;
    T s = 0;
    for (int64_t j = 0; j < valid; ++j) s += std::exp(x[j] - row_max[i]);
    sums[i] = s;
    const int64_t t = targets[i] - v0;
    if (t >= 0 && t < valid) sums[n + i] = x[t] - row_max[i];
  }
  LOOM_RETURN_IF_ERROR(tp.all_reduce(sums.data(), 2 * n, comm::ReduceOp::kSum));
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (targets[i] >= 0) total += static_cast<double>(std::log(sums[i]) - sums[n + i]);
  }
  *loss_sum = total;
  if (!backward) return core::ok_status();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    T* x = logits + i * cols;
    if (targets[i] < 0) {
      std::fill(x, x + cols, T(0));
      continue;
    }
    const T log_sum = std::log(sums[i]);
    for (int64_t j = 0; j < valid; ++j) x[j] = std::exp((x[j] - row_max[i]) - log_sum) * grad_scale;
    for (int64_t j = valid; j < cols; ++j) x[j] = T(0);
    const int64_t t = targets[i] - v0;
    if (t >= 0 && t < valid) x[t] -= grad_scale;
  }
  return core::ok_status();
}

#define LOOM_INSTANTIATE_VOCAB_PARALLEL(T)                                                      \
  template void embedding_fwd_rows<T>(int64_t, int64_t, const int32_t*, int64_t, int64_t,       \
                                      const T*, T*);                                            \
  template void embedding_bwd_rows<T>(int64_t, int64_t, const int32_t*, int64_t, int64_t,       \
                                      const T*, T*);                                            \
  template core::Status cross_entropy_vocab_parallel<T>(int64_t, int64_t, int64_t, int64_t,     \
                                                        const int32_t*, T*, T, bool,            \
                                                        comm::Communicator&, double*);

LOOM_INSTANTIATE_VOCAB_PARALLEL(float)
LOOM_INSTANTIATE_VOCAB_PARALLEL(double)
#undef LOOM_INSTANTIATE_VOCAB_PARALLEL

}  // namespace loom::train
