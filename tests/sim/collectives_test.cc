// Collective costs against hand arithmetic written out here (alpha-beta: steps x latency +
// volume / (line rate x the profile's NCCL efficiency / flows sharing the busiest link)), and
// layout_groups against the Megatron rank order (BLOOM's t4p12d8 on 384 GPUs).
#include "simulator/collectives.h"

#include <gtest/gtest.h>

#include <set>

namespace loom::sim {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
constexpr double kMiB = 1024.0 * 1024.0;
constexpr double kRel = 1e-12;  // the model is closed-form: only rounding differs
using G = std::vector<int64_t>;

core::ClusterProfile profile(const std::string& name) {
  return core::load_cluster_profile(name).value();
}

CollectiveModel model(const std::string& name, int64_t gpus) {
  return CollectiveModel::create(profile(name), gpus).value();
}

core::Layout layout(int64_t tp, int64_t pp, int64_t dp) {
  core::Layout l;
  l.tp = tp;
  l.pp = pp;
  l.dp = dp;
  l.gpus = tp * pp * dp;
  return l;
}

std::vector<int64_t> iota(int64_t first, int64_t count, int64_t stride = 1) {
  std::vector<int64_t> v;
  for (int64_t i = 0; i < count; ++i) v.push_back(first + i * stride);
  return v;
}

TEST(LayoutGroups, BloomT4P12D8On384Gpus) {
  const core::Layout l = layout(4, 12, 8);
  const auto tp = layout_groups(l, GroupKind::kTensor);
  const auto dp = layout_groups(l, GroupKind::kData);
  const auto pp = layout_groups(l, GroupKind::kPipeline);
  ASSERT_EQ(tp.size(), 96u);
  ASSERT_EQ(dp.size(), 48u);
  ASSERT_EQ(pp.size(), 32u);
  for (size_t i = 0; i < tp.size(); ++i) EXPECT_EQ(tp[i], iota(4 * i, 4));  // consecutive
  // rank = tp + 4 * (dp + 8 * pp): a DP group strides by 4, a PP group by 32.
  EXPECT_EQ(dp[0], iota(0, 8, 4));
  EXPECT_EQ(dp[1], iota(1, 8, 4));
  EXPECT_EQ(dp[4], iota(32, 8, 4));
  EXPECT_EQ(pp[0], iota(0, 12, 32));
  EXPECT_EQ(pp[31], iota(31, 12, 32));
  for (const auto* groups : {&tp, &dp, &pp}) {
    std::set<int64_t> seen;
    for (const auto& g : *groups) seen.insert(g.begin(), g.end());
    EXPECT_EQ(seen.size(), 384u);  // every rank exactly once
  }
  for (const auto& g : dp) {  // agrees with core::rank_coords
    for (size_t i = 0; i < g.size(); ++i) {
      EXPECT_EQ(core::rank_coords(l, g[i]).dp, static_cast<int64_t>(i));
      EXPECT_EQ(core::rank_coords(l, g[i]).tp, core::rank_coords(l, g[0]).tp);
      EXPECT_EQ(core::rank_coords(l, g[i]).pp, core::rank_coords(l, g[0]).pp);
    }
  }
}

TEST(LayoutGroups, TpPpDpOrderAndDerivedDp) {
  core::Layout l = layout(2, 4, 2);
  l.rank_order = "tp-pp-dp";  // rank = tp + 2 * (pp + 4 * dp)
  EXPECT_EQ(layout_groups(l, GroupKind::kPipeline)[0], (std::vector<int64_t>{0, 2, 4, 6}));
  EXPECT_EQ(layout_groups(l, GroupKind::kData)[0], (std::vector<int64_t>{0, 8}));
  core::Layout derived = layout(2, 2, 0);
  derived.gpus = 16;  // dp = 16 / (2 * 2) = 4
  EXPECT_EQ(layout_groups(derived, GroupKind::kData).size(), 4u);
  EXPECT_EQ(layout_groups(derived, GroupKind::kData)[0], iota(0, 4, 2));
  EXPECT_TRUE(layout_groups(layout(0, 1, 1), GroupKind::kData).empty());
}

TEST(Collectives, RingAllReduceOf1GiBInsideADgxA100Node) {
  const double eff = profile("dgx-a100-80gb").intra_node.collective_efficiency;
  CollectiveModel m = model("dgx-a100-80gb", 8);
  const CommCost c = m.estimate(CollectiveKind::kAllReduce, iota(0, 8), kGiB).value();
  // 2(n-1)/n * S over 300 GB/s x efficiency per direction, plus 2(n-1) = 14 steps of 3 us.
  const double expected = 2.0 * 7 / 8 * kGiB / (300e9 * eff) + 14 * 3e-6;
  EXPECT_NEAR(c.time_s, expected, kRel * expected);
  EXPECT_EQ(c.algorithm, Algorithm::kRing);
  EXPECT_EQ(c.bottleneck, LinkClass::kIntraNode);
  EXPECT_EQ(c.nodes, 1);
  EXPECT_NEAR(c.bus_bandwidth_bytes_s, 2.0 * 7 / 8 * kGiB / expected, kRel * 300e9);
  EXPECT_NEAR(c.latency_s, 42e-6, 1e-15);
}

TEST(Collectives, AllGatherReduceScatterAndBroadcastInsideANode) {
  const double bw = 300e9 * profile("dgx-a100-80gb").intra_node.collective_efficiency;
  CollectiveModel m = model("dgx-a100-80gb", 8);
  const double s = 256 * kMiB;
  const double ag = 7.0 / 8 * s / bw + 7 * 3e-6;  // (n-1)/n * S, n-1 steps
  for (const auto kind : {CollectiveKind::kAllGather, CollectiveKind::kReduceScatter}) {
    const CommCost c = m.estimate(kind, iota(0, 8), s).value();
    EXPECT_NEAR(c.time_s, ag, kRel * ag) << to_string(kind);
    EXPECT_NEAR(c.bus_bandwidth_bytes_s, 7.0 / 8 * s / ag, kRel * 300e9);
  }
  const double bcast = s / bw + 7 * 3e-6;  // pipelined: S once, n-1 hops
  EXPECT_NEAR(m.estimate(CollectiveKind::kBroadcast, iota(0, 8), s)->time_s, bcast, kRel * bcast);
}

TEST(Collectives, TensorGroupsStayOnNvlink) {
  CollectiveModel m = model("dgx-a100-80gb", 64);
  const CommCost all =
      m.estimate_layout(layout(8, 1, 8), GroupKind::kTensor, CollectiveKind::kAllReduce, 256 * kMiB)
          .value();
  EXPECT_EQ(all.bottleneck, LinkClass::kIntraNode);
  EXPECT_EQ(all.nodes, 1);
  EXPECT_EQ(all.ranks, 8);
  // Eight TP groups on eight nodes do not disturb each other.
  const CommCost alone = m.estimate(CollectiveKind::kAllReduce, iota(8, 8), 256 * kMiB).value();
  EXPECT_DOUBLE_EQ(all.time_s, alone.time_s);
}

TEST(Collectives, DataGroupOf8NodesIsBoundByOneNicPerGpuOnDgxA100) {
  const double eff = profile("dgx-a100-80gb").inter_node.collective_efficiency;
  CollectiveModel m = model("dgx-a100-80gb", 64);
  const CommCost c =
      m.estimate_layout(layout(8, 1, 8), GroupKind::kData, CollectiveKind::kAllReduce, kGiB)
          .value();
  // Every GPU of a node is in a different DP group and sends through its own 25 GB/s rail NIC.
  // Ring: 14 steps, all across nodes (2(N-1) = 14), 5 us each.
  const double expected = 2.0 * 7 / 8 * kGiB / (25e9 * eff) + 14 * 5e-6;
  EXPECT_NEAR(c.time_s, expected, kRel * expected);
  EXPECT_EQ(c.bottleneck, LinkClass::kNetwork);
  EXPECT_EQ(c.algorithm, Algorithm::kRing);  // 1 GiB: tree's 2S / 0.9 loses
  EXPECT_EQ(c.nodes, 8);
}

TEST(Collectives, DataGroupOf8NodesGetsHalfANicOnJeanZay) {
  const double eff = profile("jean-zay-a100-80gb").inter_node.collective_efficiency;
  CollectiveModel m = model("jean-zay-a100-80gb", 64);
  const CommCost all = m.estimate_layout(layout(8, 1, 8), GroupKind::kData,
                                         CollectiveKind::kAllReduce, kGiB, Algorithm::kRing)
                           .value();
  // 4 Omni-Path NICs of 12.5 GB/s for 8 GPUs: two DP groups share each NIC.
  const double expected = 2.0 * 7 / 8 * kGiB / (12.5e9 * eff / 2) + 14 * 5e-6;
  EXPECT_NEAR(all.time_s, expected, kRel * expected);
  EXPECT_EQ(all.bottleneck, LinkClass::kNetwork);
  // The same group alone has its NIC to itself; the explicit concurrent query agrees.
  const std::vector<int64_t> group = iota(0, 8, 8);
  const CommCost alone = m.estimate(CollectiveKind::kAllReduce, group, kGiB).value();
  const double alone_expected = 2.0 * 7 / 8 * kGiB / (12.5e9 * eff) + 14 * 5e-6;
  EXPECT_NEAR(alone.time_s, alone_expected, kRel * alone_expected);
  const auto groups = layout_groups(layout(8, 1, 8), GroupKind::kData);
  const CommCost together =
      m.estimate_concurrent(CollectiveKind::kAllReduce, group, groups, kGiB).value();
  EXPECT_NEAR(together.time_s, expected, kRel * expected);
}

TEST(Collectives, BloomDataGroupsShareJeanZayNicsTwoRanksPerNode) {
  const core::ClusterProfile p = profile("jean-zay-a100-80gb");
  CollectiveModel m = model("jean-zay-a100-80gb", 384);
  const CommCost c = m.estimate_layout(layout(4, 12, 8), GroupKind::kData,
                                       CollectiveKind::kAllReduce, kGiB, Algorithm::kRing)
                         .value();
  // A DP group has GPUs t and t+4 on each of 4 nodes; each leaves the node in half the channels.
  // NIC 0 serves GPUs 0 and 1 (groups t=0 and t=1): 2 x 1/2 = one full ring flow per NIC.
  const double bw_s = 2.0 * 7 / 8 * kGiB / (12.5e9 * p.inter_node.collective_efficiency);
  const double lat_s = (14 - 6) * 3e-6 + 6 * 5e-6;  // 14 steps, 2(N-1) = 6 across nodes
  EXPECT_NEAR(c.time_s, bw_s + lat_s, kRel * (bw_s + lat_s));
  EXPECT_EQ(c.nodes, 4);
  EXPECT_EQ(c.bottleneck, LinkClass::kNetwork);
}

TEST(Collectives, PipelineSendRecvBetweenNodesAndInsideANode) {
  const core::ClusterProfile p = profile("dgx-a100-80gb");
  CollectiveModel m = model("dgx-a100-80gb", 16);
  const double s = 64 * kMiB;
  const CommCost across = m.estimate(CollectiveKind::kSendRecv, G{0, 8}, s).value();
  const double across_expected = s / (25e9 * p.inter_node.collective_efficiency) + 5e-6;
  EXPECT_NEAR(across.time_s, across_expected, kRel * across_expected);
  EXPECT_EQ(across.bottleneck, LinkClass::kNetwork);
  EXPECT_EQ(across.algorithm, Algorithm::kDirect);
  const CommCost inside = m.estimate(CollectiveKind::kSendRecv, G{0, 1}, s).value();
  const double inside_expected = s / (300e9 * p.intra_node.collective_efficiency) + 3e-6;
  EXPECT_NEAR(inside.time_s, inside_expected, kRel * inside_expected);
  EXPECT_EQ(inside.bottleneck, LinkClass::kIntraNode);
  // t8p2: all 8 GPUs of node 0 send to node 1 at once, each on its own rail.
  const CommCost stage =
      m.estimate_layout(layout(8, 2, 1), GroupKind::kPipeline, CollectiveKind::kSendRecv, s)
          .value();
  EXPECT_NEAR(stage.time_s, across_expected, kRel * across_expected);
  // On Jean Zay two GPUs share each NIC.
  const double jz_eff = profile("jean-zay-a100-80gb").inter_node.collective_efficiency;
  CollectiveModel jz = model("jean-zay-a100-80gb", 16);
  const CommCost jz_stage =
      jz.estimate_layout(layout(8, 2, 1), GroupKind::kPipeline, CollectiveKind::kSendRecv, s)
          .value();
  const double jz_expected = s / (12.5e9 * jz_eff / 2) + 5e-6;
  EXPECT_NEAR(jz_stage.time_s, jz_expected, kRel * jz_expected);
}

TEST(Collectives, HierarchicalAllReduceOfTp1Dp16OnTwoNodes) {
  const core::ClusterProfile p = profile("dgx-a100-80gb");
  const double nvlink = 300e9 * p.intra_node.collective_efficiency;
  const double nic = 25e9 * p.inter_node.collective_efficiency;
  CollectiveModel m = model("dgx-a100-80gb", 16);
  const CommCost h = m.estimate_layout(layout(1, 1, 16), GroupKind::kData,
                                       CollectiveKind::kAllReduce, kGiB, Algorithm::kHierarchical)
                         .value();
  // Reduce-scatter + all-gather over 8 GPUs on NVLink: 2 x 7/8 S; all-reduce of the S/8 shard
  // across 2 nodes by each GPU on its own NIC: 2 x 1/2 x S/8.
  const double bw_s = 2 * 7.0 / 8 * kGiB / nvlink + 2 * 0.5 * kGiB / 8 / nic;
  const double lat_s = 2 * 7 * 3e-6 + 2 * 1 * 5e-6;
  EXPECT_NEAR(h.time_s, bw_s + lat_s, kRel * (bw_s + lat_s));
  EXPECT_EQ(h.algorithm, Algorithm::kHierarchical);
  EXPECT_EQ(h.bottleneck, LinkClass::kIntraNode);  // ~8.1 ms of NVLink vs ~5.6 ms of network
  // The ring overlaps NVLink and network: each GPU sends 1/8 of its ring volume through its NIC
  // and 7/8 over NVLink; the busier of the two bounds it, and it beats the phased version.
  const CommCost ring = m.estimate(CollectiveKind::kAllReduce, iota(0, 16), kGiB).value();
  const double ring_bw_s = 2.0 * 15 / 16 * kGiB * std::max(1.0 / 8 / nic, 7.0 / 8 / nvlink);
  const double ring_lat_s = (30 - 2) * 3e-6 + 2 * 5e-6;
  EXPECT_NEAR(ring.time_s, ring_bw_s + ring_lat_s, kRel * (ring_bw_s + ring_lat_s));
  EXPECT_EQ(ring.algorithm, Algorithm::kRing);
  EXPECT_LT(ring.time_s, h.time_s);
}

TEST(Collectives, TreeWinsSmallAllReducesAcrossManyNodes) {
  const double nic = 25e9 * profile("dgx-a100-80gb").inter_node.collective_efficiency;
  CollectiveModel m = model("dgx-a100-80gb", 512);
  const core::Layout l = layout(8, 1, 64);  // DP groups of 64 nodes, one GPU per node
  const CommCost small =
      m.estimate_layout(l, GroupKind::kData, CollectiveKind::kAllReduce, 1024).value();
  EXPECT_EQ(small.algorithm, Algorithm::kTree);
  // Tree: 2S / (0.9 x busbw), latency 2 x log2(64) = 12 network steps.
  const double tree = 2 * 1024 / (0.9 * nic) + 2 * 6 * 5e-6;
  EXPECT_NEAR(small.time_s, tree, kRel * tree);
  const CommCost ring =
      m.estimate_layout(l, GroupKind::kData, CollectiveKind::kAllReduce, 1024, Algorithm::kRing)
          .value();
  const double ring_expected = 2.0 * 63 / 64 * 1024 / nic + 2 * 63 * 5e-6;
  EXPECT_NEAR(ring.time_s, ring_expected, kRel * ring_expected);
  EXPECT_EQ(m.estimate_layout(l, GroupKind::kData, CollectiveKind::kAllReduce, kGiB)->algorithm,
            Algorithm::kRing);
}

TEST(Collectives, SingleGpuAndSingleNodeProfilesCostNothingForOneRank) {
  for (const char* name : {"h200-1gpu", "local-cpu"}) {
    CollectiveModel m = model(name, 1);
    const CommCost c = m.estimate(CollectiveKind::kAllReduce, G{0}, kGiB).value();
    EXPECT_EQ(c.time_s, 0) << name;
    EXPECT_EQ(c.algorithm, Algorithm::kNone);
    EXPECT_EQ(c.bottleneck, LinkClass::kNone);
    const CommCost l =
        m.estimate_layout(layout(1, 1, 1), GroupKind::kData, CollectiveKind::kAllReduce, kGiB)
            .value();
    EXPECT_EQ(l.time_s, 0) << name;
  }
  EXPECT_FALSE(CollectiveModel::create(profile("h200-1gpu"), 2).ok());
}

TEST(Collectives, BadQueriesAreErrors) {
  CollectiveModel m = model("dgx-a100-80gb", 16);
  const auto outside = m.estimate(CollectiveKind::kAllReduce, G{0, 16}, kGiB);
  ASSERT_FALSE(outside.ok());
  EXPECT_NE(outside.status().message().find("rank 16"), std::string::npos);
  EXPECT_FALSE(m.estimate(CollectiveKind::kAllReduce, G{3, 3}, kGiB).ok());
  EXPECT_FALSE(m.estimate(CollectiveKind::kAllReduce, G{}, kGiB).ok());
  EXPECT_FALSE(m.estimate(CollectiveKind::kAllReduce, G{0, 1}, -1).ok());
  EXPECT_FALSE(m.estimate(CollectiveKind::kAllGather, G{0, 1}, kGiB, Algorithm::kTree).ok());
  EXPECT_FALSE(m.estimate(CollectiveKind::kSendRecv, G{0, 1}, kGiB, Algorithm::kRing).ok());
  // Three ranks on node 0, one on node 1: no hierarchical split.
  EXPECT_FALSE(
      m.estimate(CollectiveKind::kAllReduce, G{0, 1, 2, 8}, kGiB, Algorithm::kHierarchical).ok());
  EXPECT_TRUE(m.estimate(CollectiveKind::kAllReduce, G{0, 1, 2, 8}, kGiB).ok());
  const auto too_big =
      m.estimate_layout(layout(8, 1, 4), GroupKind::kData, CollectiveKind::kAllReduce, kGiB);
  EXPECT_EQ(too_big.status().code(), core::ErrorCode::kInfeasible);
}

TEST(Collectives, GroupsOfTheSameShapeShareOneCacheEntry) {
  CollectiveModel m = model("dgx-a100-80gb", 32);
  const CommCost a = m.estimate(CollectiveKind::kAllReduce, G{0, 8}, kGiB).value();
  const CommCost b = m.estimate(CollectiveKind::kAllReduce, G{16, 24}, kGiB).value();
  EXPECT_EQ(m.cache_entries(), 1u);  // nodes 0,1 and 2,3: the same shape
  EXPECT_DOUBLE_EQ(a.time_s, b.time_s);
  // Node order does not matter either, and a repeated layout query hits its cache.
  EXPECT_DOUBLE_EQ(m.estimate(CollectiveKind::kAllReduce, G{24, 16}, kGiB)->time_s, a.time_s);
  const core::Layout l = layout(8, 1, 4);
  const double t1 =
      m.estimate_layout(l, GroupKind::kData, CollectiveKind::kAllReduce, kGiB)->time_s;
  const size_t entries = m.cache_entries();
  EXPECT_DOUBLE_EQ(m.estimate_layout(l, GroupKind::kData, CollectiveKind::kAllReduce, kGiB)->time_s,
                   t1);
  EXPECT_EQ(m.cache_entries(), entries);
}

}  // namespace
}  // namespace loom::sim
