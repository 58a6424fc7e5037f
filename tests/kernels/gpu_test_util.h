// Helpers for the gpu-labelled tests: skip with the reason when no device is usable, move host
// vectors to and from the device (fp32 or bf16 bits), and compare a device result with the CPU
// backend's under a stated tolerance.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/numerics.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/device_query.h"

namespace loom::kernels::testing {

// Empty when a device is usable; otherwise why not (the test then GTEST_SKIPs with it).
inline std::string gpu_unavailable_reason() {
  static const std::string reason = [] {
    const CudaDeviceList list = query_cuda_devices();
    return list.devices.empty() ? list.no_device_reason : std::string();
  }();
  return reason;
}

#define LOOM_REQUIRE_GPU()                                                               \
  do {                                                                                   \
    const std::string loom_reason_ = ::loom::kernels::testing::gpu_unavailable_reason(); \
    if (!loom_reason_.empty()) GTEST_SKIP() << "no CUDA device: " << loom_reason_;        \
  } while (0)

// Normal(0, scale) values, rounded to bf16 so that host and device see identical inputs.
inline std::vector<float> random_bf16_values(std::size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = bf16_round(dist(rng));
  return v;
}

inline std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = float_to_bf16(v[i]);
  return out;
}

inline std::vector<float> from_bf16(const std::vector<uint16_t>& v) {
  std::vector<float> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_float(v[i]);
  return out;
}

template <typename T>
cuda::DeviceBuffer<T> upload(const std::vector<T>& host) {
  cuda::DeviceBuffer<T> d(host.size());
  LOOM_CUDA_CHECK(cudaMemcpy(d.get(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

template <typename T>
std::vector<T> download(const cuda::DeviceBuffer<T>& d) {
  std::vector<T> host(d.size());
  LOOM_CUDA_CHECK(cudaDeviceSynchronize());
  LOOM_CUDA_CHECK(cudaMemcpy(host.data(), d.get(), d.size() * sizeof(T), cudaMemcpyDeviceToHost));
  return host;
}

// max_i |got - want| / (atol + rtol * |want|) must be <= 1; reports the worst element.
inline ::testing::AssertionResult all_close(const std::vector<float>& got,
                                            const std::vector<float>& want, double rtol,
                                            double atol) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << "size " << got.size() << " vs " << want.size();
  double worst = 0;
  std::size_t at = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const double err = std::abs(double(got[i]) - double(want[i])) / (atol + rtol * std::abs(double(want[i])));
    if (!(err <= worst)) {  // NaN counts as worst
      worst = std::isnan(err) ? INFINITY : err;
      at = i;
    }
  }
  if (worst <= 1.0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "element " << at << ": got " << got[at] << ", want "
                                       << want[at] << " (rtol " << rtol << ", atol " << atol
                                       << ", normalised error " << worst << ")";
}

}  // namespace loom::kernels::testing
