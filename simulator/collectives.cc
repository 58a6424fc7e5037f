// Collective cost model: see collectives.h. A query is alpha-beta arithmetic on a GroupModel;
// building a GroupModel routes every flow of every concurrent group over the topology, adds up
// the flows on each directed link and keeps, per group, its busiest link (load / bandwidth).
#include "simulator/collectives.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace loom::sim {

using core::ErrorCode;
using core::Result;
using core::Status;

// Names in enum order.
const char* to_string(CollectiveKind k) {
  static constexpr const char* kNames[] = {"all-reduce", "all-gather", "reduce-scatter",
                                           "broadcast", "send/recv"};
  return kNames[static_cast<int>(k)];
}

const char* to_string(GroupKind k) {
  static constexpr const char* kNames[] = {"tensor", "data", "pipeline"};
  return kNames[static_cast<int>(k)];
}

const char* to_string(Algorithm a) {
  static constexpr const char* kNames[] = {"auto",         "ring",   "tree",
                                           "hierarchical", "direct", "none"};
  return kNames[static_cast<int>(a)];
}

std::vector<std::vector<int64_t>> layout_groups(const core::Layout& layout, GroupKind kind) {
  core::Layout l = layout;
  if (l.dp == 0 && l.tp > 0 && l.pp > 0) l.dp = l.gpus / (l.tp * l.pp);
  if (l.tp < 1 || l.pp < 1 || l.dp < 1) return {};
  const int64_t ranks = l.tp * l.pp * l.dp;
  const int64_t size = kind == GroupKind::kTensor ? l.tp : kind == GroupKind::kData ? l.dp : l.pp;
  std::vector<std::vector<int64_t>> groups(ranks / size, std::vector<int64_t>(size));
  for (int64_t r = 0; r < ranks; ++r) {
    const core::RankCoords c = core::rank_coords(l, r);
    switch (kind) {
      case GroupKind::kTensor:
        groups[c.dp + l.dp * c.pp][c.tp] = r;
        break;
      case GroupKind::kData:
        groups[c.tp + l.tp * c.pp][c.dp] = r;
        break;
      case GroupKind::kPipeline:
        groups[c.tp + l.tp * c.dp][c.pp] = r;
        break;
    }
  }
  std::sort(groups.begin(), groups.end(),
            [](const auto& a, const auto& b) { return a.front() < b.front(); });
  return groups;
}

