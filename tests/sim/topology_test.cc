// ClusterTopology against the profiles by hand: vertex and edge counts, the rail mapping of GPUs
// to NICs, route shapes, latencies and bandwidths, routes that follow real graph edges (also on
// a partial last node), and the errors for clusters that cannot hold the GPUs asked for.
#include "simulator/topology.h"

#include <gtest/gtest.h>

#include <map>

namespace loom::sim {
namespace {

core::ClusterProfile profile(const std::string& name) {
  return core::load_cluster_profile(name).value();
}

ClusterTopology topology(const std::string& name, int64_t gpus) {
  return ClusterTopology::build(profile(name), gpus).value();
}

TEST(ClusterTopology, DgxA100TwoNodesHasGpusHubsNicsAndOneFabric) {
  const ClusterTopology t = topology("dgx-a100-80gb", 16);
  EXPECT_EQ(t.num_nodes(), 2);
  std::map<VertexKind, int> kinds;
  for (const auto v : boost::make_iterator_range(boost::vertices(t.graph()))) {
    ++kinds[t.graph()[v].kind];
  }
  EXPECT_EQ(kinds[VertexKind::kGpu], 16);
  EXPECT_EQ(kinds[VertexKind::kHub], 2);
  EXPECT_EQ(kinds[VertexKind::kNic], 16);  // 8 per node
  EXPECT_EQ(kinds[VertexKind::kFabric], 1);
  // GPU-hub (16) + GPU-NIC (16) + NIC-fabric (16).
  EXPECT_EQ(boost::num_edges(t.graph()), 48u);
  EXPECT_EQ(t.num_directed_links(), 96);
}

TEST(ClusterTopology, RailMappingSharesNicsOnJeanZay) {
  const ClusterTopology jz = topology("jean-zay-a100-80gb", 16);  // 4 NICs for 8 GPUs
  const int64_t expected[8] = {0, 0, 1, 1, 2, 2, 3, 3};
  for (int64_t g = 0; g < 16; ++g) EXPECT_EQ(jz.nic_of(g), expected[g % 8]) << "gpu " << g;
  const ClusterTopology dgx = topology("dgx-a100-80gb", 16);  // one NIC per GPU
  for (int64_t g = 0; g < 16; ++g) EXPECT_EQ(dgx.nic_of(g), g % 8);
}

TEST(ClusterTopology, RouteInsideANodeUsesOnlyTheIntraNodeFabric) {
  const core::ClusterProfile p = profile("dgx-a100-80gb");
  const ClusterTopology t = topology("dgx-a100-80gb", 16);
  const Route r = t.route(0, 5);
  ASSERT_EQ(r.count, 2);
  // GPU 0 up to the NVSwitch (edge 0, direction 0), down to GPU 5 (edge 5, direction 1).
  EXPECT_EQ(r.links[0], 0);
  EXPECT_EQ(r.links[1], 2 * 5 + 1);
  for (const DirectedLink l : r) {
    EXPECT_EQ(t.link(l).link_class, LinkClass::kIntraNode);
    EXPECT_DOUBLE_EQ(t.link(l).bandwidth_bytes_s(),
                     300e9 * p.intra_node.collective_efficiency);  // 300 GB/s per direction
  }
  EXPECT_DOUBLE_EQ(r.latency_s, 3e-6);  // intra_node.latency_us
  EXPECT_DOUBLE_EQ(t.intra_node_latency_s(), 3e-6);
}

TEST(ClusterTopology, RouteAcrossNodesUsesRailNicsAndTheFabric) {
  const core::ClusterProfile p = profile("dgx-a100-80gb");
  const ClusterTopology t = topology("dgx-a100-80gb", 16);
  const Route r = t.route(3, 11);  // GPU 3 of node 0 -> GPU 3 of node 1
  ASSERT_EQ(r.count, 4);
  // Edge ids: GPU-hub 0..15, GPU-NIC 16..31, NIC-fabric 32..47 (node * 8 + NIC).
  EXPECT_EQ(r.links[0], 2 * (16 + 3));          // GPU 3 -> NIC 3, up
  EXPECT_EQ(r.links[1], 2 * (32 + 3));          // NIC 3 -> fabric
  EXPECT_EQ(r.links[2], 2 * (32 + 8 + 3) + 1);  // fabric -> NIC 3 of node 1
  EXPECT_EQ(r.links[3], 2 * (16 + 11) + 1);     // NIC -> GPU 11
  EXPECT_EQ(t.link(r.links[0]).link_class, LinkClass::kNicAttach);
  EXPECT_EQ(t.link(r.links[1]).link_class, LinkClass::kNetwork);
  // HDR: 200 Gb/s = 25 GB/s per direction, derated by the profile's NCCL efficiency.
  EXPECT_DOUBLE_EQ(t.link(r.links[1]).bandwidth_bytes_s(),
                   25e9 * p.inter_node.collective_efficiency);
  EXPECT_DOUBLE_EQ(r.latency_s, 5e-6);  // inter_node.latency_us
}

TEST(ClusterTopology, GpusSharingANicStillTalkOverNvlink) {
  // GPUs 0 and 1 of a Jean Zay node share NIC 0: GPU -> NIC -> GPU is as short in hops as
  // GPU -> NVSwitch -> GPU, but NCCL (and the route cost) prefers NVLink.
  const ClusterTopology t = topology("jean-zay-a100-80gb", 16);
  const Route r = t.route(0, 1);
  ASSERT_EQ(r.count, 2);
  for (const DirectedLink l : r) EXPECT_EQ(t.link(l).link_class, LinkClass::kIntraNode);
  // Across nodes, GPUs 0 and 1 leave through the same NIC port.
  EXPECT_EQ(t.route(0, 8).links[1], t.route(1, 9).links[1]);
  EXPECT_NE(t.route(0, 8).links[1], t.route(2, 10).links[1]);
}

// Walks a route over the real graph: each directed link must start where the last one ended.
void expect_route_follows_graph(const ClusterTopology& t, int64_t src, int64_t dst) {
  std::map<int64_t, boost::graph_traits<TopoGraph>::edge_descriptor> by_id;
  for (const auto e : boost::make_iterator_range(boost::edges(t.graph()))) {
    by_id[t.graph()[e].id] = e;
  }
  const auto& g = t.graph();
  size_t at = static_cast<size_t>(src);  // GPU g is vertex g
  for (const DirectedLink l : t.route(src, dst)) {
    const auto e = by_id.at(l / 2);
    const size_t a = boost::source(e, g), b = boost::target(e, g);
    ASSERT_TRUE(at == a || at == b) << "link " << l << " does not start at vertex " << at;
    at = at == a ? b : a;
  }
  EXPECT_EQ(at, static_cast<size_t>(dst)) << src << " -> " << dst;
}

TEST(ClusterTopology, RoutesFollowGraphEdgesAlsoOnAPartialLastNode) {
  const ClusterTopology t = topology("jean-zay-a100-80gb", 20);  // nodes of 8, 8 and 4 GPUs
  EXPECT_EQ(t.num_nodes(), 3);
  for (const auto& [src, dst] : std::vector<std::pair<int64_t, int64_t>>{
           {0, 7}, {7, 0}, {3, 12}, {12, 3}, {17, 7}, {7, 19}, {16, 19}, {9, 18}}) {
    expect_route_follows_graph(t, src, dst);
  }
}

TEST(ClusterTopology, SingleGpuAndSingleNodeProfilesBuild) {
  const ClusterTopology h200 = topology("h200-1gpu", 1);
  EXPECT_EQ(h200.num_nodes(), 1);
  EXPECT_EQ(boost::num_vertices(h200.graph()), 2u);  // the GPU and its node's hub
  EXPECT_EQ(boost::num_edges(h200.graph()), 1u);
  EXPECT_EQ(h200.inter_node_latency_s(), 0);
  const ClusterTopology cpu = topology("local-cpu", 1);
  EXPECT_EQ(cpu.num_gpus(), 1);
  // One node of a multi-GPU profile needs no network vertices' routes across nodes.
  const ClusterTopology one_node = topology("dgx-h100-80gb", 8);
  EXPECT_EQ(one_node.num_nodes(), 1);
  EXPECT_EQ(one_node.route(7, 2).count, 2);
}

TEST(ClusterTopology, ClustersThatCannotHoldTheGpusAreErrors) {
  const auto no_network = ClusterTopology::build(profile("h200-1gpu"), 2);
  ASSERT_FALSE(no_network.ok());
  EXPECT_EQ(no_network.status().code(), core::ErrorCode::kInfeasible);
  EXPECT_NE(no_network.status().message().find("nics_per_node"), std::string::npos);
  const auto too_many = ClusterTopology::build(profile("jean-zay-a100-80gb"), 53 * 8);
  ASSERT_FALSE(too_many.ok());
  EXPECT_NE(too_many.status().message().find("max_nodes = 52"), std::string::npos);
  const auto none = ClusterTopology::build(profile("dgx-a100-80gb"), 0);
  EXPECT_EQ(none.status().code(), core::ErrorCode::kInvalidArgument);

  const ClusterTopology t = topology("dgx-a100-80gb", 16);
  EXPECT_TRUE(t.check_gpu(15).ok());
  EXPECT_NE(t.check_gpu(16).message().find("rank 16 is outside"), std::string::npos);
  EXPECT_FALSE(t.check_gpu(-1).ok());
}

}  // namespace
}  // namespace loom::sim
