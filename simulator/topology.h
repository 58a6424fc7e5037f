// ClusterTopology: the cluster of a profile as a Boost.Graph graph of GPUs, one intra-node hub
// per node (NVSwitch, or shared memory), the node's NICs and one network fabric, with per-link
// bandwidth and latency from the profile. collectives.h routes every flow of a collective over it
// and counts the flows sharing each link. Tested in tests/sim/topology_test.cc.
#pragma once

#include <array>
#include <boost/graph/adjacency_list.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "core/cluster_profile.h"
#include "core/status.h"

namespace loom::sim {

// What a link is made of; a collective reports the class of the link that bounds it.
enum class LinkClass : uint8_t {
  kNone,       // no link (a single-rank group moves nothing)
  kIntraNode,  // GPU <-> intra-node hub: the GPU's NVLink/NVSwitch port (or shared memory)
  kNicAttach,  // GPU <-> its rail NIC (PCIe), sized to the NIC's line rate
  kNetwork,    // NIC <-> fabric: the NIC's port on the network
};
const char* to_string(LinkClass c);

enum class VertexKind : uint8_t { kGpu, kHub, kNic, kFabric };

struct TopoVertex {
  VertexKind kind = VertexKind::kGpu;
  int64_t node = -1;  // -1 for the fabric
  int64_t index = 0;  // global GPU id, NIC index within its node, else 0
};

struct TopoLink {
  LinkClass link_class = LinkClass::kNone;
  int64_t id = 0;                // dense edge id, see ClusterTopology::build
  double line_rate_bytes_s = 0;  // per direction
  double efficiency = 1.0;       // NCCL bus bandwidth / line rate (profile collective_efficiency)
  double latency_s = 0;
  // Routing preference, as NCCL ranks path types (topo.h: NVL < PIX/PXB/PHB < NET): an
  // intra-node hop costs 1, a PCIe or network hop 2, so GPUs of a node never talk through a NIC
  // they happen to share.
  int route_cost = 1;
  double bandwidth_bytes_s() const { return line_rate_bytes_s * efficiency; }
};

using TopoGraph =
    boost::adjacency_list<boost::vecS, boost::vecS, boost::undirectedS, TopoVertex, TopoLink>;

// One direction of one link: 2 * edge id, + 1 for the direction from the fabric side towards
// the GPU (edges are stored GPU-side first). Links are full duplex: directions do not share.
using DirectedLink = int64_t;

// The directed links a message from one GPU to another crosses, in order.
struct Route {
  static constexpr int kMaxLinks = 4;  // GPU -> NIC -> fabric -> NIC -> GPU
  std::array<DirectedLink, kMaxLinks> links{};
  int count = 0;
  double latency_s = 0;  // sum of the links' latencies
  const DirectedLink* begin() const { return links.data(); }
  const DirectedLink* end() const { return links.data() + count; }
};

// Rank r runs on GPU r, and GPU g on node g / gpus_per_node (launchers fill nodes in order).
// Every GPU uses one NIC of its node, rail style: local GPU i -> NIC i * nics / gpus_per_node.
// The fabric is one vertex: a non-blocking fat tree (full bisection), so only NIC ports and
// intra-node ports can be bottlenecks. Routes are breadth-first shortest paths, computed once
// from the GPUs of node 0 and node 1 and translated to other nodes (all nodes are identical).
class ClusterTopology {
 public:
  // Builds the graph for `num_gpus` GPUs (nodes = ceil(num_gpus / gpus_per_node)). Fails when
  // the profile has no network but more than one node is needed, or max_nodes is exceeded.
  static core::Result<ClusterTopology> build(const core::ClusterProfile& profile, int64_t num_gpus);

  const TopoGraph& graph() const { return graph_; }
  const std::string& profile_name() const { return profile_name_; }
  int64_t num_gpus() const { return num_gpus_; }
  int64_t num_nodes() const { return num_nodes_; }
  int64_t gpus_per_node() const { return gpus_per_node_; }
  int64_t nics_per_node() const { return nics_per_node_; }
  int64_t node_of(int64_t gpu) const { return gpu / gpus_per_node_; }
  int64_t nic_of(int64_t gpu) const {  // NIC index within the GPU's node
    return (gpu % gpus_per_node_) * nics_per_node_ / gpus_per_node_;
  }

  // kInvalidArgument unless 0 <= gpu < num_gpus().
  core::Status check_gpu(int64_t gpu) const;
  // Route between two distinct valid GPUs (checked by the caller: this is the hot path).
  Route route(int64_t src_gpu, int64_t dst_gpu) const;

  int64_t num_directed_links() const { return 2 * static_cast<int64_t>(links_.size()); }
  const TopoLink& link(DirectedLink l) const { return links_[l / 2]; }
  // Route latency between two GPUs of one node / of two nodes (0 when there is no such pair).
  double intra_node_latency_s() const { return intra_node_latency_s_; }
  double inter_node_latency_s() const { return inter_node_latency_s_; }

 private:
  // A hop of a route between GPUs of node 0 (and node 1), in a form that can be moved to any
  // pair of nodes: the link class, which of the two nodes (slot), the GPU or NIC index in it.
  struct CanonicalHop {
    LinkClass link_class = LinkClass::kNone;
    uint8_t slot = 0;
    uint8_t towards_gpu = 0;
    int32_t local = 0;
  };
  struct CanonicalRoute {
    std::array<CanonicalHop, Route::kMaxLinks> hops{};
    int count = 0;
    double latency_s = 0;
  };

  ClusterTopology() = default;
  core::Status compute_canonical_routes(const core::ClusterProfile& profile);
  int64_t edge_id(LinkClass c, int64_t node, int64_t local) const;

  TopoGraph graph_;
  std::vector<TopoLink> links_;  // by edge id, copied out of the graph for the hot path
  std::string profile_name_;
  int64_t num_gpus_ = 0;
  int64_t num_nodes_ = 0;
  int64_t gpus_per_node_ = 1;
  int64_t nics_per_node_ = 0;
  double intra_node_latency_s_ = 0;
  double inter_node_latency_s_ = 0;
  // [src_local * gpus_per_node + dst_local]: same node, and src on node 0 -> dst on node 1.
  std::vector<CanonicalRoute> same_node_routes_;
  std::vector<CanonicalRoute> cross_node_routes_;
};

}  // namespace loom::sim
