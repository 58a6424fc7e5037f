// Backward of the causal GQA/ALiBi attention of cpu_attention.cc, FlashAttention-2 style
// (Dao 2023, Algorithm 2): P = exp(S - lse) is recomputed tile by tile from q, k and the saved
// lse; D_i = sum_k dO_ik O_ik; dS = P * (dP - D_i); dV = P^T dO, dK = dS^T Q / sqrt(d),
// dQ = dS K / sqrt(d). One thread owns a (batch, kv head) and its whole query-head group, so dk
// and dv sum in a fixed order (bit-identical for any thread count). Tested in
// tests/kernels_cpu/attention_test.cc (finite differences, 1 vs 2 threads).
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/attention_tiles.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/parallel.h"

namespace loom::kernels::cpu {
namespace {
using namespace attention_detail;  // NOLINT: internal helpers of this op

// Per-thread scratch, zero-padded like the forward's (Tp = T rounded up to kTile, Dp = D rounded
// up to kChunk): the kv head (k [Tp, Dp], k^T and v^T [Dp, Tp]) with its gradient sums dk, dv,
// and one query head (q, dout, dq [Tp, Dp]; lse, D_i [Tp]).
template <typename T>
struct BwdScratch {
  BwdScratch(int64_t t, int64_t d)
      : tp(round_up(t, kTile)),
        dp(round_up(d, kChunk)),
        k(tp * dp),
        kt(tp * dp),
        vt(tp * dp),
        dk(tp * dp),
        dv(tp * dp),
        q(tp * dp),
        dout(tp * dp),
        dq(tp * dp),
        lse(tp),
        di(tp) {}
  int64_t tp, dp;
  std::vector<T> k, kt, vt, dk, dv, q, dout, dq, lse, di;
};

// One (query tile i0, key tile j0) step: recompute P, form dS, then the three gradient products.
template <typename T>
void attention_bwd_tile(int64_t t, int64_t i0, int64_t j0, T scale, T slope, BwdScratch<T>& w) {
  T p[kTile][kTile];
  T ds[kTile][kTile];
  T transposed[kTile][kTile];
  score_tile(w.q.data(), w.kt.data(), w.tp, w.dp, i0, j0, scale, slope, p);
  for (int64_t r = 0; r < kTile; ++r) {
    for (int64_t c = 0; c < kTile; ++c) ds[r][c] = T(0);
  }
  tile_gemm(w.dout.data() + i0 * w.dp, w.dp, w.vt.data() + j0, w.tp, w.dp, kTile, &ds[0][0],
            kTile);  // dP = dO V^T
  for (int64_t r = 0; r < kTile; ++r) {
    const int64_t i = i0 + r;
    for (int64_t c = 0; c < kTile; ++c) {
      if (i >= t || j0 + c > i) {  // padding row or causal mask: P = 0, dS = 0
        p[r][c] = T(0);
        ds[r][c] = T(0);
        continue;
      }
      p[r][c] = std::exp(p[r][c] - w.lse[i]);
      ds[r][c] = p[r][c] * (ds[r][c] - w.di[i]) * scale;  // scale: d(q.k / sqrt(D)) / d(q.k)
    }
  }
  transpose_tile(p, transposed);  // dV[j] += sum_i P[i][j] dO[i]
  tile_gemm(&transposed[0][0], kTile, w.dout.data() + i0 * w.dp, w.dp, kTile, w.dp,
            w.dv.data() + j0 * w.dp, w.dp);
  transpose_tile(ds, transposed);  // dK[j] += sum_i dS[i][j] q[i]
  tile_gemm(&transposed[0][0], kTile, w.q.data() + i0 * w.dp, w.dp, kTile, w.dp,
            w.dk.data() + j0 * w.dp, w.dp);
  tile_gemm(&ds[0][0], kTile, w.k.data() + j0 * w.dp, w.dp, kTile, w.dp,  // dQ[i] += dS k
            w.dq.data() + i0 * w.dp, w.dp);
}

// Adds one query head's contributions to w.dk / w.dv and leaves its dq in w.dq.
template <typename T>
void attention_bwd_head(int64_t t, T scale, T slope, BwdScratch<T>& w) {
  std::fill(w.dq.begin(), w.dq.end(), T(0));
  for (int64_t i0 = 0; i0 < t; i0 += kTile) {
    for (int64_t j0 = 0; j0 <= i0; j0 += kTile) attention_bwd_tile(t, i0, j0, scale, slope, w);
  }
}

// w.q, w.dout, w.lse and w.di = rowsum(dO * O) (Dao 2023, Algorithm 2, line 4) <- query head
// `head` of batch `batch`.
template <typename T>
void load_query_head(int64_t t, int64_t hq, int64_t d, int64_t batch, int64_t head, const T* q,
                     const T* out, const T* lse_bht, const T* dout, BwdScratch<T>& w) {
  gather(head_rows(q, t, hq, d, batch, head), t, d, w.q.data(), w.dp);
  gather(head_rows(dout, t, hq, d, batch, head), t, d, w.dout.data(), w.dp);
  const T* lse = lse_bht + (batch * hq + head) * t;
  std::copy(lse, lse + t, w.lse.begin());
  const HeadRows<T> o = head_rows(out, t, hq, d, batch, head);
  for (int64_t i = 0; i < t; ++i) {
    T sum = 0;
    for (int64_t k = 0; k < d; ++k) sum += w.dout[i * w.dp + k] * o.row(i)[k];
    w.di[i] = sum;
  }
}

}  // namespace

template <typename T>
void attention_bwd(int64_t b, int64_t t, int64_t hq, int64_t hkv, int64_t d, const T* q, const T* k,
                   const T* v, const float* alibi_slopes, const T* out, const T* lse_bht,
                   const T* dout, T* dq, T* dk, T* dv) {
  const int64_t group = hq / hkv;
  const T scale = T(1) / std::sqrt(static_cast<T>(d));
#pragma omp parallel if (b * hkv > 1 && b * hq * t * t * d >= kParallelMinAttentionWork)
  {
    BwdScratch<T> w(t, d);
#pragma omp for schedule(dynamic)
    for (int64_t unit = 0; unit < b * hkv; ++unit) {
      const int64_t batch = unit / hkv;
      const int64_t kv_head = unit % hkv;
      const HeadRows<T> k_rows = head_rows(k, t, hkv, d, batch, kv_head);
      gather(k_rows, t, d, w.k.data(), w.dp);
      gather_transposed(k_rows, t, d, w.kt.data(), w.tp);
      gather_transposed(head_rows(v, t, hkv, d, batch, kv_head), t, d, w.vt.data(), w.tp);
      std::fill(w.dk.begin(), w.dk.end(), T(0));
      std::fill(w.dv.begin(), w.dv.end(), T(0));
      for (int64_t head = kv_head * group; head < (kv_head + 1) * group; ++head) {
        load_query_head(t, hq, d, batch, head, q, out, lse_bht, dout, w);
        const T slope = alibi_slopes == nullptr ? T(0) : static_cast<T>(alibi_slopes[head]);
        attention_bwd_head(t, scale, slope, w);
        scatter(w.dq.data(), w.dp, t, d, dq + (batch * t * hq + head) * d, hq * d);
      }
      scatter(w.dk.data(), w.dp, t, d, dk + (batch * t * hkv + kv_head) * d, hkv * d);
      scatter(w.dv.data(), w.dp, t, d, dv + (batch * t * hkv + kv_head) * d, hkv * d);
    }
  }
}

template void attention_bwd<float>(int64_t, int64_t, int64_t, int64_t, int64_t, const float*,
                                   const float*, const float*, const float*, const float*,
                                   const float*, const float*, float*, float*, float*);
template void attention_bwd<double>(int64_t, int64_t, int64_t, int64_t, int64_t, const double*,
                                    const double*, const double*, const float*, const double*,
                                    const double*, const double*, double*, double*, double*);

}  // namespace loom::kernels::cpu
