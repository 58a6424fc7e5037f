// The CUDA attention kernels (kernels/cuda/attention.h) on the shapes of the 1.3 B Llama
// (models/llama-1.3b.yaml: 16 heads of 128, seq 2048) and of a GQA model, forward and backward,
// for each path: fused (FlashAttention-2 on tensor cores), gemm (cuBLASLt, scores materialised),
// cudnn (cuDNN's fused SDPA, kernels/cuda/attention_cudnn.h; skipped with the reason when cuDNN
// cannot be loaded or plan the graph) and flash (the CUDA-core reference; forward only, it is
// ~20x slower). Times are CUDA-event
// times of the kernels alone (manual time); the counter TFLOP/s counts the causal half of
// 4 B T^2 Hq D (forward) and 2.5x that (backward: the 5 products FlashAttention-2 needs; the
// fused path runs 7, see attention_fused.cu). Skips (SkipWithError) without a device.
// Run: build/bench/attention_gpu_benchmark [--benchmark_filter=Fused].
#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_cudnn.h"
#include "kernels/cuda/bias.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/fill.h"
#include "kernels/cuda/gemm.h"
#include "kernels/device_query.h"

namespace {

namespace cu = loom::kernels::cuda;

enum Path : int64_t { kFused = 0, kGemm = 1, kFlash = 2, kCudnn = 3 };

struct Buffers {
  int64_t b, t, hq, hkv, d;
  cu::DeviceBuffer<__nv_bfloat16> q, k, v, out, dout, dq, dk, dv;
  cu::DeviceBuffer<float> lse;
  cu::DeviceBytes ws;
  Buffers(int64_t b_, int64_t t_, int64_t hq_, int64_t hkv_, int64_t d_)
      : b(b_), t(t_), hq(hq_), hkv(hkv_), d(d_), q(b * t * hq * d), k(b * t * hkv * d),
        v(b * t * hkv * d), out(b * t * hq * d), dout(b * t * hq * d), dq(b * t * hq * d),
        dk(b * t * hkv * d), dv(b * t * hkv * d), lse(b * hq * t),
        ws(std::max(cu::attention_gemm_workspace_bytes(b, t, hq, hkv),
                    cu::attention_bwd_workspace_bytes(b, t, hq))) {
    cu::DeviceBuffer<float> tmp(q.size());
    const auto draw = [&](cu::DeviceBuffer<__nv_bfloat16>& dst, uint64_t seed) {
      cu::fill_normal(static_cast<int64_t>(dst.size()), seed, 0, 1.0f, tmp.get(), nullptr);
      cu::convert_to_bf16(static_cast<int64_t>(dst.size()), tmp.get(), dst.get(), nullptr);
    };
    draw(q, 1);
    draw(k, 2);
    draw(v, 3);
    draw(dout, 4);
    LOOM_CUDA_CHECK(cudaDeviceSynchronize());
  }
};

bool have_device(benchmark::State& state) {
  if (!loom::kernels::query_cuda_devices().devices.empty()) return true;
  state.SkipWithError("no CUDA device");
  return false;
}

// args: path, backward (0/1), b, hq, hkv; T = 2048, D = 128.
void BM_Attention(benchmark::State& state) {
  if (!have_device(state)) return;
  const auto path = static_cast<Path>(state.range(0));
  const bool backward = state.range(1) != 0;
  Buffers x(state.range(2), 2048, state.range(3), state.range(4), 128);
  cu::Gemm gemm;
  std::unique_ptr<cu::CudnnAttention> sdpa;
  cu::DeviceBytes sdpa_ws;
  if (path == kCudnn) {
    std::string why;
    sdpa = cu::CudnnAttention::create({x.b, x.t, x.hq, x.hkv, x.d}, &why);
    if (!sdpa) {
      state.SkipWithError(("cuDNN SDPA unavailable: " + why).c_str());
      return;
    }
    sdpa_ws = cu::DeviceBytes(sdpa->workspace_bytes());
  }
  auto fwd = [&] {
    if (path == kCudnn)
      sdpa->forward(x.q.get(), x.k.get(), x.v.get(), x.out.get(), x.lse.get(), sdpa_ws.get(), nullptr);
    else if (path == kFused)
      cu::attention_fwd_fused(x.b, x.t, x.hq, x.hkv, x.d, x.q.get(), x.k.get(), x.v.get(), nullptr,
                              x.out.get(), x.lse.get(), nullptr);
    else if (path == kGemm)
      cu::attention_fwd_gemm(gemm, x.b, x.t, x.hq, x.hkv, x.d, x.q.get(), x.k.get(), x.v.get(), nullptr,
                             x.out.get(), x.lse.get(), x.ws.get(), nullptr);
    else
      cu::attention_fwd(x.b, x.t, x.hq, x.hkv, x.d, x.q.get(), x.k.get(), x.v.get(), nullptr,
                        x.out.get(), x.lse.get(), nullptr);
  };
  auto bwd = [&] {
    if (path == kCudnn)
      sdpa->backward(x.q.get(), x.k.get(), x.v.get(), x.out.get(), x.lse.get(), x.dout.get(),
                     x.dq.get(), x.dk.get(), x.dv.get(), sdpa_ws.get(), nullptr);
    else if (path == kFused)
      cu::attention_bwd_fused(x.b, x.t, x.hq, x.hkv, x.d, x.q.get(), x.k.get(), x.v.get(), nullptr,
                              x.out.get(), x.lse.get(), x.dout.get(), x.dq.get(), x.dk.get(),
                              x.dv.get(), x.ws.get(), nullptr);
    else if (path == kGemm)
      cu::attention_bwd_gemm(gemm, x.b, x.t, x.hq, x.hkv, x.d, x.q.get(), x.k.get(), x.v.get(), nullptr,
                             x.out.get(), x.lse.get(), x.dout.get(), x.dq.get(), x.dk.get(),
                             x.dv.get(), x.ws.get(), nullptr);
    else
      cu::attention_bwd(x.b, x.t, x.hq, x.hkv, x.d, x.q.get(), x.k.get(), x.v.get(), nullptr,
                        x.out.get(), x.lse.get(), x.dout.get(), x.dq.get(), x.dk.get(), x.dv.get(),
                        x.ws.get(), nullptr);
  };
  fwd();  // lse for the backward; warms the algorithm caches
  if (backward) bwd();
  LOOM_CUDA_CHECK(cudaDeviceSynchronize());
  cudaEvent_t start, stop;
  LOOM_CUDA_CHECK(cudaEventCreate(&start));
  LOOM_CUDA_CHECK(cudaEventCreate(&stop));
  for (auto _ : state) {
    LOOM_CUDA_CHECK(cudaEventRecord(start, nullptr));
    backward ? bwd() : fwd();
    LOOM_CUDA_CHECK(cudaEventRecord(stop, nullptr));
    LOOM_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    LOOM_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    state.SetIterationTime(ms / 1e3);
  }
  LOOM_CUDA_CHECK(cudaEventDestroy(start));
  LOOM_CUDA_CHECK(cudaEventDestroy(stop));
  const double flops = 4.0 * x.b * x.t * x.t * x.hq * x.d / 2 * (backward ? 2.5 : 1.0);
  state.counters["TFLOP/s"] = benchmark::Counter(flops / 1e12, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(path == kFused ? "fused" : path == kGemm ? "gemm" : path == kCudnn ? "cudnn" : "flash") +
                 (backward ? " bwd" : " fwd"));
}

void shapes(benchmark::internal::Benchmark* bm) {
  for (int64_t path : {kFused, kGemm, kCudnn})
    for (int64_t bwd : {0, 1}) {
      bm->Args({path, bwd, 8, 16, 16});  // llama-1.3b, mbs 8
      bm->Args({path, bwd, 4, 32, 8});   // GQA group of 4
    }
  bm->Args({kFlash, 0, 8, 16, 16});
}
BENCHMARK(BM_Attention)->Apply(shapes)->UseManualTime()->Unit(benchmark::kMillisecond)->MinTime(0.2);

}  // namespace

BENCHMARK_MAIN();
