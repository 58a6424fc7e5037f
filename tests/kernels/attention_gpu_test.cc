// The CUDA flash attention (kernels/cuda/attention.h) against the CPU backend's
// (cpu::attention_fwd/bwd in fp32) on the same bf16-rounded inputs: GQA and MHA, ALiBi, head
// dims that are and are not multiples of 32, lengths that are not multiples of the tiles, and
// D = 256 (the >48 KiB shared-memory path).
//
// Tolerances. Forward: the GPU rounds out once to bf16 (relative error <= 2^-9) after fp32 sums
// in another order than the CPU's (~1e-6 relative): rtol 8e-3, atol 2e-3 (outputs are convex
// combinations of N(0,1) values). lse stays fp32: 1e-4 absolute. Backward: both sides get the
// same out and lse, so they differ by the summation order and the final bf16 rounding of dq,
// dk, dv; the sums cancel, so the absolute part is relative to the tensor's largest element:
// rtol 8e-3, atol 1e-2 x max|want|.
//
// The GEMM path (attention_{fwd,bwd}_gemm) also rounds P to bf16 before P v, an error of at
// most 2^-9 sum_j p_j |v_j| <= 2^-9 max|v| (~8e-3 for N(0, 1) values): atol 1e-2 on out; and dS
// and P before the backward GEMMs, with dk and dv of a GQA group summed over its query heads in
// bf16 (one more bf16 rounding per head): atol 2e-2 x max|want| on the gradients.
//
// The fused tensor-core path (attention_{fwd,bwd}_fused) rounds P and dS to bf16 like the GEMM
// path (its dk, dv sum a group's heads in fp32): the GEMM path's tolerances. Its shapes include
// lengths that are not multiples of its 64-row blocks and 32/64-row tiles, GQA groups of 1, 2
// and 4, ALiBi, and every head dimension it takes (16, 32, 64, 128).
//
// cuDNN's fused SDPA (attention_cudnn.h) also rounds P and dS to bf16 and sums a GQA group's
// dk, dv per query head in bf16 before reducing them: the GEMM path's tolerances. Its dq is
// accumulated with atomics (cuDNN's default backward), so it is not checked for bitwise
// repeatability; no ALiBi.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/attention.h"
#ifdef LOOM_WITH_CUDNN
#include "kernels/cuda/attention_cudnn.h"
#include "kernels/cuda/cudnn_api.h"
#endif
#include "kernels/cuda/gemm.h"
#include "tests/kernels/gpu_test_util.h"

namespace loom::kernels {
namespace {

using testing::all_close;
using testing::download;
using testing::from_bf16;
using testing::random_bf16_values;
using testing::to_bf16;
using testing::upload;

struct Shape {
  int64_t b, t, hq, hkv, d;
  bool alibi;
};

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, double(std::abs(x)));
  return m;
}

cuda::DeviceBuffer<__nv_bfloat16> upload_bf16(const std::vector<float>& v) {
  const std::vector<uint16_t> bits = to_bf16(v);
  cuda::DeviceBuffer<__nv_bfloat16> d(v.size());
  LOOM_CUDA_CHECK(cudaMemcpy(d.get(), bits.data(), bits.size() * 2, cudaMemcpyHostToDevice));
  return d;
}

std::vector<float> download_bf16(const cuda::DeviceBuffer<__nv_bfloat16>& d) {
  std::vector<uint16_t> bits(d.size());
  LOOM_CUDA_CHECK(cudaDeviceSynchronize());
  LOOM_CUDA_CHECK(cudaMemcpy(bits.data(), d.get(), bits.size() * 2, cudaMemcpyDeviceToHost));
  return from_bf16(bits);
}

enum class Path { kFlash, kGemm, kFused, kCudnn };

