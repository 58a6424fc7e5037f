// The in-process backend (thread_comm.h). A GroupState is shared by the ranks of one group; a
// call runs phase 1 (deposit pointers, check that every rank made the same call, wait for all),
// the ranks read each other's buffers, then phase 2 (wait until all have read) before any rank
// writes a buffer another rank may still read. Tested in tests/comm/thread_comm_test.cc.
#include "comm/thread_comm.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <utility>

namespace loom::comm {
namespace {

using core::ErrorCode;
using core::Status;

struct GroupState;

// What a rank deposits in phase 1: the call (checked against the other ranks') and its buffers.
struct Call {
  std::string op{};  // "all_reduce", ...
  DType dtype = DType::kF32;
  int64_t count = 0;
  int root = -1;
  ReduceOp reduce = ReduceOp::kSum;
  const void* in = nullptr;
  int color = 0, key = 0;                              // split
  std::shared_ptr<GroupState>* split_group = nullptr;  // split: filled by the last arriver
  int* split_rank = nullptr;

  std::string describe() const {
    if (op == "barrier") return op;
    if (op == "split") return fmt::format("split(color {}, key {})", color, key);
    std::string s = fmt::format("{}({}, {} elements", op, to_string(dtype), count);
    if (op == "all_reduce") s += fmt::format(", {}", to_string(reduce));
    if (op == "broadcast") s += fmt::format(", root {}", root);
    return s + ")";
  }
  bool matches(const Call& o) const {
    if (op != o.op) return false;
    if (op == "barrier" || op == "split") return true;
    return dtype == o.dtype && count == o.count && root == o.root && reduce == o.reduce;
  }
};

struct GroupState {
  explicit GroupState(int n) : slots(n), present(n, false) {}
  std::mutex mu;
  std::condition_variable cv;
  int64_t generation = 0;  // phases completed
  int arrived = 0;
  std::vector<Call> slots;    // phase-1 deposits; stable until every rank has passed phase 2
  std::vector<bool> present;  // who has arrived at the current phase
  std::string phase_error;    // set by the last arriver of `error_generation` (a mismatch)
  int64_t error_generation = -1;
  std::string broken;  // why the group is unusable (a timeout), empty while healthy
  std::map<std::pair<int, int>, std::deque<std::vector<char>>> mailbox;  // (src, dst) -> messages
};

class ThreadComm final : public Communicator {
 public:
  ThreadComm(std::shared_ptr<GroupState> state, int rank, int size, std::string name)
      : state_(std::move(state)), rank_(rank), size_(size), name_(std::move(name)) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }

 protected:
  Status do_all_reduce(void* data, int64_t count, DType t, ReduceOp op) override;
  Status do_reduce_scatter(const void* in, void* out, int64_t count, DType t) override;
  Status do_all_gather(const void* in, void* out, int64_t count, DType t) override;
  Status do_broadcast(void* data, int64_t count, DType t, int root) override;
  Status do_send(const void* data, int64_t bytes, int peer) override;
  Status do_recv(void* data, int64_t bytes, int peer) override;
  Status do_barrier() override;
  core::Result<std::unique_ptr<Communicator>> do_split(int color, int key,
                                                       std::string name) override;

 private:
  // Phase 1 when `call` is given (deposit + match check), phase 2 otherwise. `on_complete` runs
  // under the lock in the last arriver of a phase-1 whose calls all match.
  Status rendezvous(const std::string& op, const Call* call,
                    const std::function<void()>& on_complete = {});
  Status mismatch_error(const GroupState& s) const;
  std::vector<const void*> inputs() const;  // every rank's `in`, valid between the two phases

