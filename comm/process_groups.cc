// Splits the world communicator into TP, PP and DP groups (process_groups.h).
// Tested in tests/comm/process_groups_test.cc.
#include "comm/process_groups.h"

#include <fmt/ranges.h>

#include <string>
#include <utility>
#include <vector>

namespace loom::comm {
namespace {

enum class Axis { kTp, kPp, kDp };

// The group of `rank` along `axis`: every rank whose other two coordinates equal rank's.
// Returns its color (the world rank of its first member, unique per group) and its name.
std::pair<int, std::string> group_of(const core::Layout& l, int64_t rank, Axis axis,
                                     int64_t ranks) {
  const core::RankCoords me = core::rank_coords(l, rank);
  std::vector<int64_t> members;
  for (int64_t r = 0; r < ranks; ++r) {
    const core::RankCoords c = core::rank_coords(l, r);
    const bool same = axis == Axis::kTp   ? (c.dp == me.dp && c.pp == me.pp)
                      : axis == Axis::kPp ? (c.tp == me.tp && c.dp == me.dp)
                                          : (c.tp == me.tp && c.pp == me.pp);
    if (same) members.push_back(r);
  }
  const char* prefix = axis == Axis::kTp ? "tp" : axis == Axis::kPp ? "pp" : "dp";
  return {static_cast<int>(members.front()),
          fmt::format("{}[{}]", prefix, fmt::join(members, ","))};
}

}  // namespace

core::Result<ProcessGroups> make_process_groups(Communicator& world, const core::Layout& layout) {
  core::Layout l = layout;
  if (l.dp == 0 && l.tp > 0 && l.pp > 0) l.dp = l.gpus / (l.tp * l.pp);
  if (l.tp < 1 || l.pp < 1 || l.dp < 1 || l.tp * l.pp * l.dp != world.size()) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "process groups: layout tp {} x pp {} x dp {} does not cover the {} ranks "
                       "of group '{}'",
                       l.tp, l.pp, l.dp, world.size(), world.name());
  }
  ProcessGroups groups;
  groups.coords = core::rank_coords(l, world.rank());
  const int64_t ranks = world.size();
  const auto [tp_color, tp_name] = group_of(l, world.rank(), Axis::kTp, ranks);
  LOOM_ASSIGN_OR_RETURN(groups.tp,
                        world.split(tp_color, static_cast<int>(groups.coords.tp), tp_name));
  const auto [pp_color, pp_name] = group_of(l, world.rank(), Axis::kPp, ranks);
  LOOM_ASSIGN_OR_RETURN(groups.pp,
                        world.split(pp_color, static_cast<int>(groups.coords.pp), pp_name));
  const auto [dp_color, dp_name] = group_of(l, world.rank(), Axis::kDp, ranks);
  LOOM_ASSIGN_OR_RETURN(groups.dp,
                        world.split(dp_color, static_cast<int>(groups.coords.dp), dp_name));
  return groups;
}

}  // namespace loom::comm
