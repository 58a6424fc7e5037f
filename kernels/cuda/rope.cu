// RoPE forward and backward on the device: the rotation of cpu_pointwise.cc's rope_rotate, one
// thread per rotated pair, in fp32 with one bf16 rounding per element. Tested in
// tests/kernels/rope_gpu_test.cc.
#include <stdexcept>
#include <string>

#include "kernels/cuda/bf16_bits.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/rope.h"
#include "kernels/cuda/vec_io.cuh"

namespace loom::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// Rotates the pairs by +angle (sign = +1) or -angle (sign = -1), as cpu rope_rotate:
// x1' = x1 c - x2 s, x2' = x2 c + x1 s with c = cos, s = sign * sin. Consecutive threads take
// consecutive i of one head, so a warp reads 32 consecutive bf16 of each half.
__global__ void __launch_bounds__(kThreads)
    rope_rotate_pairs(int64_t pairs, int64_t t, int64_t h, int64_t d, int64_t half,
                      const float* cos_tr, const float* sin_tr, float sign, __nv_bfloat16* x_bthd) {
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < pairs;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = p % half;
    const int64_t head_row = p / half;  // (b * T + t) * H + head
    const int64_t pos = (head_row / h) % t;
    const float c = cos_tr[pos * half + i];
    const float s = sign * sin_tr[pos * half + i];
    __nv_bfloat16* x = x_bthd + head_row * d;
    const float x1 = load_bf16(x[i]);
    const float x2 = load_bf16(x[i + half]);
    x[i] = make_bf16(x1 * c - x2 * s);
    x[i + half] = make_bf16(x2 * c + x1 * s);
  }
}

void rope_launch(const char* name, int64_t b, int64_t t, int64_t h, int64_t d, int64_t rot_dim,
                 const float* cos_tr, const float* sin_tr, float sign, __nv_bfloat16* x_bthd,
                 cudaStream_t stream) {
  if (rot_dim % 2 != 0 || rot_dim < 0 || rot_dim > d)
    throw std::invalid_argument(std::string(name) + ": rot_dim " + std::to_string(rot_dim) +
                                " must be even and in [0, D = " + std::to_string(d) + "]");
  const int64_t half = rot_dim / 2;
  const int64_t pairs = b * t * h * half;
  if (pairs <= 0) return;
  rope_rotate_pairs<<<detail::grid_stride_blocks(pairs, kThreads), kThreads, 0, stream>>>(
      pairs, t, h, d, half, cos_tr, sin_tr, sign, x_bthd);
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace

void rope_fwd(int64_t b, int64_t t, int64_t h, int64_t d, int64_t rot_dim, const float* cos_tr,
              const float* sin_tr, __nv_bfloat16* x_bthd, cudaStream_t stream) {
  rope_launch("rope_fwd", b, t, h, d, rot_dim, cos_tr, sin_tr, 1.0f, x_bthd, stream);
}

// The rotation is orthogonal, so its transpose (the backward) is the rotation by -angle.
void rope_bwd(int64_t b, int64_t t, int64_t h, int64_t d, int64_t rot_dim, const float* cos_tr,
              const float* sin_tr, __nv_bfloat16* dx_bthd, cudaStream_t stream) {
  rope_launch("rope_bwd", b, t, h, d, rot_dim, cos_tr, sin_tr, -1.0f, dx_bthd, stream);
}

}  // namespace loom::kernels::cuda
