// Parameter initialisation on the device: N(0, std) from a counter-based generator (each element
// a pure function of seed and index: the same weights for the same seed on any GPU, launch shape
// or run) and constants. Drawing a 1.3B-parameter model on the host takes about a minute; here it
// takes milliseconds. The draws differ from the CPU trainer's (mt19937_64 in parameter order).
// Tested in tests/kernels/bias_gpu_test.cc (moments, reproducibility).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace loom::kernels::cuda {

// out[i] = stddev * z(seed, first + i), z standard normal (Box-Muller on two 32-bit uniforms of
// splitmix64(seed, index)).
void fill_normal(int64_t count, uint64_t seed, uint64_t first, float stddev, float* out,
                 cudaStream_t stream);
// out[i] = value.
void fill_value(int64_t count, float value, float* out, cudaStream_t stream);

}  // namespace loom::kernels::cuda
