// cuBLASLt GEMMs (kernels/cuda/gemm.h) against cpu::matmul_nt/nn/tn in fp32 on the same bf16
// inputs: all three ops, bf16 and fp32 outputs, an unaligned shape (257 x 96 x 80, leading
// dimension 257 in matmul_tn), a transformer-sized one (1024 x 768 x 512), odd sizes, beta = 1
// accumulation over two micro-batches, and beta = 0 ignoring NaN in C. Tolerances:
// linalg_test_util.h (fp32: 4 K u sum|a||b|; bf16 output: one bf16 ulp more).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "gpu_test_util.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/gemm.h"
#include "linalg_test_util.h"

namespace loom::kernels::cuda {
namespace {

using testing::download;
using testing::random_bf16_values;
using testing::to_bf16;
using testing::upload;
using testing::linalg::as_bf16;

struct Shape {
  int64_t m, n, k;
};

// Element counts of A and B for each op (row-major, cpu_ops.h): NT A[M,K] B[N,K]; NN A[M,K]
// B[K,N]; TN A[K,M] B[K,N]. Both are k x (m or n) matrices, only the order differs.
void cpu_matmul(GemmOp op, const Shape& s, const float* a, const float* b, float* c, float beta) {
  switch (op) {
    case GemmOp::kNT:
      cpu::matmul_nt(s.m, s.n, s.k, a, b, c, beta);
      break;
    case GemmOp::kNN:
      cpu::matmul_nn(s.m, s.n, s.k, a, b, c, beta);
      break;
    case GemmOp::kTN:
      cpu::matmul_tn(s.m, s.n, s.k, a, b, c, beta);
      break;
  }
}

const char* name(GemmOp op) { return op == GemmOp::kNT ? "nt" : op == GemmOp::kNN ? "nn" : "tn"; }

std::vector<float> abs_values(const std::vector<float>& v) {
  std::vector<float> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = std::abs(v[i]);
  return out;
}

// Runs `steps` products C = beta C + A_s B_s (fresh A_s, B_s each step: micro-batches) on both
// backends from the same bf16-valued C0 and compares C. The per-element bound is carried through
// the steps: each step adds the fp32 bound of its K + 1 terms (beta C counts as one more term),
// the bound carried from earlier steps is scaled by beta, and a bf16 output adds one bf16 ulp of
// the value (each backend rounds its fp32 result once, half an ulp each) -- the carried bound
// grows by 2^-8 as well, since the rounding of a perturbed value is bounded on that value.
void expect_gemm_matches_cpu(Gemm& gemm, GemmOp op, const Shape& s, bool fp32_out, float beta,
                             int steps, uint64_t seed) {
  SCOPED_TRACE(::testing::Message()
               << "matmul_" << name(op) << " m=" << s.m << " n=" << s.n << " k=" << s.k
               << (fp32_out ? " fp32" : " bf16") << " out, beta=" << beta << ", steps=" << steps);
  const std::size_t mn = static_cast<std::size_t>(s.m * s.n);
  // Finite garbage in C when beta = 0 (NaN is the subject of its own test).
  std::vector<float> c_ref = random_bf16_values(mn, seed, 1.0f);
  std::vector<double> bound(mn, 0.0);
  cuda::DeviceBuffer<float> c32 = upload(c_ref);
  cuda::DeviceBuffer<uint16_t> c16 = upload(to_bf16(c_ref));
  for (int step = 0; step < steps; ++step) {
    const auto a = random_bf16_values(static_cast<std::size_t>(s.m * s.k), seed + 10 + step);
    const auto b = random_bf16_values(static_cast<std::size_t>(s.n * s.k), seed + 20 + step);
    const auto da = upload(to_bf16(a));
    const auto db = upload(to_bf16(b));
    if (fp32_out) {
      gemm.run(op, s.m, s.n, s.k, as_bf16(da), as_bf16(db), c32.get(), CUDA_R_32F, beta, nullptr);
    } else {
      gemm.run(op, s.m, s.n, s.k, as_bf16(da), as_bf16(db), c16.get(), CUDA_R_16BF, beta, nullptr);
    }
    std::vector<float> abs_prod(mn, 0.0f);
    cpu_matmul(op, s, abs_values(a).data(), abs_values(b).data(), abs_prod.data(), 0.0f);
    for (std::size_t i = 0; i < mn; ++i) {
      const double terms = double(abs_prod[i]) + std::abs(double(beta) * c_ref[i]);
      bound[i] = beta * bound[i] + testing::linalg::gemm_fp32_bound(s.k + 1, terms);
    }
    const std::vector<float> c_before = c_ref;
    cpu_matmul(op, s, a.data(), b.data(), c_ref.data(), beta);
    if (!fp32_out) {  // the device rounds C to bf16 after every step: so does the reference
      for (std::size_t i = 0; i < mn; ++i) {
        // With a bf16 C and beta != 0, cuBLASLt may also round at the magnitude of the product
        // A B (its split-K partials or A B itself before beta C is added): one more bf16 ulp of
        // |A B| per step. Seen on the H200 (2026-11-28): 0.375 apart on a value of 3.1 after a
        // step whose product was ~20, outside the one-rounding bound.
        const double product = beta != 0 ? std::abs(double(c_ref[i]) - beta * c_before[i]) : 0.0;
        bound[i] = bound[i] * (1.0 + testing::linalg::kBf16Ulp / 2) +
                   testing::linalg::kBf16Ulp * (std::abs(c_ref[i]) + product);
        c_ref[i] = bf16_round(c_ref[i]);
      }
    }
  }
  const std::vector<float> got = fp32_out ? download(c32) : testing::from_bf16(download(c16));
  EXPECT_TRUE(testing::linalg::within_bounds(got, c_ref, 0.0, bound));
}

const GemmOp kOps[] = {GemmOp::kNT, GemmOp::kNN, GemmOp::kTN};

TEST(GemmGpu, AllOpsMatchCpuOnUnalignedShape) {
  LOOM_REQUIRE_GPU();
  Gemm gemm;
  // 257 rows: odd M, so matmul_tn's A[K, M] has a leading dimension of 514 bytes (not 16-byte
  // aligned); N = 96 and K = 80 are multiples of 8 but not of 64 (partial tiles).
  const Shape s{257, 96, 80};
  for (GemmOp op : kOps) {
    expect_gemm_matches_cpu(gemm, op, s, /*fp32_out=*/false, 0.0f, 1, 100);
    expect_gemm_matches_cpu(gemm, op, s, /*fp32_out=*/true, 0.0f, 1, 200);
  }
}

TEST(GemmGpu, AllOpsMatchCpuOnTransformerShape) {
  LOOM_REQUIRE_GPU();
  Gemm gemm;
  const Shape s{1024, 768, 512};
  for (GemmOp op : kOps) {
    expect_gemm_matches_cpu(gemm, op, s, /*fp32_out=*/false, 0.0f, 1, 300);
    expect_gemm_matches_cpu(gemm, op, s, /*fp32_out=*/true, 0.0f, 1, 400);
  }
}

TEST(GemmGpu, AllOpsMatchCpuOnOddSizes) {
  LOOM_REQUIRE_GPU();
  Gemm gemm;
  // No dimension a multiple of 2: cuBLASLt must fall back to element-aligned algorithms.
  const Shape s{31, 17, 13};
  for (GemmOp op : kOps) {
    expect_gemm_matches_cpu(gemm, op, s, /*fp32_out=*/false, 0.0f, 1, 500);
    expect_gemm_matches_cpu(gemm, op, s, /*fp32_out=*/true, 0.0f, 1, 600);
  }
}

// Weight gradients: dW (fp32) += dy^T x over micro-batches with beta = 1; also bf16 outputs
// accumulating (residual-style C += A B).
TEST(GemmGpu, BetaOneAccumulatesOverMicroBatches) {
  LOOM_REQUIRE_GPU();
  Gemm gemm;
  for (GemmOp op : kOps) {
    expect_gemm_matches_cpu(gemm, op, Shape{257, 96, 80}, /*fp32_out=*/true, 1.0f, 3, 700);
    expect_gemm_matches_cpu(gemm, op, Shape{128, 64, 256}, /*fp32_out=*/false, 1.0f, 2, 800);
  }
}

// beta = 0 must overwrite C without reading it: 0 * NaN would be NaN.
TEST(GemmGpu, BetaZeroIgnoresNanInC) {
  LOOM_REQUIRE_GPU();
  Gemm gemm;
  const Shape s{64, 48, 32};
  const auto a = random_bf16_values(static_cast<std::size_t>(s.m * s.k), 900);
  const auto b = random_bf16_values(static_cast<std::size_t>(s.n * s.k), 901);
  const auto da = upload(to_bf16(a));
  const auto db = upload(to_bf16(b));
  const std::vector<float> nan_c(static_cast<std::size_t>(s.m * s.n),
                                 std::numeric_limits<float>::quiet_NaN());
  auto c32 = upload(nan_c);
  auto c16 = upload(to_bf16(nan_c));
  gemm.matmul_nt(s.m, s.n, s.k, as_bf16(da), as_bf16(db), c32.get(), 0.0f, nullptr);
  gemm.matmul_nt(s.m, s.n, s.k, as_bf16(da), as_bf16(db), as_bf16(c16), 0.0f, nullptr);
  std::vector<float> ref(nan_c.size(), 0.0f);
  cpu::matmul_nt(s.m, s.n, s.k, a.data(), b.data(), ref.data(), 0.0f);
  const auto got32 = download(c32);
  const auto got16 = testing::from_bf16(download(c16));
  for (std::size_t i = 0; i < ref.size(); ++i) {
    ASSERT_TRUE(std::isfinite(got32[i]) && std::isfinite(got16[i])) << "element " << i;
  }
  EXPECT_TRUE(testing::all_close(got32, ref, 1e-5, 1e-4));
}

// The algorithm is chosen once per problem: repeating a shape reuses it, a new shape adds one.
TEST(GemmGpu, CachesOneAlgorithmPerProblem) {
  LOOM_REQUIRE_GPU();
  Gemm gemm;
  const auto a = upload(to_bf16(random_bf16_values(64 * 64, 1000)));
  const auto b = upload(to_bf16(random_bf16_values(64 * 64, 1001)));
  cuda::DeviceBuffer<float> c(64 * 64);
  gemm.matmul_nt(64, 64, 64, as_bf16(a), as_bf16(b), c.get(), 0.0f, nullptr);
  gemm.matmul_nt(64, 64, 64, as_bf16(a), as_bf16(b), c.get(), 1.0f, nullptr);
  EXPECT_EQ(gemm.cached_algorithms(), 1u);
  gemm.matmul_nn(64, 64, 64, as_bf16(a), as_bf16(b), c.get(), 0.0f, nullptr);
  EXPECT_EQ(gemm.cached_algorithms(), 2u);
  LOOM_CUDA_CHECK(cudaDeviceSynchronize());
}

}  // namespace
}  // namespace loom::kernels::cuda
