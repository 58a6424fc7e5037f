// GPU microbenchmarks for calibration: see gpu_microbench.h.
#include "cli/gpu_microbench.h"

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/cpu_microbench.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/attention_cudnn.h"
#include "kernels/cuda/bias.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/fill.h"
#include "kernels/cuda/gemm.h"
#include "kernels/device_query.h"

#ifdef LOOM_WITH_NCCL
#include "comm/nccl_comm.h"
#endif

namespace loom::cli {

namespace {

namespace cu = kernels::cuda;
using bf16 = __nv_bfloat16;

// Median CUDA-event seconds of f() on the default stream: two warm-up runs (cuBLASLt's
// algorithm choice, cuDNN's plan caches), then at least 5 runs and up to 0.2 s or 50 runs.
double median_device_seconds(const std::function<void()>& f) {
  f();
  f();
  cudaEvent_t start, stop;
  LOOM_CUDA_CHECK(cudaEventCreate(&start));
  LOOM_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> t;
  double total = 0;
  while (t.size() < 5 || (total < 0.2 && t.size() < 50)) {
    LOOM_CUDA_CHECK(cudaEventRecord(start, nullptr));
    f();
    LOOM_CUDA_CHECK(cudaEventRecord(stop, nullptr));
    LOOM_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    LOOM_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    t.push_back(1e-3 * ms);
    total += t.back();
  }
  LOOM_CUDA_CHECK(cudaEventDestroy(start));
  LOOM_CUDA_CHECK(cudaEventDestroy(stop));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// N(0, 1) bf16 values on the device (fill.h's generator, converted).
cu::DeviceBuffer<bf16> random_bf16(int64_t count, uint64_t seed) {
  cu::DeviceBuffer<float> tmp(static_cast<size_t>(count));
  cu::DeviceBuffer<bf16> out(static_cast<size_t>(count));
  cu::fill_normal(count, seed, 0, 1.0f, tmp.get(), nullptr);
  cu::convert_to_bf16(count, tmp.get(), out.get(), nullptr);
  LOOM_CUDA_CHECK(cudaDeviceSynchronize());
  return out;
}

}  // namespace

core::Result<sim::CalibrationMeasurements> measure_gpu(const core::ModelSpec& model,
                                                      const core::Layout& layout,
                                                      std::ostream* progress, std::string* note) {
  const kernels::CudaDeviceList devices = kernels::query_cuda_devices();
  if (devices.devices.empty()) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "--measure on a GPU profile times Loom's CUDA kernels: no CUDA device "
                       "here ({})",
                       devices.no_device_reason);
  }
  sim::CalibrationMeasurements meas;
  meas.source = fmt::format("Loom's CUDA kernels on {}, {} mbs {} seq {}", devices.devices[0].name,
                            model.name, layout.mbs, layout.seq);

  // GEMMs: bf16 inputs; forward and input-gradient outputs bf16, weight gradients fp32 with
  // beta 1 (the trainer accumulates them across micro-batches).
  cu::Gemm gemm;
  for (const GemmShape& g : simulator_gemm_shapes(model, layout)) {
    const cu::DeviceBuffer<bf16> a = random_bf16(g.m * g.k, 1), b = random_bf16(g.n * g.k, 2);
    cu::DeviceBytes c(static_cast<size_t>(g.m * g.n) * (g.orientation == 2 ? 4 : 2));
    LOOM_CUDA_CHECK(cudaMemset(c.get(), 0, c.bytes()));
    const cu::GemmOp op = g.orientation == 0 ? cu::GemmOp::kNT
                          : g.orientation == 1 ? cu::GemmOp::kNN
                                               : cu::GemmOp::kTN;
    const double s = median_device_seconds([&] {
      gemm.run(op, g.m, g.n, g.k, a.get(), b.get(), c.get(),
               g.orientation == 2 ? CUDA_R_32F : CUDA_R_16BF, g.orientation == 2 ? 1.f : 0.f, nullptr);
    });
    meas.gemms.push_back({fmt::format("{} {}x{}x{}", g.label, g.m, g.n, g.k), double(g.m),
                          double(g.n), double(g.k), 1, s});
    if (progress != nullptr)
      *progress << fmt::format("  gemm {:<14} {:>6} x {:>6} x {:>6}: {:9.3f} ms, {:6.1f} TFLOP/s\n",
                               g.label, g.m, g.n, g.k, s * 1e3, 2.0 * g.m * g.n * g.k / s / 1e12);
  }

