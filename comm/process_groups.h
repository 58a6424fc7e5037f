// The tensor-, pipeline- and data-parallel communicators of one rank, split from the world
// communicator with the grouping of core::rank_coords (Megatron's rank order, TP innermost), the
// same grouping as sim::layout_groups, so the trainer's groups are the simulator's.
// Tested in tests/comm/process_groups_test.cc against layout_groups.
#pragma once

#include <memory>

#include "comm/communicator.h"
#include "core/layout.h"

namespace loom::comm {

struct ProcessGroups {
  core::RankCoords coords;           // this rank's position in the grid
  std::unique_ptr<Communicator> tp;  // named "tp[0,1]" after the world ranks it holds
  std::unique_ptr<Communicator> pp;  // "pp[...]"
  std::unique_ptr<Communicator> dp;  // "dp[...]"
};

// Collective over `world`: every rank must call it with the same resolved layout
// (tp * pp * dp == world.size()). Ranks inside a group are ordered by their coordinate.
core::Result<ProcessGroups> make_process_groups(Communicator& world, const core::Layout& layout);

}  // namespace loom::comm