  std::shared_ptr<GroupState> state_;
  int rank_, size_;
  std::string name_;
};

Status ThreadComm::rendezvous(const std::string& op, const Call* call,
                              const std::function<void()>& on_complete) {
  GroupState& s = *state_;
  std::unique_lock<std::mutex> lock(s.mu);
  if (!s.broken.empty()) {
    return core::error(ErrorCode::kInternal, "{} refused: the group is unusable after: {}",
                       where(op), s.broken);
  }
  if (call != nullptr) s.slots[rank_] = *call;
  s.present[rank_] = true;
  const int64_t my_generation = s.generation;
  if (++s.arrived == size_) {
    Status mismatch = call != nullptr ? mismatch_error(s) : core::ok_status();
    if (!mismatch.ok()) {
      s.phase_error = mismatch.message();
      s.error_generation = my_generation;
    } else if (on_complete) {
      on_complete();
    }
    s.arrived = 0;
    std::fill(s.present.begin(), s.present.end(), false);
    ++s.generation;
    s.cv.notify_all();
  } else {
    const auto deadline = std::chrono::steady_clock::now() + timeout();
    const bool done =
        s.cv.wait_until(lock, deadline, [&] { return s.generation != my_generation; });
    if (!done) {
      std::string missing;
      for (int r = 0; r < size_; ++r) {
        if (!s.present[r]) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
      }
      const std::string message = fmt::format("{} timed out after {} waiting for ranks {}",
                                              where(op), format_duration(timeout()), missing);
      if (s.broken.empty()) s.broken = message;
      return Status(ErrorCode::kInternal, message);
    }
  }
  if (s.error_generation == my_generation) {
    return core::error(ErrorCode::kInvalidArgument, "{}: {}", where(op), s.phase_error);
  }
  return core::ok_status();
}

Status ThreadComm::mismatch_error(const GroupState& s) const {
  for (int r = 1; r < size_; ++r) {
    if (!s.slots[r].matches(s.slots[0])) {
      return core::error(ErrorCode::kInvalidArgument,
                         "mismatched collective calls: rank 0 called {} but rank {} called {}",
                         s.slots[0].describe(), r, s.slots[r].describe());
    }
  }
  return core::ok_status();
}

std::vector<const void*> ThreadComm::inputs() const {
  std::vector<const void*> in(size_);
  for (int r = 0; r < size_; ++r) in[r] = state_->slots[r].in;
  return in;
}

Status ThreadComm::do_all_reduce(void* data, int64_t count, DType t, ReduceOp op) {
  Call call{.op = "all_reduce", .dtype = t, .count = count, .reduce = op, .in = data};
  LOOM_RETURN_IF_ERROR(rendezvous(call.op, &call));
  std::vector<char> result(count * dtype_bytes(t));
  reduce_rank_order(t, op, inputs(), count, result.data());
  LOOM_RETURN_IF_ERROR(rendezvous(call.op, nullptr));  // nobody reads `data` any more
  if (count > 0) std::memcpy(data, result.data(), result.size());
  return core::ok_status();
}

Status ThreadComm::do_reduce_scatter(const void* in, void* out, int64_t count, DType t) {
  Call call{.op = "reduce_scatter", .dtype = t, .count = count, .in = in};
  LOOM_RETURN_IF_ERROR(rendezvous(call.op, &call));
  const int64_t chunk_bytes = count * dtype_bytes(t);
  std::vector<const void*> chunks = inputs();
  for (auto& c : chunks) c = static_cast<const char*>(c) + rank_ * chunk_bytes;
  std::vector<char> result(chunk_bytes);
  reduce_rank_order(t, ReduceOp::kSum, chunks, count, result.data());
  LOOM_RETURN_IF_ERROR(rendezvous(call.op, nullptr));  // `out` may alias this rank's `in`
  if (count > 0) std::memcpy(out, result.data(), result.size());
  return core::ok_status();
}

Status ThreadComm::do_all_gather(const void* in, void* out, int64_t count, DType t) {
  Call call{.op = "all_gather", .dtype = t, .count = count, .in = in};
  LOOM_RETURN_IF_ERROR(rendezvous(call.op, &call));
  const int64_t chunk_bytes = count * dtype_bytes(t);
  const std::vector<const void*> chunks = inputs();
  // In place (`in` == out + rank * count) is the one allowed overlap; the other ranks' chunks do
  // not touch it, and this rank's own chunk is copied only after phase 2, when nobody reads `in`.
  for (int r = 0; r < size_; ++r) {
    if (r != rank_ && count > 0) {
      std::memcpy(static_cast<char*>(out) + r * chunk_bytes, chunks[r], chunk_bytes);
    }
  }
  LOOM_RETURN_IF_ERROR(rendezvous(call.op, nullptr));
  char* own = static_cast<char*>(out) + rank_ * chunk_bytes;
  if (count > 0 && own != in) std::memmove(own, in, chunk_bytes);
  return core::ok_status();
}

Status ThreadComm::do_broadcast(void* data, int64_t count, DType t, int root) {
  Call call{.op = "broadcast", .dtype = t, .count = count, .root = root, .in = data};
  LOOM_RETURN_IF_ERROR(rendezvous(call.op, &call));
  if (rank_ != root && count > 0) {
    std::memcpy(data, state_->slots[root].in, count * dtype_bytes(t));
  }
  return rendezvous(call.op, nullptr);  // the root's buffer stays valid until all have copied
}

Status ThreadComm::do_barrier() {
  Call call{.op = "barrier"};
  return rendezvous(call.op, &call);
}

Status ThreadComm::do_send(const void* data, int64_t bytes, int peer) {
  GroupState& s = *state_;
  std::lock_guard<std::mutex> lock(s.mu);
  if (!s.broken.empty()) {
    return core::error(ErrorCode::kInternal, "{} refused: the group is unusable after: {}",
                       where(fmt::format("send to rank {}", peer)), s.broken);
  }
  const char* p = static_cast<const char*>(data);
  s.mailbox[{rank_, peer}].emplace_back(p, p + bytes);
  s.cv.notify_all();
  return core::ok_status();
}

Status ThreadComm::do_recv(void* data, int64_t bytes, int peer) {
  const std::string call = fmt::format("recv of {} bytes from rank {}", bytes, peer);
  GroupState& s = *state_;
  std::unique_lock<std::mutex> lock(s.mu);
  auto& queue = s.mailbox[{peer, rank_}];
  const bool arrived = s.cv.wait_until(lock, std::chrono::steady_clock::now() + timeout(),
                                       [&] { return !queue.empty(); });
  if (!arrived) {
    return core::error(ErrorCode::kInternal, "{} timed out after {} (rank {} never sent)",
                       where(call), format_duration(timeout()), peer);
  }
  std::vector<char> message = std::move(queue.front());
  queue.pop_front();
  if (static_cast<int64_t>(message.size()) != bytes) {
    return core::error(ErrorCode::kInvalidArgument, "{}: rank {} sent {} bytes", where(call), peer,
                       message.size());
  }
  if (bytes > 0) std::memcpy(data, message.data(), bytes);
  return core::ok_status();
}

core::Result<std::unique_ptr<Communicator>> ThreadComm::do_split(int color, int key,
                                                                 std::string name) {
  std::shared_ptr<GroupState> group;
  int new_rank = -1;
  Call call{
      .op = "split", .color = color, .key = key, .split_group = &group, .split_rank = &new_rank};
  // Run by the last arriver under the lock: it fills every rank's outputs before any rank wakes,
  // and no rank touches another's outputs afterwards, so split needs no second phase.
  auto build_groups = [this] {
    std::map<int, std::vector<std::pair<int, int>>> members;  // color -> (key, parent rank)
    for (int r = 0; r < size_; ++r) {
      members[state_->slots[r].color].push_back({state_->slots[r].key, r});
    }
    for (auto& entry : members) {
      auto& list = entry.second;
      std::sort(list.begin(), list.end());
      auto g = std::make_shared<GroupState>(static_cast<int>(list.size()));
      for (size_t i = 0; i < list.size(); ++i) {
        const Call& member = state_->slots[list[i].second];
        *member.split_group = g;
        *member.split_rank = static_cast<int>(i);
      }
    }
  };
  LOOM_RETURN_IF_ERROR(rendezvous(call.op, &call, build_groups));
  const int group_size = static_cast<int>(group->slots.size());
  auto comm = std::make_unique<ThreadComm>(std::move(group), new_rank, group_size, std::move(name));
  comm->set_timeout(timeout());
  return std::unique_ptr<Communicator>(std::move(comm));
}

}  // namespace

std::vector<std::unique_ptr<Communicator>> make_thread_world(int n) {
  auto state = std::make_shared<GroupState>(n);
  std::vector<std::unique_ptr<Communicator>> world;
  for (int r = 0; r < n; ++r) world.push_back(std::make_unique<ThreadComm>(state, r, n, "world"));
  return world;
}

}  // namespace loom::comm