void check(const Shape& s, Path path) {
  const bool gemm_path = path == Path::kGemm, fused = path == Path::kFused;
  const bool cudnn = path == Path::kCudnn;
  SCOPED_TRACE(::testing::Message() << (gemm_path ? "gemm" : fused ? "fused" : cudnn ? "cudnn" : "flash") << " B=" << s.b
                                    << " T=" << s.t << " Hq=" << s.hq << " Hkv=" << s.hkv
                                    << " D=" << s.d << " alibi=" << s.alibi);
  cuda::Gemm gemm;
  cuda::DeviceBytes gemm_ws(gemm_path ? cuda::attention_gemm_workspace_bytes(s.b, s.t, s.hq, s.hkv)
                                      : 0);
  const bool rounds_p = gemm_path || fused || cudnn;
  const double out_atol = rounds_p ? 1e-2 : 2e-3, grad_atol = rounds_p ? 2e-2 : 1e-2;
#ifdef LOOM_WITH_CUDNN
  std::unique_ptr<cuda::CudnnAttention> sdpa;
  cuda::DeviceBytes sdpa_ws;
  if (cudnn) {
    std::string why;
    sdpa = cuda::CudnnAttention::create({s.b, s.t, s.hq, s.hkv, s.d}, &why);
    ASSERT_NE(sdpa, nullptr) << why;
    sdpa_ws = cuda::DeviceBytes(sdpa->workspace_bytes());
  }
#else
  ASSERT_FALSE(cudnn) << "built without cuDNN";
#endif
  const int64_t nq = s.b * s.t * s.hq * s.d, nkv = s.b * s.t * s.hkv * s.d;
  const std::vector<float> q = random_bf16_values(nq, 1), k = random_bf16_values(nkv, 2),
                           v = random_bf16_values(nkv, 3), dout = random_bf16_values(nq, 4);
  std::vector<float> slopes(s.hq);
  cpu::alibi_slopes(s.hq, slopes.data());
  const float* host_slopes = s.alibi ? slopes.data() : nullptr;

  // Forward.
  std::vector<float> out_cpu(nq), lse_cpu(s.b * s.hq * s.t);
  cpu::attention_fwd<float>(s.b, s.t, s.hq, s.hkv, s.d, q.data(), k.data(), v.data(), host_slopes,
                            out_cpu.data(), lse_cpu.data());
  auto dq_ = upload_bf16(q), dk_ = upload_bf16(k), dv_ = upload_bf16(v), ddout = upload_bf16(dout);
  auto dslopes = upload(slopes);
  cuda::DeviceBuffer<__nv_bfloat16> dout_gpu(nq);
  cuda::DeviceBuffer<float> dlse(lse_cpu.size());
  if (cudnn) {
#ifdef LOOM_WITH_CUDNN
    sdpa->forward(dq_.get(), dk_.get(), dv_.get(), dout_gpu.get(), dlse.get(), sdpa_ws.get(), nullptr);
#endif
  } else if (fused) {
    cuda::attention_fwd_fused(s.b, s.t, s.hq, s.hkv, s.d, dq_.get(), dk_.get(), dv_.get(),
                              s.alibi ? dslopes.get() : nullptr, dout_gpu.get(), dlse.get(), nullptr);
  } else if (gemm_path) {
    cuda::attention_fwd_gemm(gemm, s.b, s.t, s.hq, s.hkv, s.d, dq_.get(), dk_.get(), dv_.get(),
                             s.alibi ? dslopes.get() : nullptr, dout_gpu.get(), dlse.get(),
                             gemm_ws.get(), nullptr);
  } else {
    cuda::attention_fwd(s.b, s.t, s.hq, s.hkv, s.d, dq_.get(), dk_.get(), dv_.get(),
                        s.alibi ? dslopes.get() : nullptr, dout_gpu.get(), dlse.get(), nullptr);
  }
  const std::vector<float> out_gpu = download_bf16(dout_gpu);
  EXPECT_TRUE(all_close(out_gpu, out_cpu, 8e-3, out_atol)) << "out";
  EXPECT_TRUE(all_close(download(dlse), lse_cpu, 0, 1e-4)) << "lse";

  // Backward from the same out (the GPU's, bf16) and lse (the CPU's) on both sides.
  std::vector<float> dq_cpu(nq), dk_cpu(nkv), dv_cpu(nkv);
  cpu::attention_bwd<float>(s.b, s.t, s.hq, s.hkv, s.d, q.data(), k.data(), v.data(), host_slopes,
                            out_gpu.data(), lse_cpu.data(), dout.data(), dq_cpu.data(),
                            dk_cpu.data(), dv_cpu.data());
  auto lse_in = upload(lse_cpu);
  cuda::DeviceBuffer<__nv_bfloat16> gdq(nq), gdk(nkv), gdv(nkv);
  cuda::DeviceBytes ws(cuda::attention_bwd_workspace_bytes(s.b, s.t, s.hq));
  auto backward = [&] {
    if (cudnn) {
#ifdef LOOM_WITH_CUDNN
      sdpa->backward(dq_.get(), dk_.get(), dv_.get(), dout_gpu.get(), lse_in.get(), ddout.get(),
                     gdq.get(), gdk.get(), gdv.get(), sdpa_ws.get(), nullptr);
#endif
    } else if (fused) {
      cuda::attention_bwd_fused(s.b, s.t, s.hq, s.hkv, s.d, dq_.get(), dk_.get(), dv_.get(),
                                s.alibi ? dslopes.get() : nullptr, dout_gpu.get(), lse_in.get(),
                                ddout.get(), gdq.get(), gdk.get(), gdv.get(), ws.get(), nullptr);
    } else if (gemm_path) {
      cuda::attention_bwd_gemm(gemm, s.b, s.t, s.hq, s.hkv, s.d, dq_.get(), dk_.get(), dv_.get(),
                               s.alibi ? dslopes.get() : nullptr, dout_gpu.get(), lse_in.get(),
                               ddout.get(), gdq.get(), gdk.get(), gdv.get(), gemm_ws.get(),
                               nullptr);
    } else {
      cuda::attention_bwd(s.b, s.t, s.hq, s.hkv, s.d, dq_.get(), dk_.get(), dv_.get(),
                          s.alibi ? dslopes.get() : nullptr, dout_gpu.get(), lse_in.get(),
                          ddout.get(), gdq.get(), gdk.get(), gdv.get(), ws.get(), nullptr);
    }
  };
  backward();
  EXPECT_TRUE(all_close(download_bf16(gdq), dq_cpu, 8e-3, grad_atol * max_abs(dq_cpu))) << "dq";
  EXPECT_TRUE(all_close(download_bf16(gdk), dk_cpu, 8e-3, grad_atol * max_abs(dk_cpu))) << "dk";
  EXPECT_TRUE(all_close(download_bf16(gdv), dv_cpu, 8e-3, grad_atol * max_abs(dv_cpu))) << "dv";

  if (cudnn) return;  // atomics in cuDNN's dq: see the header comment
  // Deterministic: a second backward gives the same bits.
  const std::vector<float> dk_first = download_bf16(gdk);
  backward();
  EXPECT_EQ(download_bf16(gdk), dk_first);
}