namespace {

// A message stream from one GPU to another; weight = the share of the per-rank volume it carries.
struct Flow {
  int64_t src = 0, dst = 0;
  double weight = 1;
};

// A group's ranks as given and sorted by GPU id (so by node, then local GPU), cut in node runs.
struct NodeRuns {
  std::vector<int64_t> given;
  std::vector<int64_t> sorted;
  std::vector<size_t> start;  // run v is sorted[start[v] .. start[v + 1])
  size_t max_size = 0;
  bool uniform = true;  // the same number of ranks on every node
  size_t count() const { return start.size() - 1; }
  size_t size(size_t v) const { return start[v + 1] - start[v]; }
  int64_t at(size_t v, size_t i) const { return sorted[start[v] + i]; }
};

Result<NodeRuns> make_runs(const ClusterTopology& t, std::span<const int64_t> group) {
  if (group.empty()) {
    return error(ErrorCode::kInvalidArgument, "a communicator group needs at least one rank");
  }
  NodeRuns r;
  r.given.assign(group.begin(), group.end());
  r.sorted = r.given;
  std::sort(r.sorted.begin(), r.sorted.end());
  for (size_t i = 0; i < r.sorted.size(); ++i) {
    LOOM_RETURN_IF_ERROR(t.check_gpu(r.sorted[i]));
    if (i > 0 && r.sorted[i] == r.sorted[i - 1]) {
      return error(ErrorCode::kInvalidArgument, "rank {} appears twice in a communicator group",
                   r.sorted[i]);
    }
    if (i == 0 || t.node_of(r.sorted[i]) != t.node_of(r.sorted[i - 1])) r.start.push_back(i);
  }
  r.start.push_back(r.sorted.size());
  for (size_t v = 0; v < r.count(); ++v) {
    r.max_size = std::max(r.max_size, r.size(v));
    r.uniform = r.uniform && r.size(v) == r.size(0);
  }
  return r;
}

// NCCL ring (one ring per channel; the ring of Thakur, Rabenseifner & Gropp 2005): on each
// node the ring visits the group's GPUs in a row, then leaves for the next node. With k of the
// group's GPUs on a node, k channels each enter at a different GPU, so every GPU (and its rail
// NIC) carries 1/k of the inter-node traffic: how NCCL spreads channels over a node's NICs.
void add_ring_flows(const NodeRuns& r, std::vector<Flow>& out) {
  if (r.sorted.size() < 2) return;
  const size_t nodes = r.count();
  const size_t channels = nodes == 1 ? 1 : r.max_size;  // one node: every channel is the same
  const double w = 1.0 / static_cast<double>(channels);
  for (size_t c = 0; c < channels; ++c) {
    for (size_t v = 0; v < nodes; ++v) {
      const size_t k = r.size(v), entry = c % k, next = (v + 1) % nodes;
      for (size_t s = 0; s + 1 < k; ++s) {
        out.push_back({r.at(v, (entry + s) % k), r.at(v, (entry + s + 1) % k), w});
      }
      out.push_back({r.at(v, (entry + k - 1) % k), r.at(next, c % r.size(next)), w});
    }
  }
}

// Hierarchical all-reduce, phases 1 and 3: a ring among the group's GPUs of each node.
void add_intra_ring_flows(const NodeRuns& r, std::vector<Flow>& out) {
  for (size_t v = 0; v < r.count(); ++v) {
    const size_t k = r.size(v);
    if (k < 2) continue;
    for (size_t i = 0; i < k; ++i) out.push_back({r.at(v, i), r.at(v, (i + 1) % k), 1.0});
  }
}

// Hierarchical all-reduce, phase 2: the i-th GPU of every node in a ring across the nodes.
void add_inter_ring_flows(const NodeRuns& r, std::vector<Flow>& out) {
  const size_t nodes = r.count();
  if (nodes < 2 || !r.uniform) return;
  for (size_t i = 0; i < r.max_size; ++i) {
    for (size_t v = 0; v < nodes; ++v) out.push_back({r.at(v, i), r.at((v + 1) % nodes, i), 1.0});
  }
}

// Send/recv: group[i] -> group[i + 1] (pipeline stage to the next).
void add_direct_flows(const NodeRuns& r, std::vector<Flow>& out) {
  for (size_t i = 0; i + 1 < r.given.size(); ++i) out.push_back({r.given[i], r.given[i + 1], 1.0});
}

struct Bound {
  double s_per_byte = 0;  // load / bandwidth of the busiest link
  LinkClass bottleneck = LinkClass::kNone;
  double latency_s = 0;  // longest route
};

int tie_rank(LinkClass c) {                     // on equal load, name the scarcer resource
  static constexpr int kRank[] = {0, 2, 1, 3};  // none, intra-node, gpu-nic, network
  return kRank[static_cast<int>(c)];
}

void add_link(Bound& b, double s_per_byte, LinkClass c) {
  constexpr double kTie = 1e-12;  // relative: loads are sums of 1/k weights, equal up to rounding
  if (s_per_byte > b.s_per_byte * (1 + kTie) ||
      (s_per_byte >= b.s_per_byte * (1 - kTie) && tie_rank(c) > tie_rank(b.bottleneck))) {
    b.s_per_byte = std::max(b.s_per_byte, s_per_byte);
    b.bottleneck = c;
  }
}

using FlowBuilder = void (*)(const NodeRuns&, std::vector<Flow>&);

// Routes one flow pattern of all `groups` at once; returns the worst of groups [0, interest).
Bound worst_bound(const ClusterTopology& t, const std::vector<NodeRuns>& groups, size_t interest,
                  FlowBuilder build, std::vector<double>& load) {
  std::vector<Flow> flows;
  std::vector<size_t> begin{0};
  for (const NodeRuns& g : groups) {
    build(g, flows);
    begin.push_back(flows.size());
  }
  std::fill(load.begin(), load.end(), 0.0);
  for (const Flow& f : flows) {
    for (const DirectedLink l : t.route(f.src, f.dst)) load[l] += f.weight;
  }
  Bound worst;
  for (size_t g = 0; g < interest; ++g) {
    Bound b;
    for (size_t i = begin[g]; i < begin[g + 1]; ++i) {
      const Route r = t.route(flows[i].src, flows[i].dst);
      b.latency_s = std::max(b.latency_s, r.latency_s);
      for (const DirectedLink l : r) {
        add_link(b, load[l] / t.link(l).bandwidth_bytes_s(), t.link(l).link_class);
      }
    }
    add_link(worst, b.s_per_byte, b.bottleneck);
    worst.latency_s = std::max(worst.latency_s, b.latency_s);
  }
  return worst;
}

// The slowest of groups [0, interest) while all `groups` run the same collective.
GroupModel model_scenario(const ClusterTopology& t, const std::vector<NodeRuns>& groups,
                          size_t interest, std::vector<double>& load) {
  GroupModel m;
  m.hierarchical_ok = true;
  for (size_t g = 0; g < interest; ++g) {
    m.ranks = std::max<int64_t>(m.ranks, groups[g].sorted.size());
    m.nodes = std::max<int64_t>(m.nodes, groups[g].count());
    m.max_ranks_per_node = std::max<int64_t>(m.max_ranks_per_node, groups[g].max_size);
    m.hierarchical_ok = m.hierarchical_ok && groups[g].uniform;
  }
  m.intra_latency_s = t.intra_node_latency_s();
  m.inter_latency_s = t.inter_node_latency_s();
  const Bound ring = worst_bound(t, groups, interest, add_ring_flows, load);
  m.ring_s_per_byte = ring.s_per_byte;
  m.ring_bottleneck = ring.bottleneck;
  const Bound direct = worst_bound(t, groups, interest, add_direct_flows, load);
  m.direct_s_per_byte = direct.s_per_byte;
  m.direct_latency_s = direct.latency_s;
  m.direct_bottleneck = direct.bottleneck;
  if (m.hierarchical_ok) {
    m.hier_intra_s_per_byte =
        worst_bound(t, groups, interest, add_intra_ring_flows, load).s_per_byte;
    const Bound inter = worst_bound(t, groups, interest, add_inter_ring_flows, load);
    m.hier_inter_s_per_byte = inter.s_per_byte;
    m.hier_inter_bottleneck = inter.bottleneck;
  }
  return m;
}

Status check_algorithm(CollectiveKind kind, Algorithm a, const GroupModel& m) {
  const bool ok =
      a == Algorithm::kAuto ||
      (kind == CollectiveKind::kSendRecv ? a == Algorithm::kDirect
       : kind == CollectiveKind::kAllReduce
           ? (a == Algorithm::kRing || a == Algorithm::kTree || a == Algorithm::kHierarchical)
           : a == Algorithm::kRing);
  if (!ok) {
    return error(ErrorCode::kInvalidArgument,
                 "algorithm '{}' does not implement {} (send/recv: direct; all-reduce: ring, "
                 "tree, hierarchical; others: ring)",
                 to_string(a), to_string(kind));
  }
  if (a == Algorithm::kHierarchical && !m.hierarchical_ok) {
    return error(ErrorCode::kInvalidArgument,
                 "hierarchical all-reduce needs the same number of the group's ranks on every "
                 "node ({} ranks on {} nodes)",
                 m.ranks, m.nodes);
  }
  return core::ok_status();
}

// Ring, after NCCL's tuning model (src/graph/tuning.cc, ncclTopoTuneModel). Per-rank volume:
// (n-1)/n * S for all-gather / reduce-scatter (Thakur, Rabenseifner & Gropp 2005: ring
// all-gather costs (p-1) alpha + (p-1)/p n beta), twice that for all-reduce = reduce-scatter +
// all-gather; these are the nccl-tests PERFORMANCE.md busbw factors. S for a pipelined
// broadcast. Steps: 2(n-1), n-1, n-1; of those, 2(N-1), N-1, N-1 cross nodes (NCCL's
// nInterSteps) and pay the inter-node latency, the rest the intra-node one.
CommCost ring_cost(const GroupModel& m, CollectiveKind kind, double bytes) {
  const double n = static_cast<double>(m.ranks), nodes = static_cast<double>(m.nodes);
  double volume = 1, steps = n - 1, inter = nodes - 1;
  if (kind == CollectiveKind::kAllReduce) {
    volume = 2 * (n - 1) / n, steps = 2 * (n - 1), inter = 2 * (nodes - 1);
  } else if (kind != CollectiveKind::kBroadcast) {
    volume = (n - 1) / n;
  }
  CommCost c;
  c.algorithm = Algorithm::kRing;
  c.bandwidth_s = volume * bytes * m.ring_s_per_byte;
  c.latency_s = (steps - inter) * m.intra_latency_s + inter * m.inter_latency_s;
  c.bottleneck = m.ring_bottleneck;
  return c;
}

// NCCL's tree all-reduce as its tuner models it (tuning.cc): the same link bandwidth as the ring,
// derated to 0.9 ("busBw * .9", NCCL 2.8-2.18), algbw = busbw / 2, so t = 2S / (0.9 * busbw);
// latency 2 * ((ranks per node - 1) * intra + floor(log2 nodes) * inter): a chain inside each
// node and a double binary tree of depth log2(nodes) across them (Sanders et al. 2009).
CommCost tree_cost(const GroupModel& m, double bytes) {
  constexpr double kTreeBusBwFactor = 0.9;
  CommCost c;
  c.algorithm = Algorithm::kTree;
  c.bandwidth_s = 2 * bytes * m.ring_s_per_byte / kTreeBusBwFactor;
  const double depth = std::bit_width(static_cast<uint64_t>(m.nodes)) - 1;  // floor(log2)
  c.latency_s = 2 * ((m.max_ranks_per_node - 1) * m.intra_latency_s + depth * m.inter_latency_s);
  c.bottleneck = m.ring_bottleneck;
  return c;
}

// Hierarchical all-reduce (Horovod / DeepSpeed style, not NCCL's): reduce-scatter over the k
// GPUs of each node ((k-1)/k * S), all-reduce of each S/k shard across the N nodes by the i-th
// GPUs (2(N-1)/N * S/k each, all k at once on their own NICs), all-gather inside the node.
// Phases run one after the other: no overlap of NVLink and network time.
CommCost hierarchical_cost(const GroupModel& m, double bytes) {
  const double k = static_cast<double>(m.max_ranks_per_node);
  const double nodes = static_cast<double>(m.nodes);
  const double intra_s = 2 * (k - 1) / k * bytes * m.hier_intra_s_per_byte;
  const double inter_s = 2 * (nodes - 1) / nodes * (bytes / k) * m.hier_inter_s_per_byte;
  CommCost c;
  c.algorithm = Algorithm::kHierarchical;
  c.bandwidth_s = intra_s + inter_s;
  c.latency_s = 2 * (k - 1) * m.intra_latency_s + 2 * (nodes - 1) * m.inter_latency_s;
  c.bottleneck = inter_s >= intra_s ? m.hier_inter_bottleneck : LinkClass::kIntraNode;
  return c;
}

// Send/recv (nccl-tests: busbw = algbw): S / bandwidth of the busiest link + route latency.
CommCost direct_cost(const GroupModel& m, double bytes) {
  CommCost c;
  c.algorithm = Algorithm::kDirect;
  c.bandwidth_s = bytes * m.direct_s_per_byte;
  c.latency_s = m.direct_latency_s;
  c.bottleneck = m.direct_bottleneck;
  return c;
}

// nccl-tests PERFORMANCE.md: busbw = algbw * 2(n-1)/n (all-reduce), (n-1)/n (all-gather,
// reduce-scatter), 1 (broadcast, send/recv).
double busbw_factor(CollectiveKind kind, double n) {
  if (kind == CollectiveKind::kAllReduce) return 2 * (n - 1) / n;
  if (kind == CollectiveKind::kAllGather || kind == CollectiveKind::kReduceScatter) {
    return (n - 1) / n;
  }
  return 1;
}

}  // namespace

