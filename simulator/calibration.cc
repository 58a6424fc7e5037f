// Compute-profile calibration: see calibration.h.
#include "simulator/calibration.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "simulator/compute_model.h"

namespace loom::sim {

namespace {

using core::ErrorCode;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Sum of squared log(predicted / measured) over the GEMMs for one gemm_max_efficiency.
double gemm_log_loss(core::ClusterProfile p, double efficiency, const std::vector<GemmSample>& g) {
  p.compute.gemm_max_efficiency = efficiency;
  const ComputeModel model(p, core::Precision::kBf16);
  double loss = 0;
  for (const GemmSample& s : g) {
    const double r = std::log(model.gemm_time_s(s.m, s.n, s.k, s.batch) / s.seconds);
    loss += r * r;
  }
  return loss;
}

core::Result<double> number(const nlohmann::json& row, const char* key, const std::string& where) {
  if (!row.contains(key) || !row[key].is_number())
    return core::error(ErrorCode::kParse, "{}: field '{}' missing or not a number", where, key);
  const double v = row[key].get<double>();
  if (!(v > 0) || !std::isfinite(v))
    return core::error(ErrorCode::kInvalidArgument, "{}: field '{}' = {} must be positive", where,
                       key, v);
  return v;
}

}  // namespace

core::Result<CalibrationMeasurements> measurements_from_json(const nlohmann::json& j,
                                                            const std::string& backend) {
  CalibrationMeasurements m;
  if (!j.is_object()) return core::error(ErrorCode::kParse, "measurements: expected a JSON object");
  m.source = j.value("device", std::string("unknown device"));
  if (j.contains("torch")) m.source += fmt::format(" (PyTorch {})", j["torch"].get<std::string>());
  if (j.contains("gemm")) {
    for (size_t i = 0; i < j["gemm"].size(); ++i) {
      const auto& r = j["gemm"][i];
      const std::string where = fmt::format("gemm[{}]", i);
      GemmSample s;
      LOOM_ASSIGN_OR_RETURN(s.m, number(r, "m", where));
      LOOM_ASSIGN_OR_RETURN(s.n, number(r, "n", where));
      LOOM_ASSIGN_OR_RETURN(s.k, number(r, "k", where));
      LOOM_ASSIGN_OR_RETURN(s.seconds, number(r, "seconds", where));
      s.label = fmt::format("{} T={} {} {}", r.value("model", "?"), r.value("tokens", 0),
                            r.value("op", "?"), r.value("pass", "?"));
      m.gemms.push_back(std::move(s));
    }
  }
  if (j.contains("attention")) {
    bool any_backend_row = false;
    for (size_t i = 0; i < j["attention"].size(); ++i) {
      const auto& r = j["attention"][i];
      if (r.value("backend", "") != backend || r.contains("error")) continue;
      any_backend_row = true;
      const std::string where = fmt::format("attention[{}]", i);
      double b, h, s, d, tf, tb;
      LOOM_ASSIGN_OR_RETURN(b, number(r, "batch", where));
      LOOM_ASSIGN_OR_RETURN(h, number(r, "q_heads", where));
      LOOM_ASSIGN_OR_RETURN(s, number(r, "seq", where));
      LOOM_ASSIGN_OR_RETURN(d, number(r, "head_dim", where));
      LOOM_ASSIGN_OR_RETURN(tf, number(r, "fwd_seconds", where));
      LOOM_ASSIGN_OR_RETURN(tb, number(r, "bwd_seconds", where));
      const double fwd = 4.0 * b * h * s * s * d * 0.5;  // block_ops.cc: causal half
      const std::string label = r.value("case", "?");
      m.attention.push_back({label, fwd, false, tf});
      m.attention.push_back({label, 2.5 * fwd, true, tb});
    }
    if (!any_backend_row && !j["attention"].empty())
      return core::error(ErrorCode::kInvalidArgument,
                         "measurements: no attention rows for backend '{}' (the file has: default, "
                         "flash, cudnn or their errors)",
                         backend);
  }
  if (j.contains("memory")) {
    double copy;
    LOOM_ASSIGN_OR_RETURN(copy, number(j["memory"], "copy_gb_s", "memory"));
    m.copy_gb_s = copy;
  }
  if (m.gemms.empty() && m.attention.empty() && !m.copy_gb_s)
    return core::error(ErrorCode::kInvalidArgument,
                       "measurements: no 'gemm', 'attention' or 'memory' section to fit");
  return m;
}

core::Result<CalibrationResult> calibrate_compute(const core::ClusterProfile& profile,
                                                  const CalibrationMeasurements& meas) {
  if (!profile.compute.present)
    return core::error(ErrorCode::kInvalidArgument,
                       "cluster '{}' has no compute section to calibrate", profile.name);
  const double peak = profile.device.peak_tflops_bf16 * 1e12;
  if (!(peak > 0))
    return core::error(ErrorCode::kInvalidArgument, "cluster '{}': device.peak_tflops_bf16 is 0",
                       profile.name);
  CalibrationResult res;
  res.before = profile.compute;
  res.after = profile.compute;

  if (!meas.gemms.empty()) {
    // The loss is smooth and unimodal in the efficiency except where the memory roofline takes
    // over; a fine grid then a golden-section refinement finds the global minimum.
    double best = res.before.gemm_max_efficiency, best_loss = 1e300;
    for (int i = 1; i <= 200; ++i) {
      const double e = 0.005 * i;
      const double l = gemm_log_loss(profile, e, meas.gemms);
      if (l < best_loss) best_loss = l, best = e;
    }
    double lo = std::max(0.001, best - 0.005), hi = std::min(1.0, best + 0.005);
    const double g = (std::sqrt(5.0) - 1) / 2;
    for (int it = 0; it < 40; ++it) {
      const double a = hi - g * (hi - lo), b = lo + g * (hi - lo);
      if (gemm_log_loss(profile, a, meas.gemms) < gemm_log_loss(profile, b, meas.gemms)) hi = b;
      else lo = a;
    }
    res.after.gemm_max_efficiency = 0.5 * (lo + hi);

    core::ClusterProfile fitted = profile;
    fitted.compute = res.after;
    const ComputeModel before(profile, core::Precision::kBf16);
    const ComputeModel after(fitted, core::Precision::kBf16);
    std::vector<double> eb, ea;
    for (const GemmSample& s : meas.gemms) {
      GemmFitRow row{s.label, s.seconds, before.gemm_time_s(s.m, s.n, s.k, s.batch),
                     after.gemm_time_s(s.m, s.n, s.k, s.batch)};
      eb.push_back(std::abs(std::log(row.before_s / s.seconds)));
      ea.push_back(std::abs(std::log(row.after_s / s.seconds)));
      res.gemm_rows.push_back(std::move(row));
    }
    res.gemm_median_error_before = std::expm1(median(eb));
    res.gemm_median_error_after = std::expm1(median(ea));
    res.gemm_max_error_before = std::expm1(*std::max_element(eb.begin(), eb.end()));
    res.gemm_max_error_after = std::expm1(*std::max_element(ea.begin(), ea.end()));
  }

  std::vector<double> fwd, bwd;
  for (const AttentionSample& a : meas.attention) {
    if (!(a.seconds > 0) || !(a.flops > 0)) continue;
    (a.backward ? bwd : fwd).push_back(a.flops / a.seconds / peak);
  }
  res.attention_fwd_samples = static_cast<int>(fwd.size());
  res.attention_bwd_samples = static_cast<int>(bwd.size());
  if (!fwd.empty()) res.after.attention_fwd_efficiency = std::min(1.0, median(fwd));
  if (!bwd.empty()) res.after.attention_bwd_efficiency = std::min(1.0, median(bwd));

  if (meas.copy_gb_s) {
    if (!(profile.device.memory_bandwidth_gb_s > 0))
      return core::error(ErrorCode::kInvalidArgument,
                         "cluster '{}': device.memory_bandwidth_gb_s is 0", profile.name);
    res.after.memory_efficiency = std::min(1.0, *meas.copy_gb_s / profile.device.memory_bandwidth_gb_s);
  }
  return res;
}

}  // namespace loom::sim
