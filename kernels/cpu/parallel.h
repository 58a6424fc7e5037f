// Internal to kernels/cpu: the thresholds and block sizes the CPU operators share for their
// OpenMP loops. Not part of the operator API (cpu_ops.h). Changing a constant here changes only
// speed, never results: every parallel loop writes disjoint memory and every reduction runs in
// a fixed order (tests/kernels_cpu/determinism_test.cc checks 1 vs 2 threads bit for bit).
#pragma once

#include <cstdint>

namespace loom::kernels::cpu {

// Below this many elements an OpenMP fork (a few microseconds) costs more than the loop itself
// (~32K fp32 elements at ~10 elements/ns): such loops run on the calling thread.
inline constexpr int64_t kParallelMinElements = int64_t{1} << 15;

// Attention forks only above this many score multiply-adds (B * H * T^2 * D, ~1 ms of work):
// below it the fork and barrier cost more than they save, and they cost far more on a loaded
// machine (a descheduled team member stalls every barrier).
inline constexpr int64_t kParallelMinAttentionWork = int64_t{1} << 20;

// Columns per task in column-parallel reductions (bias, LayerNorm dw/db, embedding rows):
// 64 fp32 = 4 cache lines, small enough to keep its accumulators in registers/L1.
inline constexpr int64_t kColumnBlock = 64;

inline constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// out[j] += sum over rows r = 0..n-1 of term(r, j), for j < c: the parameter-gradient reduction
// of bias, RMSNorm and LayerNorm. One thread owns a block of kColumnBlock columns and adds its
// rows in order into local accumulators, so the result is the same for any thread count.
template <typename T, typename Term>
void column_sums_add(int64_t n, int64_t c, T* out, Term term) {
  const int64_t blocks = ceil_div(c, kColumnBlock);
#pragma omp parallel for schedule(static) if (n * c >= kParallelMinElements)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kColumnBlock;
    const int64_t c1 = c0 + kColumnBlock < c ? c0 + kColumnBlock : c;
    T acc[kColumnBlock] = {};
    for (int64_t row = 0; row < n; ++row) {
      for (int64_t j = c0; j < c1; ++j) acc[j - c0] += term(row, j);
    }
    for (int64_t j = c0; j < c1; ++j) out[j] += acc[j - c0];
  }
}

}  // namespace loom::kernels::cpu
