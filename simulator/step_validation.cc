// Step-time validation: see step_validation.h.
#include "simulator/step_validation.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>

#include <fmt/format.h>

#include "core/cluster_profile.h"
#include "simulator/flops.h"
#include "simulator/step_time.h"

namespace loom::sim {

std::optional<std::pair<double, std::string>> measured_iteration_time(const ValidationRun& run,
                                                                      double peak_tflops) {
  if (run.measured_iter_time_s) return std::pair{*run.measured_iter_time_s, "iter_time_s"};
  if (run.derived_iter_time_s) return std::pair{*run.derived_iter_time_s, "derived iter_time_s"};
  const core::Layout& l = run.layout;
  const double gpus = static_cast<double>(l.gpus);
  if (run.measured_tflops_per_gpu && run.flops_convention.rfind("Megatron eq.(3)", 0) == 0 &&
      gpus > 0) {
    const double f = megatron_eq3_flops(l.gbs, l.seq, run.model.num_layers,
                                        run.model.hidden_size, run.model.vocab_size);
    return std::pair{f / (*run.measured_tflops_per_gpu * 1e12 * gpus),
                     "tflops_per_gpu via Megatron eq. (3)"};
  }
  if (run.measured_mfu && peak_tflops > 0 && gpus > 0) {
    // nanotron's and llm-foundry's MFU count 6N + the attention term per token like Loom.
    core::Layout resolved = l;
    const double f = flops_per_iteration(run.model, resolved).model;
    return std::pair{f / (*run.measured_mfu * peak_tflops * 1e12 * gpus),
                     "mfu via 6N + attention FLOPs"};
  }
  return std::nullopt;
}

namespace {

std::string group_key(const ValidationRun& r) {
  const auto& m = r.model;
  return fmt::format("L{} h{} a{} s{} V{} | {} gpus | {}", m.num_layers, m.hidden_size,
                     m.num_heads, r.layout.seq, m.vocab_size, r.layout.gpus, r.cluster_profile);
}

std::vector<double> ranks_of(const std::vector<double>& v) {
  std::vector<size_t> idx(v.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  std::vector<double> ranks(v.size());
  for (size_t i = 0; i < idx.size();) {  // average ranks for ties
    size_t j = i;
    while (j + 1 < idx.size() && v[idx[j + 1]] == v[idx[i]]) ++j;
    for (size_t k = i; k <= j; ++k) ranks[idx[k]] = (static_cast<double>(i + j) / 2.0) + 1.0;
    i = j + 1;
  }
  return ranks;
}

// Spearman's rank correlation = Pearson correlation of the ranks.
double spearman(const std::vector<double>& x, const std::vector<double>& y) {
  const auto rx = ranks_of(x), ry = ranks_of(y);
  const double n = static_cast<double>(rx.size());
  double mx = 0, my = 0;
  for (size_t i = 0; i < rx.size(); ++i) mx += rx[i] / n, my += ry[i] / n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < rx.size(); ++i) {
    sxy += (rx[i] - mx) * (ry[i] - my);
    sxx += (rx[i] - mx) * (rx[i] - mx);
    syy += (ry[i] - my) * (ry[i] - my);
  }
  return sxx > 0 && syy > 0 ? sxy / std::sqrt(sxx * syy) : 1.0;
}

}  // namespace

core::Result<std::vector<StepValidation>> validate_step_time(
    const std::vector<ValidationRun>& runs,
    const std::function<void(size_t, size_t, const std::string&)>& progress,
    const std::map<Framework, FrameworkTraits>& traits) {
  ProfileCache profiles;
  std::vector<StepValidation> out;
  for (size_t i = 0; i < runs.size(); ++i) {
    const ValidationRun& run = runs[i];
    if (progress) progress(i, runs.size(), run.id);
    StepValidation v;
    v.run = &run;
    v.group_key = group_key(run);
    v.batch_group_key = v.group_key + fmt::format(" | gbs {}", run.layout.gbs);
    if (!run.skip_reason.empty()) {
      v.reason = run.skip_reason;
      out.push_back(v);
      continue;
    }
    LOOM_ASSIGN_OR_RETURN(const core::ClusterProfile* profile, profiles.get(run.cluster_profile));
    const core::ClusterProfile& cluster = *profile;
    auto measured = measured_iteration_time(run, cluster.device.peak_tflops_bf16);
    if (!measured) {
      v.reason = "no iteration time, TFLOP/s or MFU to compare with";
      out.push_back(v);
      continue;
    }
    v.measured_s = measured->first;
    v.measured_source = measured->second;
    auto layout = core::resolve_layout(run.layout, run.model);
    core::Result<StepTimeReport> report = layout.status();
    if (layout.ok()) {
      StepTimeInput in;
      in.model = run.model;
      in.cluster = cluster;
      in.layout = *layout;
      in.framework = run.framework;
      in.flash_attention = run.flash_attention;
      in.dp_comm_overlap = run.dp_comm_overlap;
      in.dropout = run.dropout;
      in.software_efficiency_scale = run.software_efficiency_scale;
      if (auto it = traits.find(run.framework); it != traits.end()) in.traits = it->second;
      report = simulate_step(in);
    }
    if (!report.ok()) {
      v.status = StepValidation::Status::kRejected;
      v.reason = report.status().message();
      out.push_back(v);
      continue;
    }
    v.status = StepValidation::Status::kSimulated;
    v.layout = layout->summary();
    v.predicted_s = report->step_time_s;
    v.error_pct = 100.0 * (v.predicted_s / v.measured_s - 1.0);
    out.push_back(v);
  }
  return out;
}

StepRanking rank_groups(const std::map<std::string, std::vector<const StepValidation*>>& groups) {
  StepRanking ranking;
  std::vector<double> rhos;
  for (const auto& [key, members] : groups) {
    if (members.size() < 3) continue;
    std::vector<double> predicted, measured;
    for (const auto* m : members) {
      predicted.push_back(m->predicted_s);
      measured.push_back(m->measured_s);
    }
    StepGroupStats g;
    g.key = key;
    g.runs = static_cast<int>(members.size());
    g.spearman = spearman(predicted, measured);
    const size_t pick = std::min_element(predicted.begin(), predicted.end()) - predicted.begin();
    const double best = *std::min_element(measured.begin(), measured.end());
    g.regret_pct = 100.0 * (measured[pick] / best - 1.0);
    ranking.groups.push_back(g);
    rhos.push_back(g.spearman);
    ranking.mean_regret_pct += g.regret_pct;
  }
  if (!rhos.empty()) {
    std::sort(rhos.begin(), rhos.end());
    const size_t n = rhos.size();
    ranking.median_spearman = n % 2 ? rhos[n / 2] : 0.5 * (rhos[n / 2 - 1] + rhos[n / 2]);
    ranking.mean_regret_pct /= static_cast<double>(n);
  }
  return ranking;
}

StepValidationSummary summarize(const std::vector<StepValidation>& results) {
  StepValidationSummary s;
  std::map<std::string, std::vector<const StepValidation*>> by_model, by_batch;
  for (const auto& r : results) {
    ++s.total;
    if (r.status == StepValidation::Status::kSkipped) { ++s.skipped; continue; }
    if (r.status == StepValidation::Status::kRejected) { ++s.rejected; continue; }
    ++s.simulated;
    s.mape_pct += std::abs(r.error_pct);
    s.mean_error_pct += r.error_pct;
    if (std::abs(r.error_pct) > s.max_abs_error_pct) {
      s.max_abs_error_pct = std::abs(r.error_pct);
      s.max_error_run = r.run->id;
    }
    by_model[r.group_key].push_back(&r);
    by_batch[r.batch_group_key].push_back(&r);
  }
  if (s.simulated > 0) {
    s.mape_pct /= s.simulated;
    s.mean_error_pct /= s.simulated;
  }
  s.by_model = rank_groups(by_model);
  s.by_batch = rank_groups(by_batch);
  return s;
}

}  // namespace loom::sim
