// Rotary position embedding (Su et al. 2021, Hugging Face rotate_half convention) and the MLP
// activations SwiGLU (Shazeer 2020) and GeLU-tanh on the CPU. The per-element formulas live in
// kernels/cpu/numerics.h, shared with the CUDA backend. Every loop writes disjoint memory, so
// results do not depend on the thread count. Tested in tests/kernels_cpu/cpu_ops_test.cc
// (direct complex-rotation formula, finite differences).
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/numerics.h"
#include "kernels/cpu/parallel.h"

namespace loom::kernels::cpu {

// transformers' _compute_default_rope_parameters:
//   inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
// The exponent 2i/dim is a float32 division and base is rounded to float32 (torch promotes the
// Python scalar to the tensor's dtype). The power is evaluated in double and rounded once to
// float (torch's float32 pow may differ from that by at most 1 ulp), the reciprocal in float.
// The angle t * inv_freq is a float32 product as in LlamaRotaryEmbedding.forward; its cos/sin
// are evaluated in double and rounded to float (within 1 ulp of torch's float32 cos/sin).
void rope_tables(int64_t t, int64_t rot_dim, double theta, float* cos_tr, float* sin_tr) {
  const int64_t half = rot_dim / 2;
  const float base = static_cast<float>(theta);
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(rot_dim);
    const float power = static_cast<float>(std::pow(static_cast<double>(base), exponent));
    const float inv_freq = 1.0f / power;
    for (int64_t pos = 0; pos < t; ++pos) {
      const float angle = static_cast<float>(pos) * inv_freq;
      cos_tr[pos * half + i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      sin_tr[pos * half + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
}

namespace {

// Rotates the first rot_dim dims of each head by +angle (sign = +1) or -angle (sign = -1):
// x1' = x1 cos - sign x2 sin, x2' = x2 cos + sign x1 sin; x1, x2 are the two halves of rot_dim.
template <typename T>
void rope_rotate(int64_t b, int64_t t, int64_t h, int64_t d, int64_t rot_dim, const float* cos_tr,
                 const float* sin_tr, T sign, T* x_bthd) {
  const int64_t half = rot_dim / 2;
  const int64_t rows = b * t;
#pragma omp parallel for schedule(static) if (rows * h * d >= kParallelMinElements)
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t pos = row % t;
    const float* cos_row = cos_tr + pos * half;
    const float* sin_row = sin_tr + pos * half;
    for (int64_t head = 0; head < h; ++head) {
      T* x = x_bthd + (row * h + head) * d;
      for (int64_t i = 0; i < half; ++i) {
        const T c = static_cast<T>(cos_row[i]);
        const T s = sign * static_cast<T>(sin_row[i]);
        const T x1 = x[i];
        const T x2 = x[i + half];
        x[i] = x1 * c - x2 * s;
        x[i + half] = x2 * c + x1 * s;
      }
    }
  }
}

}  // namespace

template <typename T>
void rope_fwd(int64_t b, int64_t t, int64_t h, int64_t d, int64_t rot_dim, const float* cos_tr,
              const float* sin_tr, T* x_bthd) {
  rope_rotate(b, t, h, d, rot_dim, cos_tr, sin_tr, T(1), x_bthd);
}

// The rotation is orthogonal, so its transpose (the backward) is the rotation by -angle.
template <typename T>
void rope_bwd(int64_t b, int64_t t, int64_t h, int64_t d, int64_t rot_dim, const float* cos_tr,
              const float* sin_tr, T* dx_bthd) {
  rope_rotate(b, t, h, d, rot_dim, cos_tr, sin_tr, T(-1), dx_bthd);
}

template <typename T>
void swiglu_fwd(int64_t count, const T* gate, const T* up, T* out) {
#pragma omp parallel for schedule(static) if (count >= kParallelMinElements)
  for (int64_t i = 0; i < count; ++i) out[i] = silu(gate[i]) * up[i];
}

// dgate = dout * up * silu'(gate), dup = dout * silu(gate).
template <typename T>
void swiglu_bwd(int64_t count, const T* dout, const T* gate, const T* up, T* dgate, T* dup) {
#pragma omp parallel for schedule(static) if (count >= kParallelMinElements)
  for (int64_t i = 0; i < count; ++i) {
    const T g = gate[i];
    const T u = up[i];  // both inputs are read before writing: dgate may alias gate, dup up
    dup[i] = dout[i] * silu(g);
    dgate[i] = dout[i] * u * silu_grad(g);
  }
}

template <typename T>
void gelu_fwd(int64_t count, const T* x, T* y) {
#pragma omp parallel for schedule(static) if (count >= kParallelMinElements)
  for (int64_t i = 0; i < count; ++i) y[i] = gelu_tanh(x[i]);
}

template <typename T>
void gelu_bwd(int64_t count, const T* dy, const T* x, T* dx) {
#pragma omp parallel for schedule(static) if (count >= kParallelMinElements)
  for (int64_t i = 0; i < count; ++i) dx[i] = dy[i] * gelu_tanh_grad(x[i]);
}

#define LOOM_INSTANTIATE_POINTWISE_OPS(T)                                              \
  template void rope_fwd<T>(int64_t, int64_t, int64_t, int64_t, int64_t, const float*, \
                            const float*, T*);                                         \
  template void rope_bwd<T>(int64_t, int64_t, int64_t, int64_t, int64_t, const float*, \
                            const float*, T*);                                         \
  template void swiglu_fwd<T>(int64_t, const T*, const T*, T*);                        \
  template void swiglu_bwd<T>(int64_t, const T*, const T*, const T*, T*, T*);          \
  template void gelu_fwd<T>(int64_t, const T*, T*);                                    \
  template void gelu_bwd<T>(int64_t, const T*, const T*, T*);

LOOM_INSTANTIATE_POINTWISE_OPS(float)
LOOM_INSTANTIATE_POINTWISE_OPS(double)
#undef LOOM_INSTANTIATE_POINTWISE_OPS

}  // namespace loom::kernels::cpu