// Auto follows NCCL's tuner (ncclTopoGetAlgoTime: time = latency + bytes / bandwidth per
// algorithm, the smallest wins), simplified: the Simple protocol only (no LL / LL128), no tree
// correction factors or per-architecture caps, no NVLS / CollNet (NVLink SHARP), tree only
// across nodes (inside a node NCCL's tree is a chain that the ring beats).
Result<CommCost> cost_from_model(const GroupModel& m, CollectiveKind kind, double bytes,
                                 Algorithm algorithm) {
  if (!(bytes >= 0) || !std::isfinite(bytes)) {
    return error(ErrorCode::kInvalidArgument, "message size {} bytes must be finite and >= 0",
                 bytes);
  }
  LOOM_RETURN_IF_ERROR(check_algorithm(kind, algorithm, m));
  CommCost c;
  if (m.ranks >= 2 && bytes > 0) {  // otherwise NCCL returns at once: nothing moves
    if (kind == CollectiveKind::kSendRecv) {
      c = direct_cost(m, bytes);
    } else if (algorithm == Algorithm::kTree) {
      c = tree_cost(m, bytes);
    } else if (algorithm == Algorithm::kHierarchical) {
      c = hierarchical_cost(m, bytes);
    } else {
      c = ring_cost(m, kind, bytes);
      if (algorithm == Algorithm::kAuto && kind == CollectiveKind::kAllReduce && m.nodes > 1) {
        const CommCost tree = tree_cost(m, bytes);
        if (tree.latency_s + tree.bandwidth_s < c.latency_s + c.bandwidth_s) c = tree;
      }
    }
    c.time_s = c.latency_s + c.bandwidth_s;
    c.bus_bandwidth_bytes_s = busbw_factor(kind, static_cast<double>(m.ranks)) * bytes / c.time_s;
  }
  c.ranks = m.ranks;
  c.nodes = m.nodes;
  return c;
}

