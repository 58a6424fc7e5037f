// Causal grouped-query self-attention with optional ALiBi on the CPU, forward pass,
// FlashAttention-style (Dao et al. 2022, Algorithm 1): online softmax over 32 x 32 tiles, keeping
// only out and the log-sum-exp (cpu_attention_bwd.cc recomputes P from them). Parallel over
// (batch, query head). Also the ALiBi slopes (Press et al. 2022). Tested in
// tests/kernels_cpu/attention_test.cc (naive softmax reference, hand-computed slopes).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/attention_tiles.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/numerics.h"
#include "kernels/cpu/parallel.h"

namespace loom::kernels::cpu {
namespace {
using namespace attention_detail;  // NOLINT: internal helpers of this op

// Per-thread scratch of the forward: one head of q ([Tp, Dp]), k^T ([Dp, Tp]) and v ([Tp, Dp]),
// zero-padded (Tp = T rounded up to kTile, Dp = D rounded up to kChunk), and the output
// accumulator of one query tile ([kTile, Dp]).
template <typename T>
struct FwdScratch {
  FwdScratch(int64_t t, int64_t d)
      : tp(round_up(t, kTile)),
        dp(round_up(d, kChunk)),
        q(tp * dp),
        kt(tp * dp),
        v(tp * dp),
        acc(kTile * dp) {}
  int64_t tp, dp;
  std::vector<T> q, kt, v, acc;
};

// Online softmax over the key tiles of one query tile (Dao et al. 2022, Algorithm 1, lines
// 9-13): rescale the running sums and accumulators to the new row maximum, then acc += P V.
template <typename T>
void attention_fwd_query_tile(int64_t t, int64_t i0, T scale, T slope, FwdScratch<T>& w, T* row_max,
                              T* row_sum) {
  T s[kTile][kTile];
  const int64_t rows = std::min(kTile, t - i0);
  for (int64_t j0 = 0; j0 <= i0; j0 += kTile) {  // causal: key tiles up to the diagonal one
    score_tile(w.q.data(), w.kt.data(), w.tp, w.dp, i0, j0, scale, slope, s);
    for (int64_t r = 0; r < rows; ++r) {
      T tile_max = s[r][0];  // j = j0 <= i0 <= i: never masked, so finite
      for (int64_t c = 1; c < kTile; ++c) tile_max = std::max(tile_max, s[r][c]);
      const T factor = online_softmax_rescale(row_max[r], tile_max);
      T* acc = w.acc.data() + r * w.dp;
      for (int64_t k = 0; k < w.dp; ++k) acc[k] *= factor;
      T sum = row_sum[r] * factor;
      for (int64_t c = 0; c < kTile; ++c) {
        // Masked scores are -inf: exp gives exactly 0, written explicitly to avoid the call.
        s[r][c] = j0 + c > i0 + r ? T(0) : std::exp(s[r][c] - row_max[r]);
        sum += s[r][c];
      }
      row_sum[r] = sum;
    }
    for (int64_t r = rows; r < kTile; ++r) {  // padding rows (i >= T) contribute nothing
      for (int64_t c = 0; c < kTile; ++c) s[r][c] = T(0);
    }
    tile_gemm(&s[0][0], kTile, w.v.data() + j0 * w.dp, w.dp, kTile, w.dp, w.acc.data(), w.dp);
  }
}

template <typename T>
void attention_fwd_head(int64_t t, int64_t d, T scale, T slope, FwdScratch<T>& w, T* out_rows,
                        int64_t out_stride, T* lse_t) {
  T row_max[kTile];
  T row_sum[kTile];
  for (int64_t i0 = 0; i0 < t; i0 += kTile) {
    std::fill(w.acc.begin(), w.acc.end(), T(0));
    std::fill(row_max, row_max + kTile, -std::numeric_limits<T>::infinity());
    std::fill(row_sum, row_sum + kTile, T(0));
    attention_fwd_query_tile(t, i0, scale, slope, w, row_max, row_sum);
    const int64_t rows = std::min(kTile, t - i0);
    for (int64_t r = 0; r < rows; ++r) {
      const T inv = T(1) / row_sum[r];
      T* o = out_rows + (i0 + r) * out_stride;
      for (int64_t k = 0; k < d; ++k) o[k] = w.acc[r * w.dp + k] * inv;
      lse_t[i0 + r] = row_max[r] + std::log(row_sum[r]);
    }
  }
}

}  // namespace

template <typename T>
void attention_fwd(int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d, const T* q, const T* k,
                   const T* v, const float* alibi_slopes, T* out, T* lse_bht) {
  const int64_t group = hq / hkv;
  const T scale = T(1) / std::sqrt(static_cast<T>(d));
#pragma omp parallel if (b * hq > 1 && b * hq * t * t * d >= kParallelMinAttentionWork)
  {
    FwdScratch<T> w(t, d);
#pragma omp for schedule(dynamic)
    for (int64_t unit = 0; unit < b * hq; ++unit) {
      const int64_t batch = unit / hq;
      const int64_t head = unit % hq;
      const int64_t kv_head = head / group;
      gather(head_rows(q, t, hq, d, batch, head), t, d, w.q.data(), w.dp);
      gather_transposed(head_rows(k, t, hkv, d, batch, kv_head), t, d, w.kt.data(), w.tp);
      gather(head_rows(v, t, hkv, d, batch, kv_head), t, d, w.v.data(), w.dp);
      const T slope = alibi_slopes == nullptr ? T(0) : static_cast<T>(alibi_slopes[head]);
      attention_fwd_head(t, d, scale, slope, w, out + (batch * t * hq + head) * d, hq * d,
                         lse_bht + (batch * hq + head) * t);
    }
  }
}

template void attention_fwd<float>(int64_t, int64_t, int64_t, int64_t, int64_t, const float*,
                                   const float*, const float*, const float*, float*, float*);
template void attention_fwd<double>(int64_t, int64_t, int64_t, int64_t, int64_t, const double*,
                                    const double*, const double*, const float*, double*, double*);

// Press et al. 2022, section 3 and their released code; transformers' build_alibi_tensor:
// for the largest power of two n <= H, slopes are base^1..base^n with base = 2^(-8/n); the
// remaining H - n heads take the odd powers 1, 3, 5, ... of 2^(-4/n) (every other slope of the
// 2n-head sequence). Both bases are float32 tensors in transformers, hence the rounding of the
// base to float; the power is evaluated in double and rounded once (torch's float32 pow is
// within 1 ulp of that).
void alibi_slopes(int64_t h, float* slopes) {
  int64_t n = 1;
  while (n * 2 <= h) n *= 2;
  const double base = static_cast<float>(std::exp2(-8.0 / static_cast<double>(n)));
  for (int64_t i = 0; i < n; ++i) {
    slopes[i] = static_cast<float>(std::pow(base, static_cast<double>(i + 1)));
  }
  const double extra_base = static_cast<float>(std::exp2(-4.0 / static_cast<double>(n)));
  for (int64_t i = n; i < h; ++i) {
    const int64_t power = 2 * (i - n) + 1;
    slopes[i] = static_cast<float>(std::pow(extra_base, static_cast<double>(power)));
  }
}

}  // namespace loom::kernels::cpu
