// Device discovery: on a machine without a driver the query reports a reason instead of
// failing; with a device it reports the device's memory (checked against cudaMemGetInfo).
#include "kernels/device_query.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>

namespace loom::kernels {
namespace {

TEST(DeviceQuery, ReportsDevicesOrAReason) {
  const CudaDeviceList list = query_cuda_devices();
  if (list.devices.empty()) {
    EXPECT_FALSE(list.no_device_reason.empty());
    GTEST_SKIP() << "no CUDA device: " << list.no_device_reason;
  }
  for (const auto& d : list.devices) {
    EXPECT_GT(d.memory_gib, 1.0) << d.name;
    EXPECT_GE(d.compute_capability_major, 7) << d.name;
  }
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  size_t free_bytes = 0, total_bytes = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total_bytes), cudaSuccess);
  EXPECT_NEAR(static_cast<double>(total_bytes) / (1024.0 * 1024.0 * 1024.0),
              list.devices[0].memory_gib, 0.01);
}

}  // namespace
}  // namespace loom::kernels
