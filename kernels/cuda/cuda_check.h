// CUDA error handling and device memory for the CUDA backend. A failing CUDA or cuBLAS call
// throws CudaError naming the call, the file:line and the library's message; the trainer's
// boundary turns it into an exit code. DeviceBuffer owns one cudaMalloc allocation.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>

namespace loom::kernels::cuda {

class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] void throw_cuda_error(cudaError_t error, const char* call, const char* file, int line);
[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* call, const char* file,
                                     int line);

// Raw device bytes (cudaMalloc / cudaFree); move-only.
class DeviceBytes {
 public:
  DeviceBytes() = default;
  explicit DeviceBytes(std::size_t bytes);
  ~DeviceBytes();
  DeviceBytes(DeviceBytes&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(o.bytes_) {}
  DeviceBytes& operator=(DeviceBytes&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  DeviceBytes(const DeviceBytes&) = delete;
  DeviceBytes& operator=(const DeviceBytes&) = delete;
  void* get() const { return ptr_; }
  std::size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

// A typed device array of `count` elements.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t count) : mem_(count * sizeof(T)), count_(count) {}
  T* get() const { return static_cast<T*>(mem_.get()); }
  std::size_t size() const { return count_; }

 private:
  DeviceBytes mem_;
  std::size_t count_ = 0;
};

}  // namespace loom::kernels::cuda

#define LOOM_CUDA_CHECK(call)                                                      \
  do {                                                                             \
    const cudaError_t loom_cuda_error_ = (call);                                   \
    if (loom_cuda_error_ != cudaSuccess)                                           \
      ::loom::kernels::cuda::throw_cuda_error(loom_cuda_error_, #call, __FILE__, __LINE__); \
  } while (0)

#define LOOM_CUBLAS_CHECK(call)                                                    \
  do {                                                                             \
    const cublasStatus_t loom_cublas_status_ = (call);                             \
    if (loom_cublas_status_ != CUBLAS_STATUS_SUCCESS)                              \
      ::loom::kernels::cuda::throw_cublas_error(loom_cublas_status_, #call, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: launch-configuration errors surface here, not at the next call.
#define LOOM_CUDA_CHECK_LAUNCH() LOOM_CUDA_CHECK(cudaGetLastError())
