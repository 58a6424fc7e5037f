// Memory validation over published runs: see memory_validation.h.
#include "simulator/memory_validation.h"

#include <cmath>

#include "core/cluster_profile.h"
#include "core/units.h"
#include "simulator/memory_model.h"

namespace loom::sim {

namespace {

// The model's counterpart of what a source measured (ValidationRun::memory_semantics):
// nanotron logs max_memory_reserved of world rank 0, i.e. the first stage's allocator pool
// without the CUDA context; otherwise the device peak of the largest rank.
double comparable_gib(const ValidationRun& run, const MemoryReport& r) {
  if (run.framework == Framework::kNanotron) {
    return core::bytes_to_gib(r.stages.front().reserved_bytes());
  }
  return r.peak_gib();
}

}  // namespace

core::Result<std::vector<MemoryValidation>> validate_memory(
    const std::vector<ValidationRun>& runs,
    const std::function<void(size_t, size_t, const std::string&)>& progress) {
  ProfileCache profiles;
  std::vector<MemoryValidation> out;
  for (size_t i = 0; i < runs.size(); ++i) {
    const ValidationRun& run = runs[i];
    if (progress) progress(i, runs.size(), run.id);
    MemoryValidation v;
    v.run = &run;
    if (!run.skip_reason.empty()) {
      v.reason = run.skip_reason;
      out.push_back(v);
      continue;
    }
    LOOM_ASSIGN_OR_RETURN(const core::ClusterProfile* cluster, profiles.get(run.cluster_profile));
    auto layout = core::resolve_layout(run.layout, run.model);
    core::Result<MemoryReport> report = layout.status();
    if (layout.ok()) {
      MemoryModelInput in{run.model, *cluster, *layout, run.framework,
                          run.flash_attention, run.dropout};
      report = estimate_memory(in);
    }
    if (!report.ok()) {
      v.status = MemoryValidation::Status::kRejected;
      v.reason = report.status().message();
      out.push_back(v);
      continue;
    }
    v.status = MemoryValidation::Status::kSimulated;
    v.layout = layout->summary();
    v.peak_gib = report->peak_gib();
    v.capacity_gib = core::bytes_to_gib(report->capacity_bytes);
    v.fits = report->fits;
    if (run.measured_memory_gib) {
      v.predicted_gib = comparable_gib(run, *report);
      v.error_pct = 100.0 * (*v.predicted_gib / *run.measured_memory_gib - 1.0);
    }
    out.push_back(v);
  }
  return out;
}

MemoryValidationSummary summarize(const std::vector<MemoryValidation>& results) {
  MemoryValidationSummary s;
  for (const auto& r : results) {
    ++s.total;
    if (r.status == MemoryValidation::Status::kSkipped) { ++s.skipped; continue; }
    if (r.status == MemoryValidation::Status::kRejected) { ++s.rejected; continue; }
    ++s.simulated;
    if (!r.fits) ++s.not_fitting;
    if (!r.error_pct) continue;
    ++s.with_memory;
    s.mean_abs_error_pct += std::abs(*r.error_pct);
    s.mean_error_pct += *r.error_pct;
    if (std::abs(*r.error_pct) > s.max_abs_error_pct) {
      s.max_abs_error_pct = std::abs(*r.error_pct);
      s.max_error_run = r.run->id;
    }
  }
  if (s.with_memory > 0) {
    s.mean_abs_error_pct /= s.with_memory;
    s.mean_error_pct /= s.with_memory;
  }
  return s;
}

}  // namespace loom::sim