size_t CollectiveModel::VectorHash::operator()(const std::vector<int64_t>& v) const {
  uint64_t h = v.size();
  for (const int64_t x : v) {  // boost::hash_combine's mixing, 64-bit constant
    h ^= static_cast<uint64_t>(x) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  }
  return h;
}

size_t CollectiveModel::LayoutKeyHash::operator()(const LayoutKey& k) const {
  return VectorHash{}({k.tp, k.dp, k.pp, k.dp_before_pp, static_cast<int64_t>(k.kind)});
}

CollectiveModel::CollectiveModel(std::shared_ptr<const ClusterTopology> topology)
    : topology_(std::move(topology)), link_load_(topology_->num_directed_links(), 0.0) {}

Result<CollectiveModel> CollectiveModel::create(const core::ClusterProfile& profile,
                                                int64_t num_gpus) {
  LOOM_ASSIGN_OR_RETURN(ClusterTopology t, ClusterTopology::build(profile, num_gpus));
  return CollectiveModel(std::make_shared<const ClusterTopology>(std::move(t)));
}

// The group with its nodes renumbered 0, 1, ... in increasing order: groups with the same key
// cost the same alone, since all nodes are alike and the fabric is non-blocking.
std::vector<int64_t> CollectiveModel::shape_key(std::span<const int64_t> group) const {
  const int64_t gpn = topology_->gpus_per_node();
  std::vector<int64_t> key(group.begin(), group.end());
  // Layout groups list their ranks in increasing order: number the nodes in one pass.
  int64_t ordinal = 0;
  for (size_t i = 0; i < key.size(); ++i) {
    if (i > 0 && group[i] / gpn < group[i - 1] / gpn) break;  // not monotone: sort below
    ordinal += i > 0 && group[i] / gpn != group[i - 1] / gpn;
    key[i] = ordinal * gpn + group[i] % gpn;
    if (i + 1 == key.size()) return key;
  }
  std::vector<int64_t> nodes;
  for (const int64_t g : group) nodes.push_back(g / gpn);
  std::sort(nodes.begin(), nodes.end());
  nodes.erase(std::unique(nodes.begin(), nodes.end()), nodes.end());
  for (size_t i = 0; i < key.size(); ++i) {
    const int64_t node = group[i] / gpn;
    key[i] =
        (std::lower_bound(nodes.begin(), nodes.end(), node) - nodes.begin()) * gpn + group[i] % gpn;
  }
  return key;
}