  // Attention at the layout's shape (the heads of one tensor-parallel rank).
  const int64_t b = layout.mbs, t = layout.seq, hq = model.num_heads / layout.tp,
                hkv = std::max<int64_t>(1, model.num_kv_heads / layout.tp),
                d = model.head_dim_or_default();
  const double fwd_flops = 4.0 * b * hq * t * t * d * 0.5;  // as simulator/block_ops.cc counts
  const auto q = random_bf16(b * t * hq * d, 3), k = random_bf16(b * t * hkv * d, 4),
             v = random_bf16(b * t * hkv * d, 5), dout = random_bf16(b * t * hq * d, 6);
  cu::DeviceBuffer<bf16> out(q.size()), dq(q.size()), dk(k.size()), dv(v.size());
  cu::DeviceBuffer<float> lse(static_cast<size_t>(b * hq * t));
  const std::string label = fmt::format("b{} t{} hq{} hkv{} d{}", b, t, hq, hkv, d);
  std::string why;
  std::unique_ptr<cu::CudnnAttention> sdpa = cu::CudnnAttention::create({b, t, hq, hkv, d}, &why);
  double cudnn_fwd = 0, cudnn_bwd = 0;
  if (sdpa) {
    cu::DeviceBytes ws(sdpa->workspace_bytes());
    cudnn_fwd = median_device_seconds(
        [&] { sdpa->forward(q.get(), k.get(), v.get(), out.get(), lse.get(), ws.get(), nullptr); });
    cudnn_bwd = median_device_seconds([&] {
      sdpa->backward(q.get(), k.get(), v.get(), out.get(), lse.get(), dout.get(), dq.get(),
                     dk.get(), dv.get(), ws.get(), nullptr);
    });
    meas.attention.push_back({label + " cuDNN fwd", fwd_flops, false, cudnn_fwd});
    meas.attention.push_back({label + " cuDNN bwd", 2.5 * fwd_flops, true, cudnn_bwd});
    if (progress != nullptr)
      *progress << fmt::format("  attention {} (cuDNN SDPA): forward {:.3f} ms ({:.0f} TFLOP/s), "
                               "backward {:.3f} ms ({:.0f} TFLOP/s)\n",
                               label, cudnn_fwd * 1e3, fwd_flops / cudnn_fwd / 1e12,
                               cudnn_bwd * 1e3, 2.5 * fwd_flops / cudnn_bwd / 1e12);
  } else if (note != nullptr) {
    *note = "attention not calibrated (the profile keeps its values): cuDNN SDPA unavailable: " + why;
  }
  if (cu::attention_fused_supported(d) && progress != nullptr) {
    cu::DeviceBytes ws(cu::attention_bwd_workspace_bytes(b, t, hq));
    const double f = median_device_seconds([&] {
      cu::attention_fwd_fused(b, t, hq, hkv, d, q.get(), k.get(), v.get(), nullptr, out.get(),
                              lse.get(), nullptr);
    });
    const double bw = median_device_seconds([&] {
      cu::attention_bwd_fused(b, t, hq, hkv, d, q.get(), k.get(), v.get(), nullptr, out.get(),
                              lse.get(), dout.get(), dq.get(), dk.get(), dv.get(), ws.get(), nullptr);
    });
    *progress << fmt::format("  attention {} (Loom's fused kernels, not fitted): forward {:.3f} ms, "
                             "backward {:.3f} ms{}\n",
                             label, f * 1e3, bw * 1e3,
                             sdpa ? fmt::format("; of cuDNN's speed {:.3f} / {:.3f} (the loom "
                                                "framework's attention_efficiency_scale)",
                                                cudnn_fwd / f, cudnn_bwd / bw)
                                  : std::string());
  }

