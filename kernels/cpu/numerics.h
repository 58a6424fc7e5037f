// Per-element and per-row numerics shared by the CPU operators (kernels/cpu/*.cc) and the later
// CUDA backend: GeLU (tanh) and SiLU with their derivatives, the online-softmax update, the
// log-sum-exp merge, one AdamW element update and bf16 <-> fp32 conversion (round to nearest
// even). Every function is LOOM_HD so that host and device run the very same arithmetic.
// Tested in tests/kernels_cpu/numerics_test.cc (hand-computed values, bf16 tie cases) and
// through every op test that calls them.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define LOOM_HD __host__ __device__
#else
#define LOOM_HD
#endif

namespace loom::kernels {

// ---- activations --------------------------------------------------------------------------------
// sqrt(2/pi) and the cubic coefficient of the tanh approximation (Hendrycks & Gimpel 2016, eq. 2;
// the constants of GPT-2's gelu_new and BLOOM's bloom_gelu_forward).
inline constexpr double kGeluSqrt2OverPi = 0.7978845608028654;
inline constexpr double kGeluCubic = 0.044715;

// gelu(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
template <typename T>
LOOM_HD inline T gelu_tanh(T x) {
  const T u = T(kGeluSqrt2OverPi) * (x + T(kGeluCubic) * x * x * x);
  return T(0.5) * x * (T(1) + std::tanh(u));
}

// d gelu / dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2), t = tanh(u).
template <typename T>
LOOM_HD inline T gelu_tanh_grad(T x) {
  const T x2 = x * x;
  const T t = std::tanh(T(kGeluSqrt2OverPi) * (x + T(kGeluCubic) * x2 * x));
  const T du = T(kGeluSqrt2OverPi) * (T(1) + T(3 * kGeluCubic) * x2);
  return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * du;
}

// sigmoid(x) = 1 / (1 + e^-x); exp(-x) overflowing to inf for very negative x gives 0, as it
// should.
template <typename T>
LOOM_HD inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// silu(x) = x sigmoid(x) (Elfwing et al. 2018; the gate of SwiGLU, Shazeer 2020).
template <typename T>
LOOM_HD inline T silu(T x) {
  return x * sigmoid(x);
}

// d silu / dx = s (1 + x (1 - s)), s = sigmoid(x).
template <typename T>
LOOM_HD inline T silu_grad(T x) {
  const T s = sigmoid(x);
  return s * (T(1) + x * (T(1) - s));
}

// ---- softmax ------------------------------------------------------------------------------------
// -inf of T from the INFINITY macro (a float constant expression), which, unlike
// std::numeric_limits<T>::infinity(), device code may use without --expt-relaxed-constexpr.
template <typename T>
LOOM_HD inline T negative_infinity() {
  return -static_cast<T>(INFINITY);
}

// Online softmax (Milakov & Gimelshein 2018, Algorithm 3; the inner loop of FlashAttention, Dao
// et al. 2022, Algorithm 1). The state is (running_max, running_sum) with
// running_sum = sum_j exp(s_j - running_max); it starts at (-inf, 0).
//
// Raises running_max to cover block_max and returns the factor exp(old_max - new_max) by which a
// sum (or an output accumulator) formed against the old maximum must be scaled; 0 when nothing
// has been seen yet (old_max = -inf), so that no -inf - -inf = NaN appears.
template <typename T>
LOOM_HD inline T online_softmax_rescale(T& running_max, T block_max) {
  const T new_max = block_max > running_max ? block_max : running_max;
  const T factor = running_max == negative_infinity<T>() ? T(0) : std::exp(running_max - new_max);
  running_max = new_max;
  return factor;
}

// Folds one score s into the state; returns the factor that rescales the accumulators (the
// caller then adds exp(s - running_max) * v_j to them).
template <typename T>
LOOM_HD inline T online_softmax_update(T& running_max, T& running_sum, T s) {
  const T factor = online_softmax_rescale(running_max, s);
  running_sum = running_sum * factor + std::exp(s - running_max);
  return factor;
}

// log(exp(a) + exp(b)) without overflow: max + log1p(exp(-|a - b|)); -inf is the identity.
// Merges the log-sum-exp of two disjoint parts of a row (split-K attention, vocab-parallel
// cross-entropy).
template <typename T>
LOOM_HD inline T lse_merge(T a, T b) {
  if (a == negative_infinity<T>()) return b;
  if (b == negative_infinity<T>()) return a;
  const T hi = a > b ? a : b;
  const T lo = a > b ? b : a;
  return hi + std::log1p(std::exp(lo - hi));
}

// ---- optimizer ----------------------------------------------------------------------------------
// AdamW hyper-parameters of one step (Loshchilov & Hutter 2019, Algorithm 2). bias_correction1/2
// are 1 - beta1^t and 1 - beta2^t for the 1-based step t (Kingma & Ba 2015, Algorithm 1).
struct AdamWStep {
  float lr;
  float beta1;
  float beta2;
  float eps;
  float weight_decay;
  float bias_correction1;
  float bias_correction2;
};

// One element: m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; mhat = m / bc1; vhat = v / bc2;
// p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p). Decoupled weight decay uses p before the step,
// as torch.optim.AdamW does (it scales p by 1 - lr*wd first, which is the same expression).
// The moments and the update are computed in T (fp32 for training, fp64 in tests).
template <typename T>
LOOM_HD inline void adamw_update(T& param, T& m, T& v, T grad, const AdamWStep& h) {
  m = T(h.beta1) * m + (T(1) - T(h.beta1)) * grad;
  v = T(h.beta2) * v + (T(1) - T(h.beta2)) * grad * grad;
  const T m_hat = m / T(h.bias_correction1);
  const T v_hat = v / T(h.bias_correction2);
  param -= T(h.lr) * (m_hat / (std::sqrt(v_hat) + T(h.eps)) + T(h.weight_decay) * param);
}

// ---- bf16 ---------------------------------------------------------------------------------------
// bf16 is the upper half of an IEEE-754 binary32 (1 sign, 8 exponent, 7 mantissa bits).
LOOM_HD inline uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

LOOM_HD inline float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

// float -> bf16 bits, round to nearest, ties to even (the rounding of torch's .to(bfloat16) and of
// CUDA's __float2bfloat16_rn): add 0x7FFF plus the lowest kept bit, then truncate. NaN stays a
// (quiet) NaN of the same sign; overflow rounds to +-inf as IEEE rounding does.
LOOM_HD inline uint16_t float_to_bf16(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);
  const uint32_t lsb = (u >> 16) & 1u;
  return static_cast<uint16_t>((u + 0x7FFFu + lsb) >> 16);
}

// bf16 bits -> float (exact).
LOOM_HD inline float bf16_to_float(uint16_t h) {
  return bits_float(static_cast<uint32_t>(h) << 16);
}

// The float nearest to f among bf16 values (what a bf16 store followed by a load returns).
LOOM_HD inline float bf16_round(float f) { return bf16_to_float(float_to_bf16(f)); }

}  // namespace loom::kernels
