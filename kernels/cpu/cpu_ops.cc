// GEMMs (Eigen, multi-threaded through OpenMP), bias, residual add and the embedding of
// kernels/cpu/cpu_ops.h. Parameter-gradient reductions (bias_bwd, embedding_bwd) sum rows in the
// fixed order n = 0..N-1 and parallelise over column blocks, so results do not depend on the
// thread count. Tested in tests/kernels_cpu/cpu_ops_test.cc (naive loops, finite differences)
// and tests/kernels_cpu/determinism_test.cc (1 vs 2 threads, bit-identical).
#include "kernels/cpu/cpu_ops.h"

#include <Eigen/Core>

#include "kernels/cpu/parallel.h"

namespace loom::kernels::cpu {
namespace {

template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using MapC = Eigen::Map<const RowMat<T>>;
template <typename T>
using Map = Eigen::Map<RowMat<T>>;

// C = beta * C + product, with beta == 0 overwriting C (so NaN or garbage in C never leaks in:
// 0 * NaN would be NaN) and beta == 1 accumulating without a scaling pass.
template <typename T, typename Product>
void assign_scaled(Map<T>& c, const Product& product, T beta) {
  if (beta == T(0)) {
    c.noalias() = product;
  } else {
    if (beta != T(1)) c *= beta;
    c.noalias() += product;
  }
}

}  // namespace

template <typename T>
void matmul_nt(int64_t m, int64_t n, int64_t k, const T* a, const T* b, T* c, T beta) {
  Map<T> cm(c, m, n);
  assign_scaled(cm, MapC<T>(a, m, k) * MapC<T>(b, n, k).transpose(), beta);
}

template <typename T>
void matmul_nn(int64_t m, int64_t n, int64_t k, const T* a, const T* b, T* c, T beta) {
  Map<T> cm(c, m, n);
  assign_scaled(cm, MapC<T>(a, m, k) * MapC<T>(b, k, n), beta);
}

template <typename T>
void matmul_tn(int64_t m, int64_t n, int64_t k, const T* a, const T* b, T* c, T beta) {
  Map<T> cm(c, m, n);
  assign_scaled(cm, MapC<T>(a, k, m).transpose() * MapC<T>(b, k, n), beta);
}

template <typename T>
void bias_add(int64_t n, int64_t c, const T* bias, T* y_nc) {
#pragma omp parallel for schedule(static) if (n * c >= kParallelMinElements)
  for (int64_t row = 0; row < n; ++row) {
    T* y = y_nc + row * c;
    for (int64_t j = 0; j < c; ++j) y[j] += bias[j];
  }
}

template <typename T>
void bias_bwd(int64_t n, int64_t c, const T* dy_nc, T* dbias) {
  column_sums_add(n, c, dbias, [dy_nc, c](int64_t row, int64_t j) { return dy_nc[row * c + j]; });
}

template <typename T>
void add_inplace(int64_t count, const T* x, T* y) {
#pragma omp parallel for schedule(static) if (count >= kParallelMinElements)
  for (int64_t i = 0; i < count; ++i) y[i] += x[i];
}

template <typename T>
void embedding_fwd(int64_t n, int64_t c, const int32_t* tokens, const T* table, T* out_nc) {
#pragma omp parallel for schedule(static) if (n * c >= kParallelMinElements)
  for (int64_t row = 0; row < n; ++row) {
    const T* src = table + static_cast<int64_t>(tokens[row]) * c;
    T* dst = out_nc + row * c;
    for (int64_t j = 0; j < c; ++j) dst[j] = src[j];
  }
}

template <typename T>
void embedding_bwd(int64_t n, int64_t c, const int32_t* tokens, const T* dout_nc, T* dtable) {
  // Column blocks in parallel, rows n = 0..N-1 in order within a block: a token that appears
  // several times receives its gradients in the same order whatever the thread count.
  const int64_t blocks = ceil_div(c, kColumnBlock);
#pragma omp parallel for schedule(static) if (n * c >= kParallelMinElements)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kColumnBlock;
    const int64_t c1 = c0 + kColumnBlock < c ? c0 + kColumnBlock : c;
    for (int64_t row = 0; row < n; ++row) {
      T* dst = dtable + static_cast<int64_t>(tokens[row]) * c;
      const T* src = dout_nc + row * c;
      for (int64_t j = c0; j < c1; ++j) dst[j] += src[j];
    }
  }
}

#define LOOM_INSTANTIATE_BASIC_OPS(T)                                               \
  template void matmul_nt<T>(int64_t, int64_t, int64_t, const T*, const T*, T*, T); \
  template void matmul_nn<T>(int64_t, int64_t, int64_t, const T*, const T*, T*, T); \
  template void matmul_tn<T>(int64_t, int64_t, int64_t, const T*, const T*, T*, T); \
  template void bias_add<T>(int64_t, int64_t, const T*, T*);                        \
  template void bias_bwd<T>(int64_t, int64_t, const T*, T*);                        \
  template void add_inplace<T>(int64_t, const T*, T*);                              \
  template void embedding_fwd<T>(int64_t, int64_t, const int32_t*, const T*, T*);   \
  template void embedding_bwd<T>(int64_t, int64_t, const int32_t*, const T*, T*);

LOOM_INSTANTIATE_BASIC_OPS(float)
LOOM_INSTANTIATE_BASIC_OPS(double)
#undef LOOM_INSTANTIATE_BASIC_OPS

}  // namespace loom::kernels::cpu
