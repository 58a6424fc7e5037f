// Launches a kernel with `smem` bytes of dynamic shared memory, opting in above the 48 KiB
// default (cudaFuncAttributeMaxDynamicSharedMemorySize), and checks the launch.
#pragma once

#include <cstddef>

#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.h"

namespace loom::kernels::cuda {

template <typename Kernel, typename... Args>
void launch_with_smem(Kernel kernel, dim3 grid, int threads, std::size_t smem, cudaStream_t stream,
                      Args... args) {
  if (smem > 48 * 1024)
    LOOM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(smem)));
  kernel<<<grid, threads, smem, stream>>>(args...);
  LOOM_CUDA_CHECK_LAUNCH();
}

}  // namespace loom::kernels::cuda
