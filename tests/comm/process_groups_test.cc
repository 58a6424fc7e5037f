// TP/PP/DP communicators split from a thread world hold exactly the ranks sim::layout_groups
// gives for the layout (Megatron's order, TP innermost), in coordinate order.
#include "comm/process_groups.h"

#include <gtest/gtest.h>

#include <mutex>

#include "simulator/collectives.h"
#include "tests/comm/comm_test_util.h"

namespace loom::comm {
namespace {

// The ranks of `comm` as world ranks, gathered through the group itself.
std::vector<int64_t> members(Communicator& comm, int world_rank) {
  const double mine = world_rank;
  std::vector<double> all(comm.size());
  EXPECT_TRUE(comm.all_gather(&mine, all.data(), 1).ok());
  return std::vector<int64_t>(all.begin(), all.end());
}

// The group of `kind` that contains `rank`.
std::vector<int64_t> expected_group(const core::Layout& l, sim::GroupKind kind, int64_t rank) {
  for (const auto& g : sim::layout_groups(l, kind)) {
    if (std::find(g.begin(), g.end(), rank) != g.end()) return g;
  }
  return {};
}

void check_layout(const core::Layout& l) {
  const int n = static_cast<int>(l.tp * l.pp * l.dp);
  std::mutex mu;
  test::run_thread_world(n, [&](int r, Communicator& world) {
    auto groups = make_process_groups(world, l);
    ASSERT_TRUE(groups.ok()) << groups.status().message();
    const std::vector<int64_t> tp = members(*groups->tp, r);
    const std::vector<int64_t> pp = members(*groups->pp, r);
    const std::vector<int64_t> dp = members(*groups->dp, r);
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(tp, expected_group(l, sim::GroupKind::kTensor, r)) << "rank " << r;
    EXPECT_EQ(pp, expected_group(l, sim::GroupKind::kPipeline, r)) << "rank " << r;
    EXPECT_EQ(dp, expected_group(l, sim::GroupKind::kData, r)) << "rank " << r;
    const core::RankCoords c = core::rank_coords(l, r);
    EXPECT_EQ(groups->tp->rank(), c.tp);
    EXPECT_EQ(groups->pp->rank(), c.pp);
    EXPECT_EQ(groups->dp->rank(), c.dp);
    EXPECT_EQ(groups->coords.tp, c.tp);
    EXPECT_EQ(groups->tp->name(), fmt::format("tp[{}]", fmt::join(tp, ",")));
    EXPECT_EQ(groups->dp->name(), fmt::format("dp[{}]", fmt::join(dp, ",")));
  });
}

core::Layout make_layout(int64_t tp, int64_t pp, int64_t dp, const char* order = "tp-dp-pp") {
  core::Layout l;
  l.tp = tp;
  l.pp = pp;
  l.dp = dp;
  l.gpus = tp * pp * dp;
  l.rank_order = order;
  return l;
}

TEST(ProcessGroups, Tp2Dp2MatchesLayoutGroups) {
  // tp[0,1] tp[2,3]; dp[0,2] dp[1,3]; pp groups of one rank.
  ASSERT_EQ(sim::layout_groups(make_layout(2, 1, 2), sim::GroupKind::kData),
            (std::vector<std::vector<int64_t>>{{0, 2}, {1, 3}}));
  check_layout(make_layout(2, 1, 2));
}

TEST(ProcessGroups, Pp2Tp2MatchesLayoutGroups) {
  // tp[0,1] tp[2,3]; pp[0,2] pp[1,3]; dp groups of one rank.
  ASSERT_EQ(sim::layout_groups(make_layout(2, 2, 1), sim::GroupKind::kPipeline),
            (std::vector<std::vector<int64_t>>{{0, 2}, {1, 3}}));
  check_layout(make_layout(2, 2, 1));
}

TEST(ProcessGroups, Tp2Pp2Dp2BothRankOrders) {
  check_layout(make_layout(2, 2, 2, "tp-dp-pp"));
  check_layout(make_layout(2, 2, 2, "tp-pp-dp"));
}

TEST(ProcessGroups, LayoutThatDoesNotCoverTheWorldIsAnError) {
  auto world = make_thread_world(4);
  auto groups = make_process_groups(*world[0], make_layout(2, 1, 1));
  ASSERT_FALSE(groups.ok());
  EXPECT_EQ(groups.status().message(),
            "process groups: layout tp 2 x pp 1 x dp 1 does not cover the 4 ranks of group "
            "'world'");
}

}  // namespace
}  // namespace loom::comm