  // HBM: a 1 GiB device-to-device copy, bytes read + written per second.
  constexpr size_t kCopyBytes = size_t{1} << 30;
  cu::DeviceBytes src(kCopyBytes), dst(kCopyBytes);
  LOOM_CUDA_CHECK(cudaMemset(src.get(), 1, kCopyBytes));
  const double copy_s = median_device_seconds([&] {
    LOOM_CUDA_CHECK(cudaMemcpyAsync(dst.get(), src.get(), kCopyBytes, cudaMemcpyDeviceToDevice, nullptr));
  });
  meas.copy_gb_s = 2.0 * static_cast<double>(kCopyBytes) / copy_s / 1e9;
  if (progress != nullptr)
    *progress << fmt::format("  device copy of 1 GiB: {:.0f} GB/s (read + written)\n", *meas.copy_gb_s);
  return meas;
}

core::Result<std::vector<CollectiveTiming>> measure_nccl_all_reduce(int gpus,
                                                                   const std::vector<double>& sizes) {
#ifndef LOOM_WITH_NCCL
  (void)gpus;
  (void)sizes;
  return core::error(core::ErrorCode::kInvalidArgument,
                     "measuring the intra-node fabric needs NCCL; this loom was built without it");
#else
  const kernels::CudaDeviceList devices = kernels::query_cuda_devices();
  if (gpus < 2 || static_cast<int>(devices.devices.size()) < gpus) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "an all-reduce among {} GPUs needs {} visible devices; {} are", gpus, gpus,
                       devices.devices.size());
  }
  ncclUniqueId id;
  if (ncclGetUniqueId(&id) != ncclSuccess)
    return core::error(core::ErrorCode::kInternal, "ncclGetUniqueId failed");
  std::vector<std::vector<double>> seconds(static_cast<size_t>(gpus));
  std::vector<core::Status> status(static_cast<size_t>(gpus), core::ok_status());
  auto measure_rank = [&](int r) {
    auto comm = comm::make_nccl_comm(id, r, gpus, r, "calibrate", std::chrono::seconds(120));
    if (!comm.ok()) {
      status[r] = comm.status();
      return;
    }
    for (double bytes : sizes) {
      const int64_t count = static_cast<int64_t>(bytes / 4);
      cu::DeviceBuffer<float> buf(static_cast<size_t>(count));
      LOOM_CUDA_CHECK(cudaMemset(buf.get(), 0, static_cast<size_t>(count) * 4));
      std::vector<double> t;
      for (int i = 0; i < 12; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        status[r] = (*comm)->all_reduce(buf.get(), count, comm::ReduceOp::kSum);
        if (!status[r].ok()) return;
        if (i >= 2) t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(t.begin(), t.end());
      seconds[r].push_back(t[t.size() / 2]);
    }
  };
  std::vector<std::thread> threads;
  for (int r = 0; r < gpus; ++r) {
    threads.emplace_back([&, r] {
      try {
        measure_rank(r);
      } catch (const std::exception& e) {  // a CUDA error (cuda_check.h) on this GPU's thread
        status[r] = core::error(core::ErrorCode::kInternal, "{}", e.what());
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < gpus; ++r)
    if (!status[r].ok()) return status[r].with_context(fmt::format("GPU {}", r));
  std::vector<CollectiveTiming> out;
  for (size_t i = 0; i < sizes.size(); ++i) {
    double slowest = 0;  // the collective ends when its last rank does
    for (int r = 0; r < gpus; ++r) slowest = std::max(slowest, seconds[r][i]);
    out.push_back({sizes[i], slowest});
  }
  return out;
#endif
}

}  // namespace loom::cli
