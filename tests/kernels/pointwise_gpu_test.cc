// The CUDA SwiGLU and GeLU-tanh (kernels/cuda/swiglu.h, gelu.h) against the CPU backend
// (cpu::swiglu_fwd/bwd, gelu_fwd/bwd in fp32 on the same bf16-rounded inputs), on the 16-byte
// vector path (count % 8 == 0), the element path (odd counts) and in place, with inputs of
// standard deviation 3 so that both tails (saturated sigmoid/tanh) are exercised.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/gelu.h"
#include "kernels/cuda/swiglu.h"
#include "tests/kernels/bf16_test_util.h"
#include "tests/kernels/gpu_test_util.h"

namespace loom::kernels {
namespace {

using testing::all_close;
using testing::bf16_ptr;
using testing::bits_equal;
using testing::download;
using testing::from_bf16;
using testing::kBf16Rtol;
using testing::random_bf16_values;
using testing::to_bf16;
using testing::upload;

// Pre-activation spread: 5-sigma inputs reach |x| = 15, deep into both saturated tails.
constexpr float kInputScale = 3.0f;

// silu(g) * up is a product: CUDA's expf within 2 ulp of glibc's changes it relatively
// (kBf16Rtol); atol only guards values near 0.
constexpr double kSwigluFwdAtol = 1e-6;
// silu'(g) = s (1 + g (1 - s)) crosses zero near g = -1.28 and 1 - s cancels for large g: an
// absolute fp32 difference of ~1e-7 * |g| <= 2e-6 there, times |dout * up| <= ~15 (3-sigma x
// 5-sigma inputs): 3e-5; 1e-4 leaves a factor of 3.
constexpr double kSwigluBwdAtol = 1e-4;
// 0.5 x (1 + tanh u) cancels for x < 0: tanhf differing by 1-2 ulp of 1 (1.2e-7) times 0.5 |x|
// <= 7.5 gives ~1e-6; 1e-5 leaves a factor of 10.
constexpr double kGeluFwdAtol = 1e-5;
// gelu' has the same (1 + t) and (1 - t^2) cancellations scaled by 0.5 |x| du (<= ~3 where
// tanh is not yet saturated) and |dy| <= 5: ~5e-6; 5e-5 leaves a factor of 10.
constexpr double kGeluBwdAtol = 5e-5;

class PointwiseGpu : public ::testing::TestWithParam<int64_t> {};

TEST_P(PointwiseGpu, SwigluForwardMatchesCpu) {
  LOOM_REQUIRE_GPU();
  const int64_t count = GetParam();
  const std::vector<float> gate = random_bf16_values(count, 31, kInputScale);
  const std::vector<float> up = random_bf16_values(count, 32, kInputScale);
  std::vector<float> out(count);
  cpu::swiglu_fwd<float>(count, gate.data(), up.data(), out.data());

  const auto d_gate = upload(to_bf16(gate));
  const auto d_up = upload(to_bf16(up));
  cuda::DeviceBuffer<uint16_t> d_out(count);
  cuda::swiglu_fwd(count, bf16_ptr(d_gate), bf16_ptr(d_up), bf16_ptr(d_out), nullptr);
  EXPECT_TRUE(all_close(from_bf16(download(d_out)), out, kBf16Rtol, kSwigluFwdAtol));
}

TEST_P(PointwiseGpu, SwigluBackwardMatchesCpuAlsoInPlace) {
  LOOM_REQUIRE_GPU();
  const int64_t count = GetParam();
  const std::vector<float> gate = random_bf16_values(count, 33, kInputScale);
  const std::vector<float> up = random_bf16_values(count, 34, kInputScale);
  const std::vector<float> dout = random_bf16_values(count, 35);
  std::vector<float> dgate(count), dup(count);
  cpu::swiglu_bwd<float>(count, dout.data(), gate.data(), up.data(), dgate.data(), dup.data());

  const auto d_gate = upload(to_bf16(gate));
  const auto d_up = upload(to_bf16(up));
  const auto d_dout = upload(to_bf16(dout));
  cuda::DeviceBuffer<uint16_t> d_dgate(count), d_dup(count);
  cuda::swiglu_bwd(count, bf16_ptr(d_dout), bf16_ptr(d_gate), bf16_ptr(d_up), bf16_ptr(d_dgate),
                   bf16_ptr(d_dup), nullptr);
  const std::vector<uint16_t> dgate_bits = download(d_dgate);
  const std::vector<uint16_t> dup_bits = download(d_dup);
  EXPECT_TRUE(all_close(from_bf16(dgate_bits), dgate, kBf16Rtol, kSwigluBwdAtol));
  EXPECT_TRUE(all_close(from_bf16(dup_bits), dup, kBf16Rtol, kSwigluFwdAtol));

  // dgate over gate and dup over up (the trainer reuses the activation buffers).
  cuda::swiglu_bwd(count, bf16_ptr(d_dout), bf16_ptr(d_gate), bf16_ptr(d_up), bf16_ptr(d_gate),
                   bf16_ptr(d_up), nullptr);
  EXPECT_TRUE(bits_equal(download(d_gate), dgate_bits));
  EXPECT_TRUE(bits_equal(download(d_up), dup_bits));
}

TEST_P(PointwiseGpu, GeluForwardMatchesCpuAlsoInPlace) {
  LOOM_REQUIRE_GPU();
  const int64_t count = GetParam();
  const std::vector<float> x = random_bf16_values(count, 36, kInputScale);
  std::vector<float> y(count);
  cpu::gelu_fwd<float>(count, x.data(), y.data());

  const auto d_x = upload(to_bf16(x));
  cuda::DeviceBuffer<uint16_t> d_y(count);
  cuda::gelu_fwd(count, bf16_ptr(d_x), bf16_ptr(d_y), nullptr);
  const std::vector<uint16_t> y_bits = download(d_y);
  EXPECT_TRUE(all_close(from_bf16(y_bits), y, kBf16Rtol, kGeluFwdAtol));

  cuda::gelu_fwd(count, bf16_ptr(d_x), bf16_ptr(d_x), nullptr);
  EXPECT_TRUE(bits_equal(download(d_x), y_bits));
}

TEST_P(PointwiseGpu, GeluBackwardMatchesCpu) {
  LOOM_REQUIRE_GPU();
  const int64_t count = GetParam();
  const std::vector<float> x = random_bf16_values(count, 37, kInputScale);
  const std::vector<float> dy = random_bf16_values(count, 38);
  std::vector<float> dx(count);
  cpu::gelu_bwd<float>(count, dy.data(), x.data(), dx.data());

  const auto d_x = upload(to_bf16(x));
  const auto d_dy = upload(to_bf16(dy));
  cuda::DeviceBuffer<uint16_t> d_dx(count);
  cuda::gelu_bwd(count, bf16_ptr(d_dy), bf16_ptr(d_x), bf16_ptr(d_dx), nullptr);
  EXPECT_TRUE(all_close(from_bf16(download(d_dx)), dx, kBf16Rtol, kGeluBwdAtol));
}

// 2053 x 5632 (a 1.3 B Llama MLP: N not a multiple of 8, count % 8 == 0: vector path),
// 2053 x 1001 and 7 (odd: element path, a partial block and a single partial warp).
INSTANTIATE_TEST_SUITE_P(Counts, PointwiseGpu,
                         ::testing::Values(int64_t{2053} * 5632, int64_t{2053} * 1001, int64_t{7}));

}  // namespace
}  // namespace loom::kernels
