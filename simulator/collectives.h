// Collective cost model: the time of an NCCL collective (all-reduce, all-gather, reduce-scatter,
// broadcast, send/recv) on a group of ranks of a ClusterTopology, alone or while every group of
// a layout's TP, DP or PP kind runs the same collective. Flows are routed over the graph and
// share the links they cross; alpha-beta formulas after NCCL's tuning model and Thakur et al.
// 2005. Tested against hand arithmetic in tests/sim/collectives_test.cc.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "core/layout.h"
#include "core/status.h"
#include "simulator/topology.h"

namespace loom::sim {

enum class CollectiveKind { kAllReduce, kAllGather, kReduceScatter, kBroadcast, kSendRecv };
enum class GroupKind { kTensor, kData, kPipeline };
enum class Algorithm {
  kAuto,          // what NCCL's tuner would pick: the fastest of ring and tree (all-reduce)
  kRing,          // NCCL ring (pipelined, one ring per channel)
  kTree,          // NCCL double binary tree (all-reduce only)
  kHierarchical,  // intra-node reduce-scatter, inter-node all-reduce, intra-node all-gather
  kDirect,        // send/recv: one message along the route between two GPUs
  kNone,          // a group of one rank, or zero bytes: nothing moves
};
const char* to_string(CollectiveKind k);
const char* to_string(GroupKind k);
const char* to_string(Algorithm a);

// Every communicator group of `kind` in a resolved layout (tp, pp, dp >= 1; dp = 0 is derived
// from gpus), each group's ranks in the order of its coordinate, groups ordered by first rank.
// Consistent with core::rank_coords. Empty when the layout has no ranks.
std::vector<std::vector<int64_t>> layout_groups(const core::Layout& layout, GroupKind kind);

struct CommCost {
  double time_s = 0;                 // latency_s + bandwidth_s
  double latency_s = 0;              // alpha terms
  double bandwidth_s = 0;            // beta terms
  double bus_bandwidth_bytes_s = 0;  // nccl-tests busbw = algbw * factor(kind, n), algbw = S/t
  LinkClass bottleneck = LinkClass::kNone;  // link class that bounds the beta term
  Algorithm algorithm = Algorithm::kNone;
  int64_t ranks = 0;
  int64_t nodes = 0;  // nodes the group spans
};

// Per-group link figures that do not depend on the message size; a query only multiplies.
struct GroupModel {
  int64_t ranks = 0, nodes = 0, max_ranks_per_node = 0;
  double ring_s_per_byte = 0;  // per byte of per-rank ring volume, busiest link of the group
  LinkClass ring_bottleneck = LinkClass::kNone;
  double direct_s_per_byte = 0;  // send/recv: slowest neighbour transfer i -> i+1
  double direct_latency_s = 0;
  LinkClass direct_bottleneck = LinkClass::kNone;
  bool hierarchical_ok = false;  // every node holds the same number of the group's ranks
  double hier_intra_s_per_byte = 0, hier_inter_s_per_byte = 0;
  LinkClass hier_inter_bottleneck = LinkClass::kNone;
  double intra_latency_s = 0, inter_latency_s = 0;  // one step inside a node / across nodes
};

// Holds a topology (shared, immutable) and caches a GroupModel per group shape and per layout,
// so a repeated query costs a hash lookup. Not thread-safe: give each planner thread its own
// model (they may share the topology).
// Message size `bytes` is the nccl-tests size S: the all-reduce buffer, the all-gather output,
// the reduce-scatter input, the broadcast buffer, one send/recv message.
class CollectiveModel {
 public:
  explicit CollectiveModel(std::shared_ptr<const ClusterTopology> topology);
  static core::Result<CollectiveModel> create(const core::ClusterProfile& profile,
                                              int64_t num_gpus);
  const ClusterTopology& topology() const { return *topology_; }

  // `group` alone on the cluster. kSendRecv: group[i] sends `bytes` to group[i+1], all at once.
  core::Result<CommCost> estimate(CollectiveKind kind, std::span<const int64_t> group, double bytes,
                                  Algorithm algorithm = Algorithm::kAuto);
  // `group` while every group of `concurrent` runs the same collective at the same time
  // (`group` is added when it is not among them). Not cached: O(ranks of all groups).
  core::Result<CommCost> estimate_concurrent(CollectiveKind kind, std::span<const int64_t> group,
                                             const std::vector<std::vector<int64_t>>& concurrent,
                                             double bytes, Algorithm algorithm = Algorithm::kAuto);
  // All groups of `group_kind` of a resolved layout run `kind` together (e.g. every DP group's
  // gradient all-reduce, or every pipeline stage sending to the next): the slowest group.
  core::Result<CommCost> estimate_layout(const core::Layout& layout, GroupKind group_kind,
                                         CollectiveKind kind, double bytes,
                                         Algorithm algorithm = Algorithm::kAuto);

  // The size-independent figures behind the estimates (for reports and tests).
  core::Result<GroupModel> group_model(std::span<const int64_t> group);
  size_t cache_entries() const { return group_cache_.size() + layout_cache_.size(); }

 private:
  struct VectorHash {
    size_t operator()(const std::vector<int64_t>& v) const;
  };
  struct LayoutKey {
    int64_t tp, dp, pp;
    bool dp_before_pp;
    GroupKind kind;
    bool operator==(const LayoutKey&) const = default;
  };
  struct LayoutKeyHash {
    size_t operator()(const LayoutKey& k) const;
  };

  core::Status check_group(std::span<const int64_t> group) const;
  std::vector<int64_t> shape_key(std::span<const int64_t> group) const;

  std::shared_ptr<const ClusterTopology> topology_;
  std::unordered_map<std::vector<int64_t>, GroupModel, VectorHash> group_cache_;
  std::unordered_map<LayoutKey, GroupModel, LayoutKeyHash> layout_cache_;
  std::vector<double> link_load_;  // scratch: flows per directed link
};

// The time of `kind` on a group described by `model` (no topology needed: O(1)).
core::Result<CommCost> cost_from_model(const GroupModel& model, CollectiveKind kind, double bytes,
                                       Algorithm algorithm = Algorithm::kAuto);

}  // namespace loom::sim
