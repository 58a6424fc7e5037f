// ClusterTopology: see topology.h. The graph is built in a fixed order (GPUs, hubs, NICs, fabric;
// then GPU-hub, GPU-NIC and NIC-fabric edges) so vertex and edge ids are arithmetic: route()
// moves a route found by Dijkstra on a two-node reference graph to any pair of nodes in O(1).
#include "simulator/topology.h"

#include <algorithm>
#include <boost/graph/dijkstra_shortest_paths.hpp>

#include "core/units.h"

namespace loom::sim {

using core::ErrorCode;
using core::Result;
using core::Status;

const char* to_string(LinkClass c) {
  switch (c) {
    case LinkClass::kNone:
      return "none";
    case LinkClass::kIntraNode:
      return "intra-node";
    case LinkClass::kNicAttach:
      return "gpu-nic";
    case LinkClass::kNetwork:
      return "network";
  }
  return "?";
}

namespace {

using Vertex = boost::graph_traits<TopoGraph>::vertex_descriptor;

// What the graph needs from the profile, as link templates in bytes/s and seconds.
struct FabricParams {
  int64_t gpus_per_node = 1;
  int64_t nics_per_node = 0;
  TopoLink intra, attach, network;
};

FabricParams fabric_params(const core::ClusterProfile& p) {
  FabricParams f;
  f.gpus_per_node = p.gpus_per_node;
  f.nics_per_node = p.inter_node.nics_per_node;
  // Per GPU and direction. The latency is split over the two hops GPU -> hub -> GPU so that a
  // route inside a node adds up to the profile's intra_node.latency_us.
  f.intra = {LinkClass::kIntraNode,
             0,
             p.intra_node.bandwidth_gb_s * core::kGB,
             p.intra_node.collective_efficiency,
             p.intra_node.latency_us * 1e-6 / 2,
             1};
  const double nic_bytes_s = p.inter_node.nic_bandwidth_gbit_s * 1e9 / 8;
  // PCIe between a GPU and its NIC: sized to the NIC (Gen4 x16, ~25 GB/s per direction, matches
  // one HDR port) and not derated, so the NIC's network port is what binds. No latency of its
  // own: inter_node.latency_us is the whole GPU-to-GPU figure, split over the two NIC ports.
  f.attach = {LinkClass::kNicAttach, 0, nic_bytes_s, 1.0, 0.0, 2};
  f.network = {LinkClass::kNetwork,
               0,
               nic_bytes_s,
               p.inter_node.collective_efficiency,
               p.inter_node.latency_us * 1e-6 / 2,
               2};
  return f;
}

TopoGraph make_graph(const FabricParams& f, int64_t num_gpus) {
  const int64_t gpn = f.gpus_per_node, nics = f.nics_per_node;
  const int64_t nodes = core::ceil_div(num_gpus, gpn);
  TopoGraph g;
  for (int64_t gpu = 0; gpu < num_gpus; ++gpu) {
    boost::add_vertex(TopoVertex{VertexKind::kGpu, gpu / gpn, gpu}, g);
  }
  for (int64_t v = 0; v < nodes; ++v) boost::add_vertex(TopoVertex{VertexKind::kHub, v, 0}, g);
  for (int64_t v = 0; v < nodes; ++v) {
    for (int64_t j = 0; j < nics; ++j) boost::add_vertex(TopoVertex{VertexKind::kNic, v, j}, g);
  }
  if (nics > 0) boost::add_vertex(TopoVertex{VertexKind::kFabric, -1, 0}, g);

  const auto hub = [&](int64_t v) { return static_cast<Vertex>(num_gpus + v); };
  const auto nic = [&](int64_t v, int64_t j) {
    return static_cast<Vertex>(num_gpus + nodes + v * nics + j);
  };
  const Vertex fabric = static_cast<Vertex>(num_gpus + nodes + nodes * nics);
  int64_t id = 0;
  const auto add = [&](Vertex a, Vertex b, TopoLink link) {  // GPU side first
    link.id = id++;
    boost::add_edge(a, b, link, g);
  };
  for (int64_t gpu = 0; gpu < num_gpus; ++gpu) add(gpu, hub(gpu / gpn), f.intra);
  if (nics > 0) {
    for (int64_t gpu = 0; gpu < num_gpus; ++gpu) {
      add(gpu, nic(gpu / gpn, (gpu % gpn) * nics / gpn), f.attach);
    }
  }
  for (int64_t v = 0; v < nodes; ++v) {
    for (int64_t j = 0; j < nics; ++j) add(nic(v, j), fabric, f.network);
  }
  return g;
}

int tier(VertexKind k) {  // distance from the GPUs: a hop to a lower tier goes towards a GPU
  switch (k) {
    case VertexKind::kGpu:
      return 0;
    case VertexKind::kHub:
    case VertexKind::kNic:
      return 1;
    case VertexKind::kFabric:
      return 2;
  }
  return 0;
}

}  // namespace

int64_t ClusterTopology::edge_id(LinkClass c, int64_t node, int64_t local) const {
  switch (c) {
    case LinkClass::kIntraNode:
      return node * gpus_per_node_ + local;
    case LinkClass::kNicAttach:
      return num_gpus_ + node * gpus_per_node_ + local;
    case LinkClass::kNetwork:
      return 2 * num_gpus_ + node * nics_per_node_ + local;
    case LinkClass::kNone:
      break;
  }
  return -1;
}

Result<ClusterTopology> ClusterTopology::build(const core::ClusterProfile& p, int64_t num_gpus) {
  if (num_gpus < 1) {
    return error(ErrorCode::kInvalidArgument, "cluster '{}': num_gpus = {} must be at least 1",
                 p.name, num_gpus);
  }
  if (p.gpus_per_node < 1) {
    return error(ErrorCode::kInvalidArgument, "cluster '{}': gpus_per_node = {} must be at least 1",
                 p.name, p.gpus_per_node);
  }
  const int64_t nodes = core::ceil_div(num_gpus, p.gpus_per_node);
  if (nodes > 1 && (p.inter_node.nics_per_node < 1 || p.inter_node.nic_bandwidth_gbit_s <= 0)) {
    return error(ErrorCode::kInfeasible,
                 "cluster '{}' has no inter-node network (inter_node.nics_per_node = {}), so {} "
                 "GPUs cannot be connected: at most gpus_per_node = {}",
                 p.name, p.inter_node.nics_per_node, num_gpus, p.gpus_per_node);
  }
  if (p.max_nodes > 0 && nodes > p.max_nodes) {
    return error(ErrorCode::kInfeasible,
                 "cluster '{}': {} GPUs need {} nodes but max_nodes = {} (at most {} GPUs)", p.name,
                 num_gpus, nodes, p.max_nodes, int64_t{p.max_nodes} * p.gpus_per_node);
  }
  if (p.gpus_per_node > 1 && !(p.intra_node.bandwidth_gb_s > 0)) {
    return error(ErrorCode::kInvalidArgument,
                 "cluster '{}': intra_node.bandwidth_gb_s = {} must be positive with {} GPUs per "
                 "node",
                 p.name, p.intra_node.bandwidth_gb_s, p.gpus_per_node);
  }
  ClusterTopology t;
  t.profile_name_ = p.name;
  t.num_gpus_ = num_gpus;
  t.num_nodes_ = nodes;
  t.gpus_per_node_ = p.gpus_per_node;
  t.nics_per_node_ = std::max(0, p.inter_node.nics_per_node);
  t.graph_ = make_graph(fabric_params(p), num_gpus);
  t.links_.resize(boost::num_edges(t.graph_));
  for (const auto e : boost::make_iterator_range(boost::edges(t.graph_))) {
    t.links_[t.graph_[e].id] = t.graph_[e];
  }
  LOOM_RETURN_IF_ERROR(t.compute_canonical_routes(p));
  return t;
}

namespace {

// The node and the GPU (or NIC) index within it that edge `id` of a graph of `gpus` GPUs serves.
std::pair<int64_t, int64_t> decode_edge(const TopoLink& l, int64_t gpus, int64_t gpn,
                                        int64_t nics) {
  switch (l.link_class) {
    case LinkClass::kIntraNode:
      return {l.id / gpn, l.id % gpn};
    case LinkClass::kNicAttach:
      return {(l.id - gpus) / gpn, (l.id - gpus) % gpn};
    case LinkClass::kNetwork:
      return {(l.id - 2 * gpus) / nics, (l.id - 2 * gpus) % nics};
    case LinkClass::kNone:
      break;
  }
  return {-1, -1};
}

}  // namespace

Status ClusterTopology::compute_canonical_routes(const core::ClusterProfile& profile) {
  // Two full nodes are enough: every route joins at most two nodes and all nodes are alike.
  const int64_t gpn = gpus_per_node_;
  const int64_t ref_nodes = std::min<int64_t>(num_nodes_, 2), ref_gpus = ref_nodes * gpn;
  const TopoGraph ref = make_graph(fabric_params(profile), ref_gpus);
  std::vector<Vertex> pred(boost::num_vertices(ref));
  std::vector<int> dist(boost::num_vertices(ref));
  same_node_routes_.assign(gpn * gpn, {});
  cross_node_routes_.assign(ref_nodes > 1 ? gpn * gpn : 0, {});

  // One route, read back along Dijkstra's predecessors and stored as canonical hops.
  const auto extract = [&](Vertex src, Vertex dst) -> Result<CanonicalRoute> {
    std::vector<Vertex> path{dst};
    for (Vertex v = dst; v != src; v = pred[v]) {
      if (pred[v] == v || path.size() > Route::kMaxLinks) {
        return error(ErrorCode::kInternal,
                     "cluster '{}': no route of at most {} links from GPU {} to GPU {}",
                     profile_name_, Route::kMaxLinks, src, dst);
      }
      path.push_back(pred[v]);
    }
    std::reverse(path.begin(), path.end());
    CanonicalRoute r;
    for (size_t i = 0; i + 1 < path.size(); ++i) {
      const TopoLink& l = ref[boost::edge(path[i], path[i + 1], ref).first];
      const auto [node, local] = decode_edge(l, ref_gpus, gpn, nics_per_node_);
      r.hops[r.count++] = {
          l.link_class, static_cast<uint8_t>(node),
          static_cast<uint8_t>(tier(ref[path[i + 1]].kind) < tier(ref[path[i]].kind)),
          static_cast<int32_t>(local)};
      r.latency_s += l.latency_s;
    }
    return r;
  };
  for (int64_t s = 0; s < gpn; ++s) {
    boost::dijkstra_shortest_paths(ref, static_cast<Vertex>(s),
                                   boost::predecessor_map(pred.data())
                                       .distance_map(dist.data())
                                       .weight_map(boost::get(&TopoLink::route_cost, ref)));
    for (int64_t d = 0; d < gpn; ++d) {
      if (d != s) {
        LOOM_ASSIGN_OR_RETURN(same_node_routes_[s * gpn + d], extract(s, d));
      }
      if (ref_nodes > 1) {
        LOOM_ASSIGN_OR_RETURN(cross_node_routes_[s * gpn + d], extract(s, gpn + d));
      }
    }
  }
  intra_node_latency_s_ = gpn > 1 ? same_node_routes_[1].latency_s : 0;
  inter_node_latency_s_ = ref_nodes > 1 ? cross_node_routes_[0].latency_s : 0;
  return core::ok_status();
}

Status ClusterTopology::check_gpu(int64_t gpu) const {
  if (gpu >= 0 && gpu < num_gpus_) return core::ok_status();
  return error(ErrorCode::kInvalidArgument,
               "rank {} is outside the topology of cluster '{}' ({} GPUs: ranks 0..{})", gpu,
               profile_name_, num_gpus_, num_gpus_ - 1);
}

Route ClusterTopology::route(int64_t src_gpu, int64_t dst_gpu) const {
  const int64_t gpn = gpus_per_node_;
  const int64_t nodes[2] = {src_gpu / gpn, dst_gpu / gpn};
  const auto& table = nodes[0] == nodes[1] ? same_node_routes_ : cross_node_routes_;
  const CanonicalRoute& c = table[(src_gpu % gpn) * gpn + dst_gpu % gpn];
  Route r;
  r.count = c.count;
  r.latency_s = c.latency_s;
  for (int i = 0; i < c.count; ++i) {
    const CanonicalHop& h = c.hops[i];
    r.links[i] = 2 * edge_id(h.link_class, nodes[h.slot], h.local) + h.towards_gpu;
  }
  return r;
}

}  // namespace loom::sim
