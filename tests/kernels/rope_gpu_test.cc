// The CUDA RoPE (kernels/cuda/rope.h) against the CPU backend (cpu::rope_fwd/bwd in fp32 on the
// same bf16-rounded q/k, with the fp32 tables of cpu::rope_tables): full and partial rotary
// (rot_dim < D: the tail of each head must come back bit for bit), head sizes whose half is not
// a multiple of 32, odd T, and the backward as the inverse rotation.
#include <gtest/gtest.h>

#include <cstdint>
#include <ostream>
#include <stdexcept>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/rope.h"
#include "tests/kernels/bf16_test_util.h"
#include "tests/kernels/gpu_test_util.h"

namespace loom::kernels {
namespace {

using testing::all_close;
using testing::bf16_ptr;
using testing::download;
using testing::from_bf16;
using testing::kBf16Rtol;
using testing::random_bf16_values;
using testing::to_bf16;
using testing::upload;

// x1 c - x2 s cancels when the output is near 0: the backends may differ by FMA contraction,
// a couple of ulp of |x| <= ~5 (5-sigma inputs), ~1e-6; 1e-5 leaves a factor of 10.
constexpr double kRopeAtol = 1e-5;

struct RopeShape {
  int64_t b, t, h, d, rot_dim;
  double theta;
};
void PrintTo(const RopeShape& s, std::ostream* os) {
  *os << "B" << s.b << "_T" << s.t << "_H" << s.h << "_D" << s.d << "_rot" << s.rot_dim;
}

class RopeGpu : public ::testing::TestWithParam<RopeShape> {};

// Rotates x (forward or backward) on both backends and compares; the dims >= rot_dim of each
// head must be untouched (bit for bit the input).
void check_rotation(const RopeShape& s, bool backward, uint64_t seed) {
  const int64_t count = s.b * s.t * s.h * s.d;
  const int64_t half = s.rot_dim / 2;
  std::vector<float> cos_tr(s.t * half), sin_tr(s.t * half);
  cpu::rope_tables(s.t, s.rot_dim, s.theta, cos_tr.data(), sin_tr.data());
  const std::vector<float> x = random_bf16_values(count, seed);
  std::vector<float> want = x;
  if (backward) {
    cpu::rope_bwd<float>(s.b, s.t, s.h, s.d, s.rot_dim, cos_tr.data(), sin_tr.data(), want.data());
  } else {
    cpu::rope_fwd<float>(s.b, s.t, s.h, s.d, s.rot_dim, cos_tr.data(), sin_tr.data(), want.data());
  }

  const auto d_cos = upload(cos_tr);
  const auto d_sin = upload(sin_tr);
  const auto d_x = upload(to_bf16(x));
  if (backward) {
    cuda::rope_bwd(s.b, s.t, s.h, s.d, s.rot_dim, d_cos.get(), d_sin.get(), bf16_ptr(d_x), nullptr);
  } else {
    cuda::rope_fwd(s.b, s.t, s.h, s.d, s.rot_dim, d_cos.get(), d_sin.get(), bf16_ptr(d_x), nullptr);
  }
  const std::vector<float> got = from_bf16(download(d_x));
  EXPECT_TRUE(all_close(got, want, kBf16Rtol, kRopeAtol));
  int64_t tail_changed = 0;
  for (int64_t head_row = 0; head_row < s.b * s.t * s.h; ++head_row)
    for (int64_t j = s.rot_dim; j < s.d; ++j)
      tail_changed += got[head_row * s.d + j] != x[head_row * s.d + j];
  EXPECT_EQ(tail_changed, 0) << "elements past rot_dim were modified";
}

TEST_P(RopeGpu, ForwardMatchesCpu) {
  LOOM_REQUIRE_GPU();
  check_rotation(GetParam(), /*backward=*/false, 21);
}

TEST_P(RopeGpu, BackwardMatchesCpu) {
  LOOM_REQUIRE_GPU();
  check_rotation(GetParam(), /*backward=*/true, 22);
}

TEST(RopeGpuArgs, RejectsOddOrOversizedRotDim) {
  LOOM_REQUIRE_GPU();
  cuda::DeviceBuffer<uint16_t> x(64);
  cuda::DeviceBuffer<float> table(64);
  EXPECT_THROW(cuda::rope_fwd(1, 1, 1, 64, 63, table.get(), table.get(), bf16_ptr(x), nullptr),
               std::invalid_argument);
  EXPECT_THROW(cuda::rope_bwd(1, 1, 1, 32, 64, table.get(), table.get(), bf16_ptr(x), nullptr),
               std::invalid_argument);
}

// Llama (D 128, theta 1e4), Qwen-style theta 1e6 with GQA-sized H, GPT-NeoX partial rotary
// (rotary_pct 0.25: rot_dim 32 of D 128), D 80 (half 40: not a multiple of a warp) and odd T.
INSTANTIATE_TEST_SUITE_P(Shapes, RopeGpu,
                         ::testing::Values(RopeShape{2, 257, 16, 128, 128, 1e4},
                                           RopeShape{3, 129, 4, 128, 128, 1e6},
                                           RopeShape{2, 100, 8, 128, 32, 1e4},
                                           RopeShape{1, 37, 5, 80, 80, 1e4},
                                           RopeShape{1, 1, 1, 64, 64, 1e4}));

}  // namespace
}  // namespace loom::kernels
