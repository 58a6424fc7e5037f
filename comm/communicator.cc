// The Communicator front end: argument checks shared by every backend, the rank-order reduction
// that makes sums deterministic, and message formatting. Tested in tests/comm/thread_comm_test.cc.
#include "comm/communicator.h"

#include <algorithm>

namespace loom::comm {

using core::ErrorCode;
using core::Status;

const char* to_string(ReduceOp op) { return op == ReduceOp::kSum ? "sum" : "max"; }
const char* to_string(DType t) { return t == DType::kF32 ? "fp32" : "fp64"; }
int64_t dtype_bytes(DType t) { return t == DType::kF32 ? 4 : 8; }

std::string format_duration(std::chrono::milliseconds d) {
  if (d.count() < 1000) return fmt::format("{} ms", d.count());
  return fmt::format("{:.1f} s", static_cast<double>(d.count()) / 1000.0);
}

std::string Communicator::where(const std::string& call) const {
  return fmt::format("rank {} of group '{}' ({} ranks): {}", rank(), name(), size(), call);
}

Status Communicator::check_args(const char* call, int64_t count, const void* a,
                                const void* b) const {
  if (count < 0) {
    return core::error(ErrorCode::kInvalidArgument, "{}: count {} is negative (must be >= 0)",
                       where(call), count);
  }
  if (count > 0 && (a == nullptr || b == nullptr)) {
    return core::error(ErrorCode::kInvalidArgument, "{}: null buffer for {} elements", where(call),
                       count);
  }
  return core::ok_status();
}

Status Communicator::check_rank(const char* call, const char* what, int peer) const {
  if (peer < 0 || peer >= size()) {
    return core::error(ErrorCode::kInvalidArgument, "{}: {} {} is not a rank (valid: 0..{})",
                       where(call), what, peer, size() - 1);
  }
  return core::ok_status();
}

#define LOOM_COMM_TYPED_(T, DT)                                                      \
  Status Communicator::all_reduce(T* data, int64_t count, ReduceOp op) {             \
    LOOM_RETURN_IF_ERROR(check_args("all_reduce", count, data, data));               \
    return do_all_reduce(data, count, DT, op);                                       \
  }                                                                                  \
  Status Communicator::reduce_scatter(const T* in, T* out, int64_t count_per_rank) { \
    LOOM_RETURN_IF_ERROR(check_args("reduce_scatter", count_per_rank, in, out));     \
    return do_reduce_scatter(in, out, count_per_rank, DT);                           \
  }                                                                                  \
  Status Communicator::all_gather(const T* in, T* out, int64_t count_per_rank) {     \
    LOOM_RETURN_IF_ERROR(check_args("all_gather", count_per_rank, in, out));         \
    return do_all_gather(in, out, count_per_rank, DT);                               \
  }                                                                                  \
  Status Communicator::broadcast(T* data, int64_t count, int root) {                 \
    LOOM_RETURN_IF_ERROR(check_args("broadcast", count, data, data));                \
    LOOM_RETURN_IF_ERROR(check_rank("broadcast", "root", root));                     \
    return do_broadcast(data, count, DT, root);                                      \
  }
LOOM_COMM_TYPED_(float, DType::kF32)
LOOM_COMM_TYPED_(double, DType::kF64)
#undef LOOM_COMM_TYPED_

Status Communicator::send(const void* data, int64_t bytes, int peer) {
  LOOM_RETURN_IF_ERROR(check_args("send", bytes, data, data));
  LOOM_RETURN_IF_ERROR(check_rank("send", "peer", peer));
  return do_send(data, bytes, peer);
}

Status Communicator::recv(void* data, int64_t bytes, int peer) {
  LOOM_RETURN_IF_ERROR(check_args("recv", bytes, data, data));
  LOOM_RETURN_IF_ERROR(check_rank("recv", "peer", peer));
  return do_recv(data, bytes, peer);
}

Status Communicator::barrier() { return do_barrier(); }

core::Result<std::unique_ptr<Communicator>> Communicator::split(int color, int key,
                                                                std::string name) {
  if (color < 0) {
    return core::error(ErrorCode::kInvalidArgument, "{}: color {} is negative (must be >= 0)",
                       where("split"), color);
  }
  if (name.empty()) name = fmt::format("{}/color{}", this->name(), color);
  return do_split(color, key, std::move(name));
}

namespace {

template <typename T>
void reduce_typed(ReduceOp op, const std::vector<const void*>& contributions, int64_t count,
                  T* out) {
  const T* first = static_cast<const T*>(contributions[0]);
  std::copy(first, first + count, out);
  for (size_t r = 1; r < contributions.size(); ++r) {
    const T* c = static_cast<const T*>(contributions[r]);
    if (op == ReduceOp::kSum) {
      for (int64_t i = 0; i < count; ++i) out[i] += c[i];
    } else {
      for (int64_t i = 0; i < count; ++i) out[i] = std::max(out[i], c[i]);
    }
  }
}

}  // namespace

void reduce_rank_order(DType t, ReduceOp op, const std::vector<const void*>& contributions,
                       int64_t count, void* out) {
  if (contributions.empty() || count == 0) return;
  if (t == DType::kF32) {
    reduce_typed(op, contributions, count, static_cast<float*>(out));
  } else {
    reduce_typed(op, contributions, count, static_cast<double*>(out));
  }
}

}  // namespace loom::comm
