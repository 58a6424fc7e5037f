// Device initialisation: see fill.h.
#include "kernels/cuda/fill.h"

#include "kernels/cuda/cuda_check.h"

namespace loom::kernels::cuda {

namespace {

constexpr int kThreads = 256;

__device__ inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

__global__ void fill_normal_kernel(int64_t count, uint64_t seed, uint64_t first, float stddev,
                                   float* __restrict__ out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
       i += int64_t{gridDim.x} * blockDim.x) {
    const uint64_t bits = splitmix64(seed ^ splitmix64(first + static_cast<uint64_t>(i)));
    // Two uniforms in (0, 1] and [0, 1) from the high and low 32 bits.
    const float u1 = (static_cast<float>(bits >> 40) + 1.0f) * (1.0f / 16777216.0f);
    const float u2 = static_cast<float>((bits >> 8) & 0xffffffu) * (1.0f / 16777216.0f);
    out[i] = stddev * sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
  }
}

__global__ void fill_value_kernel(int64_t count, float value, float* __restrict__ out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count;
       i += int64_t{gridDim.x} * blockDim.x) {
    out[i] = value;
  }
}

unsigned grid_for(int64_t count) {
  const int64_t blocks = (count + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < 65535 * 16 ? blocks : 65535 * 16);
}

}  // namespace

void fill_normal(int64_t count, uint64_t seed, uint64_t first, float stddev, float* out,
                 cudaStream_t stream) {
  if (count <= 0) return;
  fill_normal_kernel<<<grid_for(count), kThreads, 0, stream>>>(count, seed, first, stddev, out);
  LOOM_CUDA_CHECK_LAUNCH();
}

void fill_value(int64_t count, float value, float* out, cudaStream_t stream) {
  if (count <= 0) return;
  fill_value_kernel<<<grid_for(count), kThreads, 0, stream>>>(count, value, out);
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace loom::kernels::cuda
