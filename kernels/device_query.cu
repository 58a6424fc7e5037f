// CUDA device discovery: see device_query.h.
#include "kernels/device_query.h"

#include <cuda_runtime.h>

namespace loom::kernels {

CudaDeviceList query_cuda_devices() {
  CudaDeviceList out;
  cudaRuntimeGetVersion(&out.runtime_version);
  cudaDriverGetVersion(&out.driver_version);
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    out.no_device_reason = std::string("cudaGetDeviceCount: ") + cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error so later CUDA calls start clean
    return out;
  }
  if (count == 0) {
    out.no_device_reason = "cudaGetDeviceCount reports 0 devices";
    return out;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    CudaDevice d;
    d.index = i;
    d.name = prop.name;
    d.memory_gib = static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0);
    d.sm_count = prop.multiProcessorCount;
    d.compute_capability_major = prop.major;
    d.compute_capability_minor = prop.minor;
    out.devices.push_back(d);
  }
  if (out.devices.empty()) out.no_device_reason = "cudaGetDeviceProperties failed for every device";
  return out;
}

}  // namespace loom::kernels