Result<GroupModel> CollectiveModel::group_model(std::span<const int64_t> group) {
  for (const int64_t g : group) LOOM_RETURN_IF_ERROR(topology_->check_gpu(g));
  std::vector<int64_t> key = shape_key(group);
  if (const auto it = group_cache_.find(key); it != group_cache_.end()) return it->second;
  LOOM_ASSIGN_OR_RETURN(NodeRuns runs, make_runs(*topology_, group));
  const std::vector<NodeRuns> groups{std::move(runs)};
  const GroupModel m = model_scenario(*topology_, groups, 1, link_load_);
  group_cache_.emplace(std::move(key), m);
  return m;
}

Result<CommCost> CollectiveModel::estimate(CollectiveKind kind, std::span<const int64_t> group,
                                           double bytes, Algorithm algorithm) {
  LOOM_ASSIGN_OR_RETURN(const GroupModel m, group_model(group));
  return cost_from_model(m, kind, bytes, algorithm);
}

Result<CommCost> CollectiveModel::estimate_concurrent(
    CollectiveKind kind, std::span<const int64_t> group,
    const std::vector<std::vector<int64_t>>& concurrent, double bytes, Algorithm algorithm) {
  std::vector<NodeRuns> groups;
  LOOM_ASSIGN_OR_RETURN(NodeRuns first, make_runs(*topology_, group));
  groups.push_back(std::move(first));
  for (const auto& other : concurrent) {
    if (std::equal(other.begin(), other.end(), group.begin(), group.end())) continue;
    LOOM_ASSIGN_OR_RETURN(NodeRuns runs, make_runs(*topology_, other));
    groups.push_back(std::move(runs));
  }
  return cost_from_model(model_scenario(*topology_, groups, 1, link_load_), kind, bytes, algorithm);
}

