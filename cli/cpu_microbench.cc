// CPU microbenchmarks for calibration: see cpu_microbench.h.
#include "cli/cpu_microbench.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <fmt/format.h>

#include "kernels/cpu/cpu_ops.h"
#include "simulator/block_ops.h"

namespace loom::cli {

namespace {

namespace cpu = kernels::cpu;

// Median seconds of f() over repeats (at least 3, up to 0.3 s of runs), after one warm-up.
// With `sync` (copies measuring at once, measure_cpu's sync): every run starts when all copies
// call sync, and the repeat count is fixed so that the copies call it equally often.
template <typename F>
double median_seconds(const std::function<void()>& sync, F&& f) {
  if (sync) sync();
  f();
  std::vector<double> t;
  double total = 0;
  constexpr size_t kSyncedRepeats = 7;
  while (sync ? t.size() < kSyncedRepeats : (t.size() < 3 || (total < 0.3 && t.size() < 50))) {
    if (sync) sync();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    t.push_back(s);
    total += s;
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

std::vector<float> random_values(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

bool ends_with(const std::string& s, const char* tail) {
  const size_t n = std::strlen(tail);
  return s.size() >= n && s.compare(s.size() - n, n, tail) == 0;
}

}  // namespace

std::vector<GemmShape> simulator_gemm_shapes(const core::ModelSpec& model, const core::Layout& layout) {
  const sim::OpOptions opts;
  std::vector<sim::Op> ops = sim::block_forward_ops(model, layout, opts);
  for (const auto& list : {sim::block_backward_ops(model, layout, opts),
                           sim::lm_head_ops(model, layout, false), sim::lm_head_ops(model, layout, true)})
    ops.insert(ops.end(), list.begin(), list.end());
  // Each distinct (orientation, m, n, k) once, named by the first op that has it.
  std::map<std::tuple<int, int64_t, int64_t, int64_t>, std::string> shapes;
  for (const sim::Op& op : ops) {
    if (op.kind != sim::OpKind::kGemm || op.batch != 1) continue;
    const std::string name = op.name;
    const int orient = ends_with(name, "wgrad") ? 2 : ends_with(name, "dgrad") ? 1 : 0;
    shapes.emplace(std::tuple{orient, static_cast<int64_t>(op.m), static_cast<int64_t>(op.n),
                              static_cast<int64_t>(op.k)},
                   name);
  }
  std::vector<GemmShape> out;
  for (const auto& [key, name] : shapes) {
    const auto [orient, m, n, k] = key;
    out.push_back({orient, m, n, k, name});
  }
  return out;
}

core::Result<sim::CalibrationMeasurements> measure_cpu(const core::ModelSpec& model,
                                                      const core::Layout& layout,
                                                      std::ostream* progress,
                                                      const std::function<void()>& sync) {
  sim::CalibrationMeasurements meas;
  meas.source = fmt::format("Loom's CPU kernels, {} OpenMP threads, {} mbs {} seq {}",
                            omp_get_max_threads(), model.name, layout.mbs, layout.seq);
  for (const GemmShape& g : simulator_gemm_shapes(model, layout)) {
    const int orient = g.orientation;
    const int64_t m = g.m, n = g.n, k = g.k;
    const std::string& name = g.label;
    const std::vector<float> a = random_values(static_cast<size_t>(m * k), 1);
    const std::vector<float> b = random_values(static_cast<size_t>(n * k), 2);
    std::vector<float> c(static_cast<size_t>(m * n));
    const double s = median_seconds(sync, [&] {
      if (orient == 0) cpu::matmul_nt<float>(m, n, k, a.data(), b.data(), c.data(), 0.f);
      else if (orient == 1) cpu::matmul_nn<float>(m, n, k, a.data(), b.data(), c.data(), 0.f);
      else cpu::matmul_tn<float>(m, n, k, a.data(), b.data(), c.data(), 0.f);
    });
    meas.gemms.push_back({fmt::format("{} {}x{}x{}", name, m, n, k), double(m), double(n), double(k), 1, s});
    if (progress != nullptr)
      *progress << fmt::format("  gemm {:<14} {:>6} x {:>6} x {:>6}: {:9.3f} ms, {:6.1f} GFLOP/s\n",
                               name, m, n, k, s * 1e3, 2.0 * m * n * k / s / 1e9);
  }

  // Attention at the layout's shape (heads of one tensor-parallel rank).
  const int64_t b = layout.mbs, t = layout.seq, hq = model.num_heads / layout.tp,
                hkv = std::max<int64_t>(1, model.num_kv_heads / layout.tp),
                d = model.head_dim_or_default();
  const auto q = random_values(static_cast<size_t>(b * t * hq * d), 3);
  const auto kk = random_values(static_cast<size_t>(b * t * hkv * d), 4);
  const auto v = random_values(static_cast<size_t>(b * t * hkv * d), 5);
  const auto dout = random_values(static_cast<size_t>(b * t * hq * d), 6);
  std::vector<float> out(q.size()), lse(static_cast<size_t>(b * hq * t)), dq(q.size()),
      dk(kk.size()), dv(v.size());
  const double fwd_flops = 4.0 * b * hq * t * t * d * 0.5;  // as simulator/block_ops.cc counts
  const double fwd_s = median_seconds(sync, [&] {
    cpu::attention_fwd<float>(b, t, hq, hkv, d, q.data(), kk.data(), v.data(), nullptr, out.data(), lse.data());
  });
  const double bwd_s = median_seconds(sync, [&] {
    cpu::attention_bwd<float>(b, t, hq, hkv, d, q.data(), kk.data(), v.data(), nullptr, out.data(),
                              lse.data(), dout.data(), dq.data(), dk.data(), dv.data());
  });
  const std::string label = fmt::format("b{} t{} hq{} hkv{} d{}", b, t, hq, hkv, d);
  meas.attention.push_back({label + " fwd", fwd_flops, false, fwd_s});
  meas.attention.push_back({label + " bwd", 2.5 * fwd_flops, true, bwd_s});
  if (progress != nullptr)
    *progress << fmt::format("  attention {}: forward {:.3f} ms, backward {:.3f} ms\n", label,
                             fwd_s * 1e3, bwd_s * 1e3);

  // Memory: an OpenMP copy of 256 MiB (bytes read + written), reported; and the bandwidth that
  // the trainer's own element-wise kernels reach on one block's activations (norms, RoPE,
  // residual adds, the MLP activation, forward and backward), which is what the profile gets:
  // at these sizes the data sits in cache, and SwiGLU / GeLU are bound by their exp / tanh,
  // not by bytes, so a large copy describes them badly.
  const int64_t n = int64_t{64} << 20;
  std::vector<float> src(static_cast<size_t>(n), 1.f), dst(static_cast<size_t>(n));
  const double copy_s = median_seconds(sync, [&] {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) dst[static_cast<size_t>(i)] = src[static_cast<size_t>(i)];
  });
  meas.large_copy_gb_s = 2.0 * 4.0 * static_cast<double>(n) / copy_s / 1e9;
  if (progress != nullptr) *progress << fmt::format("  copy of 256 MiB: {:.1f} GB/s\n", *meas.large_copy_gb_s);

  const int64_t tokens = layout.mbs * layout.seq, h = model.hidden_size,
                ffn = model.ffn_hidden_size / layout.tp, qd = model.q_dim() / layout.tp,
                kvd = model.kv_dim() / layout.tp;
  const bool rms = model.norm == core::NormKind::kRmsNorm, swiglu = model.mlp == core::MlpKind::kSwiGlu,
             rope = model.position == core::PositionKind::kRope;
  const int64_t rot = std::max<int64_t>(2, static_cast<int64_t>(d * model.rotary_fraction) / 2 * 2);
  auto x = random_values(static_cast<size_t>(tokens * h), 7), dy = random_values(x.size(), 8);
  std::vector<float> y(x.size()), dx(x.size()), w(static_cast<size_t>(h), 1.f), bias(w.size()),
      dw(w.size()), db(w.size()), mean(static_cast<size_t>(tokens)), rstd(mean.size());
  auto g = random_values(static_cast<size_t>(tokens * ffn), 9), u = random_values(g.size(), 10);
  std::vector<float> act(g.size()), dg(g.size()), du(g.size());
  auto qk = random_values(static_cast<size_t>(tokens * (qd + kvd)), 11);
  std::vector<float> cos_t(static_cast<size_t>(layout.seq * rot / 2)), sin_t(cos_t.size());
  if (rope) cpu::rope_tables(layout.seq, rot, model.rope_theta, cos_t.data(), sin_t.data());
  const std::map<std::string, std::function<void()>> kernels = {
      {"norm", [&] {
         if (rms) cpu::rmsnorm_fwd<float>(tokens, h, x.data(), w.data(), 1e-5, y.data(), rstd.data());
         else cpu::layernorm_fwd<float>(tokens, h, x.data(), w.data(), bias.data(), 1e-5, y.data(), mean.data(), rstd.data());
       }},
      {"norm.bwd", [&] {
         if (rms) cpu::rmsnorm_bwd<float>(tokens, h, dy.data(), x.data(), w.data(), rstd.data(), dx.data(), dw.data());
         else cpu::layernorm_bwd<float>(tokens, h, dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(), dw.data(), db.data());
       }},
      {"residual", [&] { cpu::add_inplace<float>(tokens * h, x.data(), y.data()); }},
      {"mlp_act", [&] {
         if (swiglu) cpu::swiglu_fwd<float>(tokens * ffn, g.data(), u.data(), act.data());
         else cpu::gelu_fwd<float>(tokens * ffn, g.data(), act.data());
       }},
      {"mlp_act.bwd", [&] {
         if (swiglu) cpu::swiglu_bwd<float>(tokens * ffn, act.data(), g.data(), u.data(), dg.data(), du.data());
         else cpu::gelu_bwd<float>(tokens * ffn, act.data(), g.data(), dg.data());
       }},
      {"rope", [&] {
         if (rope) cpu::rope_fwd<float>(layout.mbs, layout.seq, (qd + kvd) / d, d, rot, cos_t.data(), sin_t.data(), qk.data());
       }},
  };
  std::map<std::string, double> seconds;
  for (const auto& [name, f] : kernels) seconds[name] = median_seconds(sync, f);
  // The simulator's element-wise ops of one block (fp32 bytes), matched to the kernels above.
  core::Layout fp32 = layout;
  fp32.precision = core::Precision::kFp32;
  double bytes = 0, measured = 0;
  const sim::OpOptions opts;
  for (const auto& list : {sim::block_forward_ops(model, fp32, opts), sim::block_backward_ops(model, fp32, opts)}) {
    for (const sim::Op& op : list) {
      if (op.kind != sim::OpKind::kElementwise) continue;
      const std::string name = op.name;
      const bool bwd = ends_with(name, ".bwd");
      std::string kernel;
      if (name.rfind("norm", 0) == 0) kernel = "norm";
      else if (name.rfind("residual", 0) == 0) kernel = "residual";
      else if (name.rfind("swiglu", 0) == 0 || name.rfind("gelu", 0) == 0) kernel = "mlp_act";
      else if (name.rfind("rope", 0) == 0) kernel = "rope";
      else continue;  // attention-internal ops of non-flash attention: not on this path
      if (bwd && kernel != "residual") kernel += ".bwd";
      // rope.bwd is the inverse rotation, the forward's cost; a residual's gradient is a copy-add.
      const double s = seconds.count(kernel) ? seconds.at(kernel) : seconds.at("rope");
      bytes += op.bytes;
      measured += s;
      if (progress != nullptr)
        *progress << fmt::format("  element-wise {:<14} {:9.1f} KB: {:8.3f} ms\n", name, op.bytes / 1e3, s * 1e3);
    }
  }
  if (measured > 0) meas.copy_gb_s = bytes / measured / 1e9;
  if (progress != nullptr && meas.copy_gb_s)
    *progress << fmt::format("  element-wise kernels of one block: {:.1f} GB/s effective\n", *meas.copy_gb_s);
  return meas;
}

}  // namespace loom::cli
