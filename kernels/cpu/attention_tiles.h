// Internal to kernels/cpu: the tile machinery shared by the attention forward
// (cpu_attention.cc) and backward (cpu_attention_bwd.cc). One head is gathered into zero-padded
// contiguous buffers (T rounded up to kTile, D up to kChunk), so every tile product has fixed
// bounds the compiler vectorises and keeps in registers. Both passes compute scores with the same
// function, so the backward recomputes exactly the scores the forward normalised. Tested through
// tests/kernels_cpu/attention_test.cc.
#pragma once

#include <Eigen/Core>
#include <cstdint>
#include <limits>

namespace loom::kernels::cpu::attention_detail {

// Query rows and key columns per tile: a 32 x 64 fp32 K^T or V tile is 8 KiB, so the q, k, v
// and accumulator tiles of one step stay in L1 for D = 64.
inline constexpr int64_t kTile = 32;
// Register block of tile_gemm: 4 rows x 8 columns of C (8 SSE / 4 AVX registers of fp32).
inline constexpr int64_t kRowBlock = 4;
inline constexpr int64_t kChunk = 8;

inline constexpr int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Strided view of one head: row t of (batch, head) at base + t * stride, D contiguous values.
template <typename T>
struct HeadRows {
  const T* base;
  int64_t stride;
  const T* row(int64_t t) const { return base + t * stride; }
};

template <typename T>
HeadRows<T> head_rows(const T* x_bthd, int64_t t, int64_t h, int64_t d, int64_t batch,
                      int64_t head) {
  return {x_bthd + (batch * t * h + head) * d, h * d};
}

// dst[i, k] <- src row i, element k for i < t, k < d; dst has row stride ld (>= d). The padding
// of dst (rows >= t, columns >= d) is left as it is: zero from allocation.
template <typename T>
void gather(const HeadRows<T>& src, int64_t t, int64_t d, T* dst, int64_t ld) {
  for (int64_t i = 0; i < t; ++i) {
    for (int64_t k = 0; k < d; ++k) dst[i * ld + k] = src.row(i)[k];
  }
}

// dst[k, i] <- src row i, element k: the head transposed ([D, T] with row stride ld), so that a
// tile of q.k scores is a tile product over contiguous key columns.
template <typename T>
void gather_transposed(const HeadRows<T>& src, int64_t t, int64_t d, T* dst, int64_t ld) {
  for (int64_t i = 0; i < t; ++i) {
    for (int64_t k = 0; k < d; ++k) dst[k * ld + i] = src.row(i)[k];
  }
}

// x rows i < t, elements k < d <- src (row stride ld).
template <typename T>
void scatter(const T* src, int64_t ld, int64_t t, int64_t d, T* x_bthd, int64_t stride) {
  for (int64_t i = 0; i < t; ++i) {
    for (int64_t k = 0; k < d; ++k) x_bthd[i * stride + k] = src[i * ld + k];
  }
}

// C[kTile, n] += A[kTile, k] * B[k, n] (row-major with leading dimensions lda, ldb, ldc; n a
// multiple of kChunk). A 4 x 8 block of C stays in registers as Eigen fixed-size packets while
// p runs over k (an outer-product update, element-wise only, so no reduction is reassociated):
// each C element sums over p = 0..k-1 in order, whatever the thread count or the SIMD width.
template <typename T>
void tile_gemm(const T* a, int64_t lda, const T* b, int64_t ldb, int64_t k, int64_t n, T* c,
               int64_t ldc) {
  using Chunk = Eigen::Array<T, kChunk, 1>;
  for (int64_t r0 = 0; r0 < kTile; r0 += kRowBlock) {
    for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
      Chunk acc[kRowBlock];
      for (int64_t i = 0; i < kRowBlock; ++i) {
        acc[i] = Eigen::Map<const Chunk>(c + (r0 + i) * ldc + c0);
      }
      for (int64_t p = 0; p < k; ++p) {
        const Chunk bp = Eigen::Map<const Chunk>(b + p * ldb + c0);
        for (int64_t i = 0; i < kRowBlock; ++i) acc[i] += a[(r0 + i) * lda + p] * bp;
      }
      for (int64_t i = 0; i < kRowBlock; ++i) {
        Eigen::Map<Chunk>(c + (r0 + i) * ldc + c0) = acc[i];
      }
    }
  }
}

// s[r][c] for the tile at (i0, j0): q.k / sqrt(D) - slope * (i - j), and -inf where j > i
// (causal). q: [Tp, Dp] (row stride dp), kt: [Dp, Tp] (row stride tp).
template <typename T>
void score_tile(const T* q, const T* kt, int64_t tp, int64_t dp, int64_t i0, int64_t j0, T scale,
                T slope, T (*s)[kTile]) {
  for (int64_t r = 0; r < kTile; ++r) {
    for (int64_t c = 0; c < kTile; ++c) s[r][c] = T(0);
  }
  tile_gemm(q + i0 * dp, dp, kt + j0, tp, dp, kTile, &s[0][0], kTile);
  for (int64_t r = 0; r < kTile; ++r) {
    const int64_t i = i0 + r;
    for (int64_t c = 0; c < kTile; ++c) {
      const int64_t j = j0 + c;
      s[r][c] = j > i ? -std::numeric_limits<T>::infinity()
                      : s[r][c] * scale - slope * static_cast<T>(i - j);
    }
  }
}

// dst = src^T for one tile.
template <typename T>
void transpose_tile(const T (*src)[kTile], T (*dst)[kTile]) {
  for (int64_t r = 0; r < kTile; ++r) {
    for (int64_t c = 0; c < kTile; ++c) dst[c][r] = src[r][c];
  }
}

}  // namespace loom::kernels::cpu::attention_detail
