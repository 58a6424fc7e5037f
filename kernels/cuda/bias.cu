// Biases, position tables and the bf16 weight copy: see bias.h.
#include "kernels/cuda/bias.h"

#include "kernels/cuda/bf16_bits.cuh"
#include "kernels/cuda/cuda_check.h"

namespace loom::kernels::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kRowsPerChunk = 128;

unsigned grid_for(int64_t count) {
  const int64_t blocks = (count + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65535 * 16 ? blocks : 65535 * 16);
}

__global__ void bias_add_kernel(int64_t n, int64_t c, const float* __restrict__ bias,
                                __nv_bfloat16* __restrict__ y) {
  const int64_t total = n * c;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * blockDim.x) {
    y[i] = make_bf16(load_bf16(y[i]) + bias[i % c]);
  }
}

// partial[chunk, col] = sum of dy[row, col] over the chunk's rows, in order.
__global__ void bias_partial_kernel(int64_t n, int64_t c, const __nv_bfloat16* __restrict__ dy,
                                    float* __restrict__ partial) {
  const int64_t col = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  if (col >= c) return;
  const int64_t r0 = chunk * kRowsPerChunk;
  const int64_t r1 = r0 + kRowsPerChunk < n ? r0 + kRowsPerChunk : n;
  float s = 0.0f;
  for (int64_t r = r0; r < r1; ++r) s += load_bf16(dy[r * c + col]);
  partial[chunk * c + col] = s;
}

__global__ void bias_reduce_kernel(int64_t chunks, int64_t c, const float* __restrict__ partial,
                                   float* __restrict__ dbias) {
  const int64_t col = blockIdx.x * int64_t{blockDim.x} + threadIdx.x;
  if (col >= c) return;
  float s = 0.0f;
  for (int64_t k = 0; k < chunks; ++k) s += partial[k * c + col];
  dbias[col] += s;
}

__global__ void convert_kernel(int64_t count, const float* __restrict__ src,
                               __nv_bfloat16* __restrict__ dst) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
       i += int64_t{gridDim.x} * blockDim.x) {
    dst[i] = make_bf16(src[i]);
  }
}

}  // namespace

void bias_add(int64_t n, int64_t c, const float* bias, __nv_bfloat16* y_nc, cudaStream_t stream) {
  if (n <= 0 || c <= 0) return;
  bias_add_kernel<<<grid_for(n * c), kThreads, 0, stream>>>(n, c, bias, y_nc);
  LOOM_CUDA_CHECK_LAUNCH();
}

std::size_t bias_bwd_workspace_bytes(int64_t n, int64_t c) {
  return sizeof(float) * static_cast<std::size_t>((n + kRowsPerChunk - 1) / kRowsPerChunk * c);
}

void bias_bwd(int64_t n, int64_t c, const __nv_bfloat16* dy_nc, float* dbias, void* workspace,
              cudaStream_t stream) {
  if (n <= 0 || c <= 0) return;
  const int64_t chunks = (n + kRowsPerChunk - 1) / kRowsPerChunk;
  float* partial = static_cast<float*>(workspace);
  const dim3 grid(static_cast<unsigned>((c + kThreads - 1) / kThreads), static_cast<unsigned>(chunks));
  bias_partial_kernel<<<grid, kThreads, 0, stream>>>(n, c, dy_nc, partial);
  LOOM_CUDA_CHECK_LAUNCH();
  bias_reduce_kernel<<<static_cast<unsigned>((c + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      chunks, c, partial, dbias);
  LOOM_CUDA_CHECK_LAUNCH();
}

void convert_to_bf16(int64_t count, const float* src, __nv_bfloat16* dst, cudaStream_t stream) {
  if (count <= 0) return;
  convert_kernel<<<grid_for(count), kThreads, 0, stream>>>(count, src, dst);
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace loom::kernels::cuda
