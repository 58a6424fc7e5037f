// CUDA device discovery. Without a driver (CI, laptops) cudaGetDeviceCount fails with
// "driver version is insufficient" or "no CUDA-capable device"; any such error means "no
// device" and is reported as a reason, never as a crash. Built only when CUDA is found.
#pragma once

#include <string>
#include <vector>

namespace loom::kernels {

struct CudaDevice {
  int index = 0;
  std::string name;
  double memory_gib = 0;  // total device memory as cudaGetDeviceProperties reports it
  int sm_count = 0;
  int compute_capability_major = 0;
  int compute_capability_minor = 0;
};

struct CudaDeviceList {
  std::vector<CudaDevice> devices;
  std::string no_device_reason;  // set when devices is empty
  int runtime_version = 0;       // cudaRuntimeGetVersion
  int driver_version = 0;        // cudaDriverGetVersion (0 without a driver)
};

CudaDeviceList query_cuda_devices();

}  // namespace loom::kernels
