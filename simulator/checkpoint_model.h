// Checkpoint size and write time: the bytes each rank writes for a full checkpoint
// (half-precision weights + fp32 master weights + Adam m and v, as Megatron and DeepSpeed
// save them) and the time to write them at the profile's storage bandwidth, bounded by the
// aggregate filesystem bandwidth and by what each node can push.
#pragma once

#include "core/cluster_profile.h"
#include "core/layout.h"
#include "core/model_spec.h"
#include "simulator/framework.h"
#include "simulator/memory_model.h"
#include "simulator/stage_layout.h"

namespace loom::sim {

CheckpointEstimate estimate_checkpoint(const core::ModelSpec& model,
                                       const core::ClusterProfile& cluster,
                                       const core::Layout& layout, const FrameworkTraits& framework);
// The same from the stages' contents (stage_contents for stage 0 .. pp-1).
CheckpointEstimate estimate_checkpoint(const std::vector<StageContents>& stages,
                                       const core::ClusterProfile& cluster,
                                       const core::Layout& layout, const FrameworkTraits& framework);

}  // namespace loom::sim