Result<CommCost> CollectiveModel::estimate_layout(const core::Layout& layout, GroupKind group_kind,
                                                  CollectiveKind kind, double bytes,
                                                  Algorithm algorithm) {
  const int64_t tp = layout.tp, pp = layout.pp;
  const int64_t dp = layout.dp > 0 || tp < 1 || pp < 1 ? layout.dp : layout.gpus / (tp * pp);
  const bool dp_before_pp = layout.rank_order == "tp-dp-pp";
  if (tp < 1 || pp < 1 || dp < 1 || (!dp_before_pp && layout.rank_order != "tp-pp-dp")) {
    return error(ErrorCode::kInvalidArgument,
                 "layout {} is not resolved: tp, pp, dp must be >= 1 and rank_order tp-dp-pp or "
                 "tp-pp-dp (got '{}')",
                 layout.summary(), layout.rank_order);
  }
  const LayoutKey key{tp, dp, pp, dp_before_pp, group_kind};
  if (const auto it = layout_cache_.find(key); it != layout_cache_.end()) {
    return cost_from_model(it->second, kind, bytes, algorithm);
  }
  if (tp * pp * dp > topology_->num_gpus()) {
    return error(ErrorCode::kInfeasible,
                 "layout {} needs {} GPUs but the topology of cluster "
                 "'{}' has {}",
                 layout.summary(), tp * pp * dp, topology_->profile_name(), topology_->num_gpus());
  }
  core::Layout l = layout;
  l.dp = dp;
  std::vector<NodeRuns> groups;
  for (const auto& g : layout_groups(l, group_kind)) {
    LOOM_ASSIGN_OR_RETURN(NodeRuns runs, make_runs(*topology_, g));
    groups.push_back(std::move(runs));
  }
  const GroupModel& m = layout_cache_[key] =
      model_scenario(*topology_, groups, groups.size(), link_load_);
  return cost_from_model(m, kind, bytes, algorithm);
}

}  // namespace loom::sim
