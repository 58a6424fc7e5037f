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

}  // namespace loom::kernels::cpu
