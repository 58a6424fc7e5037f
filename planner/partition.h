// The pipeline partition a plan uses: blocks per stage that minimise the slowest stage's
// micro-batch time (forward + backward), counting the embedding's work on the first stage and
// the LM head + loss on the last, under each stage's memory limit. Exact: the bottleneck time
// is found by bisection, and for a given bottleneck each stage's largest block count follows
// in closed form from its time and its (affine) memory line. Tested in partition_test.cc.
#pragma once

#include <vector>

#include "core/status.h"
#include "simulator/memory_model.h"
#include "simulator/step_time.h"

namespace loom::plan {

struct PartitionResult {
  bool feasible = false;
  std::vector<int64_t> blocks;  // per stage, sums to the layers when feasible
  double bottleneck_s = 0;      // the slowest stage's micro-batch time
  // When infeasible: the stage that cannot hold its share and by how much it is over.
  int64_t worst_stage = 0;
  double over_bytes = 0;
};

PartitionResult optimal_partition(int64_t layers, const sim::UnitCosts& costs,
                                  const std::vector<sim::StageMemoryLine>& memory,
                                  double capacity_bytes);

}  // namespace loom::plan