TEST(AttentionGpu, MatchesCpuForwardAndBackward) {
  LOOM_REQUIRE_GPU();
  for (const Shape& s : {Shape{2, 77, 4, 2, 16, false}, Shape{1, 300, 8, 8, 64, true},
                         Shape{1, 130, 4, 1, 128, false}, Shape{2, 64, 2, 2, 96, true},
                         Shape{1, 40, 2, 1, 256, false}}) {
    check(s, Path::kFlash);
  }
}

TEST(AttentionGpu, GemmPathMatchesCpuForwardAndBackward) {
  LOOM_REQUIRE_GPU();
  for (const Shape& s : {Shape{2, 77, 4, 2, 16, false}, Shape{1, 300, 8, 8, 64, true},
                         Shape{2, 130, 4, 1, 128, false}, Shape{2, 64, 2, 2, 96, true}}) {
    check(s, Path::kGemm);
  }
}

TEST(AttentionGpu, FusedPathMatchesCpuForwardAndBackward) {
  LOOM_REQUIRE_GPU();
  for (const Shape& s : {Shape{2, 77, 4, 2, 16, false}, Shape{1, 300, 8, 8, 64, true},
                         Shape{2, 130, 4, 1, 128, false}, Shape{1, 200, 8, 2, 32, true},
                         Shape{1, 64, 2, 2, 128, true}, Shape{1, 3, 2, 1, 64, false},
                         Shape{1, 517, 4, 4, 128, false}}) {
    check(s, Path::kFused);
  }
}

#ifdef LOOM_WITH_CUDNN
// Skips only when the cuDNN library cannot be loaded; on a GPU with cuDNN, a graph that cuDNN
// will not plan fails here with cuDNN's reason.
TEST(AttentionGpu, CudnnSdpaMatchesCpuForwardAndBackward) {
  LOOM_REQUIRE_GPU();
  std::string why;
  if (cuda::cudnn_api(&why) == nullptr) GTEST_SKIP() << "no cuDNN library: " << why;
  for (const Shape& s : {Shape{2, 77, 4, 2, 64, false}, Shape{1, 300, 8, 8, 64, false},
                         Shape{2, 130, 4, 1, 128, false}, Shape{1, 200, 8, 2, 32, false},
                         Shape{1, 517, 4, 4, 128, false}, Shape{2, 64, 2, 2, 16, false}}) {
    check(s, Path::kCudnn);
  }
}
#endif

TEST(AttentionGpu, FusedPathRejectsWhatItCannotRun) {
  LOOM_REQUIRE_GPU();
  EXPECT_FALSE(cuda::attention_fused_supported(96));
  EXPECT_THROW(cuda::attention_fwd_fused(1, 8, 2, 2, 96, nullptr, nullptr, nullptr, nullptr, nullptr,
                                         nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(cuda::attention_fwd_fused(1, 8, 3, 2, 64, nullptr, nullptr, nullptr, nullptr, nullptr,
                                         nullptr, nullptr),
               std::invalid_argument);
}

TEST(AttentionGpu, RejectsBadShapes) {
  LOOM_REQUIRE_GPU();
  EXPECT_THROW(cuda::attention_fwd(1, 8, 3, 2, 16, nullptr, nullptr, nullptr, nullptr, nullptr,
                                   nullptr, nullptr),
               std::invalid_argument);
  EXPECT_THROW(cuda::attention_fwd(1, 8, 2, 2, 512, nullptr, nullptr, nullptr, nullptr, nullptr,
                                   nullptr, nullptr),
               std::invalid_argument);
}

}  // namespace
}  // namespace loom::kernels
