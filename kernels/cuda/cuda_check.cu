#include "kernels/cuda/cuda_check.h"

#include <fmt/format.h>

namespace loom::kernels::cuda {

void throw_cuda_error(cudaError_t error, const char* call, const char* file, int line) {
  throw CudaError(fmt::format("{}:{}: {}: {} ({})", file, line, call, cudaGetErrorString(error),
                              cudaGetErrorName(error)));
}

void throw_cublas_error(cublasStatus_t status, const char* call, const char* file, int line) {
  throw CudaError(fmt::format("{}:{}: {}: {} ({})", file, line, call,
                              cublasLtGetStatusString(status), static_cast<int>(status)));
}

DeviceBytes::DeviceBytes(std::size_t bytes) : bytes_(bytes) {
  if (bytes > 0) LOOM_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
}

DeviceBytes::~DeviceBytes() {
  if (ptr_ != nullptr) cudaFree(ptr_);
}

}  // namespace loom::kernels::cuda
