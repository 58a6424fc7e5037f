// Checkpoint model: see checkpoint_model.h. Every (tp, pp) shard's weights are written once
// (by DP rank 0, or by all DP ranks in 1/dp slices under ZeRO-3); optimizer state is written
// by the DP rank that owns it (ZeRO >= 1) or by DP rank 0.
#include "simulator/checkpoint_model.h"

#include <algorithm>

#include "core/units.h"
#include "simulator/stage_layout.h"

namespace loom::sim {

CheckpointEstimate estimate_checkpoint(const core::ModelSpec& m, const core::ClusterProfile& cluster,
                                       const core::Layout& l, const FrameworkTraits& fw) {
  std::vector<StageContents> stages;
  for (int64_t s = 0; s < l.pp; ++s) stages.push_back(stage_contents(m, l, s));
  return estimate_checkpoint(stages, cluster, l, fw);
}

CheckpointEstimate estimate_checkpoint(const std::vector<StageContents>& stages,
                                       const core::ClusterProfile& cluster, const core::Layout& l,
                                       const FrameworkTraits& fw) {
  const bool mixed = l.precision != core::Precision::kFp32;
  const double weight_bytes = mixed ? 2.0 : 4.0;
  // fp32 master weights (mixed precision only: in fp32 the weights are the master) + Adam m, v.
  const double optimizer_bytes = (mixed ? 4.0 : 0.0) + 8.0;
  const double d = static_cast<double>(l.dp);

  // Parameters whose weights / optimizer states each stage's TP rank saves.
  std::vector<double> weight_params(l.pp), optimizer_params(l.pp);
  for (int64_t s = 0; s < l.pp; ++s) {
    const StageContents& c = stages[s];
    weight_params[s] = static_cast<double>(c.params - c.tied_copy_params);
    optimizer_params[s] =
        static_cast<double>(fw.tied_copy_optimizer_saved ? c.params : c.params - c.tied_copy_params);
  }

  CheckpointEstimate out;
  std::vector<double> node_bytes(core::ceil_div(l.gpus, cluster.gpus_per_node), 0.0);
  for (int64_t rank = 0; rank < l.gpus; ++rank) {
    const core::RankCoords c = core::rank_coords(l, rank);
    const double w = weight_params[c.pp], o = optimizer_params[c.pp];
    double bytes = 0;
    if (l.zero >= 3) {
      bytes += w * weight_bytes / d;
    } else if (c.dp == 0) {
      bytes += w * weight_bytes;
    }
    if (l.zero >= 1) {
      bytes += o * optimizer_bytes / d;
    } else if (c.dp == 0) {
      bytes += o * optimizer_bytes;
    }
    if (bytes > 0) ++out.writer_ranks;
    out.bytes += bytes;
    out.max_rank_bytes = std::max(out.max_rank_bytes, bytes);
    node_bytes[rank / cluster.gpus_per_node] += bytes;
  }
  for (int64_t s = 0; s < l.pp; ++s) {
    out.weights_only_bytes += weight_params[s] * weight_bytes * static_cast<double>(l.tp);
  }
  double max_node = 0;
  for (double bytes : node_bytes) max_node = std::max(max_node, bytes);
  out.write_time_s = out.bytes / (cluster.storage.write_gb_s * 1e9);
  if (cluster.storage.per_node_write_gb_s > 0) {
    out.write_time_s = std::max(out.write_time_s, max_node / (cluster.storage.per_node_write_gb_s * 1e9));
  }
  return out;
}

}  // namespace loom::sim
