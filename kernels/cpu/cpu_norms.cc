// RMSNorm (Zhang & Sennrich 2019) and LayerNorm (Ba et al. 2016) forward and backward on the
// CPU. Row statistics accumulate in the scalar type T (fp32 for training, as the CUDA kernels
// will; fp64 in gradient checks). dx is parallel over rows; dw/db are parallel over column
// blocks with rows summed in order, hence deterministic. Tested in
// tests/kernels_cpu/cpu_ops_test.cc (formula, finite differences) and determinism_test.cc.
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel.h"

namespace loom::kernels::cpu {

template <typename T>
void rmsnorm_fwd(int64_t n, int64_t c, const T* x_nc, const T* w, double eps, T* y_nc, T* rstd_n) {
#pragma omp parallel for schedule(static) if (n * c >= kParallelMinElements)
  for (int64_t row = 0; row < n; ++row) {
    const T* x = x_nc + row * c;
    T* y = y_nc + row * c;
    T sum_sq = 0;
    for (int64_t j = 0; j < c; ++j) sum_sq += x[j] * x[j];
    const T rstd = T(1) / std::sqrt(sum_sq / T(c) + T(eps));
    for (int64_t j = 0; j < c; ++j) y[j] = x[j] * rstd * w[j];
    rstd_n[row] = rstd;
  }
}

// y = x r w with r = (mean(x^2) + eps)^-1/2, so with g = dy * w:
// dx_j = r g_j - x_j r^3 mean_k(g_k x_k);  dw_j += sum_n dy_nj x_nj r_n.
template <typename T>
void rmsnorm_bwd(int64_t n, int64_t c, const T* dy_nc, const T* x_nc, const T* w, const T* rstd_n,
                 T* dx_nc, T* dw) {
#pragma omp parallel for schedule(static) if (n * c >= kParallelMinElements)
  for (int64_t row = 0; row < n; ++row) {
    const T* x = x_nc + row * c;
    const T* dy = dy_nc + row * c;
    T* dx = dx_nc + row * c;
    const T r = rstd_n[row];
    T dot = 0;
    for (int64_t j = 0; j < c; ++j) dot += dy[j] * w[j] * x[j];
    const T coef = r * r * r * dot / T(c);
    for (int64_t j = 0; j < c; ++j) dx[j] = r * dy[j] * w[j] - coef * x[j];
  }
  column_sums_add(n, c, dw, [=](int64_t row, int64_t j) {
    return dy_nc[row * c + j] * x_nc[row * c + j] * rstd_n[row];
  });
}

template <typename T>
void layernorm_fwd(int64_t n, int64_t c, const T* x_nc, const T* w, const T* b, double eps, T* y_nc,
                   T* mean_n, T* rstd_n) {
#pragma omp parallel for schedule(static) if (n * c >= kParallelMinElements)
  for (int64_t row = 0; row < n; ++row) {
    const T* x = x_nc + row * c;
    T* y = y_nc + row * c;
    // Two passes (mean, then centred squares): no cancellation when |mean| >> std.
    T sum = 0;
    for (int64_t j = 0; j < c; ++j) sum += x[j];
    const T mean = sum / T(c);
    T sum_sq = 0;
    for (int64_t j = 0; j < c; ++j) sum_sq += (x[j] - mean) * (x[j] - mean);
    const T rstd = T(1) / std::sqrt(sum_sq / T(c) + T(eps));
    for (int64_t j = 0; j < c; ++j) y[j] = (x[j] - mean) * rstd * w[j] + b[j];
    mean_n[row] = mean;
    rstd_n[row] = rstd;
  }
}

// With xhat = (x - mean) r and g = dy * w (Ba et al. 2016; the layernorm_backward of llm.c):
// dx_j = r (g_j - mean_k g_k - xhat_j mean_k(g_k xhat_k)); dw_j += sum_n dy xhat; db_j += sum_n dy.
template <typename T>
void layernorm_bwd(int64_t n, int64_t c, const T* dy_nc, const T* x_nc, const T* w, const T* mean_n,
                   const T* rstd_n, T* dx_nc, T* dw, T* db) {
#pragma omp parallel for schedule(static) if (n * c >= kParallelMinElements)
  for (int64_t row = 0; row < n; ++row) {
    const T* x = x_nc + row * c;
    const T* dy = dy_nc + row * c;
    T* dx = dx_nc + row * c;
    const T mean = mean_n[row];
    const T r = rstd_n[row];
    T sum_g = 0;
    T sum_gx = 0;
    for (int64_t j = 0; j < c; ++j) {
      const T g = dy[j] * w[j];
      sum_g += g;
      sum_gx += g * (x[j] - mean) * r;
    }
    const T mean_g = sum_g / T(c);
    const T mean_gx = sum_gx / T(c);
    for (int64_t j = 0; j < c; ++j) {
      const T xhat = (x[j] - mean) * r;
      dx[j] = r * (dy[j] * w[j] - mean_g - xhat * mean_gx);
    }
  }
  column_sums_add(n, c, dw, [=](int64_t row, int64_t j) {
    return dy_nc[row * c + j] * (x_nc[row * c + j] - mean_n[row]) * rstd_n[row];
  });
  column_sums_add(n, c, db, [=](int64_t row, int64_t j) { return dy_nc[row * c + j]; });
}

#define LOOM_INSTANTIATE_NORM_OPS(T)                                                              \
  template void rmsnorm_fwd<T>(int64_t, int64_t, const T*, const T*, double, T*, T*);             \
  template void rmsnorm_bwd<T>(int64_t, int64_t, const T*, const T*, const T*, const T*, T*, T*); \
  template void layernorm_fwd<T>(int64_t, int64_t, const T*, const T*, const T*, double, T*, T*,  \
                                 T*);                                                             \
  template void layernorm_bwd<T>(int64_t, int64_t, const T*, const T*, const T*, const T*,        \
                                 const T*, T*, T*, T*);

LOOM_INSTANTIATE_NORM_OPS(float)
LOOM_INSTANTIATE_NORM_OPS(double)
#undef LOOM_INSTANTIATE_NORM_OPS

}  // namespace loom::kernels::cpu
