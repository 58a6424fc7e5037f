// The NCCL backend (nccl_comm.h), part 2: the calls. Each one checks the group and its pointers,
// orders its lane after the input stream, enqueues the NCCL operation and polls it to completion
// under the deadline (sends return once enqueued). Tested in tests/comm/nccl_comm_test.cc.
#include <string>

#include "comm/nccl_comm.h"
#include "comm/nccl_comm_internal.h"

namespace loom::comm {

using core::ErrorCode;
using core::Status;

namespace {

ncclDataType_t nccl_type(DType t) { return t == DType::kF32 ? ncclFloat32 : ncclFloat64; }
const std::string kCollectiveDetail = "(some rank never joined the collective)";

}  // namespace

Status NcclComm::check_device_pointer(const std::string& call, const void* p) const {
  if (p == nullptr) return core::ok_status();
  cudaPointerAttributes attr{};
  const cudaError_t e = cudaPointerGetAttributes(&attr, p);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // not sticky: clear it
    return cuda_error(e, "cudaPointerGetAttributes", call, __FILE__, __LINE__);
  }
  if (attr.type == cudaMemoryTypeManaged) return core::ok_status();
  if (attr.type == cudaMemoryTypeDevice && attr.device == device_) return core::ok_status();
  if (attr.type == cudaMemoryTypeDevice) {
    return core::error(ErrorCode::kInvalidArgument,
                       "{}: buffer {} is on device {}, but this rank's device is {}", where(call),
                       p, attr.device, device_);
  }
  return core::error(ErrorCode::kInvalidArgument,
                     "{}: buffer {} is host memory; the NCCL backend takes device pointers "
                     "(cudaMalloc, cudaMallocAsync or managed memory)",
                     where(call), p);
}

Status NcclComm::record_enqueued_sends(Lane lane, const std::string& call) {
  for (PendingSend& s : sends_) {
    if (s.lane == lane && !s.recorded) {
      LOOM_NCCL_CUDA_CHECK(call, cudaEventRecord(s.done, stream_[lane]));
      s.recorded = true;
    }
  }
  return core::ok_status();
}

Status NcclComm::settle_lane(Lane lane, const std::string& call, Clock::time_point deadline) {
  LOOM_RETURN_IF_ERROR(wait_ready(
      lane, call, "(a send before it was still being set up: its peer never received)", deadline));
  return record_enqueued_sends(lane, call);
}

Status NcclComm::begin(Lane lane, const std::string& call, const void* a, const void* b,
                       Clock::time_point deadline) {
  if (!broken_.empty()) {
    return core::error(ErrorCode::kInternal, "{} refused: the group is unusable after: {}",
                       where(call), broken_);
  }
  LOOM_NCCL_CUDA_CHECK(call, cudaSetDevice(device_));
  LOOM_RETURN_IF_ERROR(check_device_pointer(call, a));
  LOOM_RETURN_IF_ERROR(check_device_pointer(call, b));
  LOOM_RETURN_IF_ERROR(reap_sends(false));
  LOOM_RETURN_IF_ERROR(settle_lane(lane, call, deadline));
  LOOM_NCCL_CUDA_CHECK(call, cudaEventRecord(input_ready_, input_stream_));
  LOOM_NCCL_CUDA_CHECK(call, cudaStreamWaitEvent(stream_[lane], input_ready_, 0));
  return core::ok_status();
}

Status NcclComm::reap_sends(bool wait_all) {
  const auto start = Clock::now();
  for (;;) {
    for (Lane lane : {kUp, kDown}) {  // record the sends whose enqueue NCCL has finished
      ncclResult_t state = ncclSuccess;
      if (comm_[lane] != nullptr) (void)ncclCommGetAsyncError(comm_[lane], &state);
      if (state == ncclInProgress) continue;
      if (state != ncclSuccess) {
        return break_group(
            nccl_error(state, lane, "ncclCommGetAsyncError", "send", __FILE__, __LINE__).message());
      }
      LOOM_RETURN_IF_ERROR(record_enqueued_sends(lane, "send"));
    }
    const auto now = Clock::now();
    for (auto it = sends_.begin(); it != sends_.end();) {
      const cudaError_t e = it->recorded ? cudaEventQuery(it->done) : cudaErrorNotReady;
      const std::string call = fmt::format("send of {} bytes to rank {}", it->bytes, it->peer);
      if (e == cudaSuccess) {
        (void)cudaEventDestroy(it->done);
        it = sends_.erase(it);
        continue;
      }
      if (e != cudaErrorNotReady) {
        return break_group(cuda_error(e, "cudaEventQuery", call, __FILE__, __LINE__).message());
      }
      if (now - it->start >= timeout()) {
        return break_group(fmt::format("{} timed out after {} (rank {} never received)",
                                       where(call), format_duration(timeout()), it->peer));
      }
      ++it;
    }
    if (!wait_all || sends_.empty()) return core::ok_status();
    nccl_detail::backoff(start);
  }
}

Status NcclComm::do_all_reduce(void* data, int64_t count, DType t, ReduceOp op) {
  const std::string call = "all_reduce";
  const auto deadline = Clock::now() + timeout();
  LOOM_RETURN_IF_ERROR(begin(kCollective, call, data, nullptr, deadline));
  if (count == 0) return core::ok_status();
  LOOM_NCCL_CHECK(
      kCollective, call,
      ncclAllReduce(data, data, count, nccl_type(t), op == ReduceOp::kSum ? ncclSum : ncclMax,
                    comm_[kCollective], stream_[kCollective]));
  return finish(kCollective, call, kCollectiveDetail, deadline);
}

core::Result<cudaEvent_t> NcclComm::all_reduce_sum_async(float* data, int64_t count,
                                                          cudaEvent_t ready) {
  const std::string call = "all_reduce (async)";
  const auto deadline = Clock::now() + timeout();
  if (!broken_.empty()) {
    return core::error(ErrorCode::kInternal, "{} refused: the group is unusable after: {}",
                       where(call), broken_);
  }
  LOOM_NCCL_CUDA_CHECK(call, cudaSetDevice(device_));
  LOOM_RETURN_IF_ERROR(check_device_pointer(call, data));
  LOOM_RETURN_IF_ERROR(reap_sends(false));
  LOOM_RETURN_IF_ERROR(settle_lane(kCollective, call, deadline));
  LOOM_NCCL_CUDA_CHECK(call, cudaStreamWaitEvent(stream_[kCollective], ready, 0));
  if (count > 0) {
    LOOM_NCCL_CHECK(kCollective, call,
                    ncclAllReduce(data, data, count, ncclFloat32, ncclSum, comm_[kCollective],
                                  stream_[kCollective]));
    // Only NCCL's enqueue is waited for here (non-blocking communicators may return
    // ncclInProgress); the reduction itself runs behind the caller's compute.
    LOOM_RETURN_IF_ERROR(wait_ready(kCollective, call, kCollectiveDetail, deadline));
  }
  cudaEvent_t done = nullptr;
  if (free_events_.empty()) {
    LOOM_NCCL_CUDA_CHECK(call, cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  } else {
    done = free_events_.back();
    free_events_.pop_back();
  }
  LOOM_NCCL_CUDA_CHECK(call, cudaEventRecord(done, stream_[kCollective]));
  async_.push_back({done, count, Clock::now()});
  return done;
}

core::Status NcclComm::wait_async() {
  while (!async_.empty()) {
    const PendingCollective& p = async_.front();
    LOOM_RETURN_IF_ERROR(poll_event(kCollective, p.done, "all_reduce (async)",
                                    fmt::format("of {} floats {}", p.count, kCollectiveDetail),
                                    p.start + timeout()));
    free_events_.push_back(p.done);
    async_.pop_front();
  }
  return core::ok_status();
}

// NCCL's in-place reduce-scatter writes chunk r at in + r * count; the interface's is out == in
// (chunk r at the start). Any overlap but NCCL's goes through a scratch chunk. On a timeout the
// scratch chunk is not freed (NCCL may still have been writing it when the group was aborted).
Status NcclComm::do_reduce_scatter(const void* in, void* out, int64_t count, DType t) {
  const std::string call = "reduce_scatter";
  const auto deadline = Clock::now() + timeout();
  LOOM_RETURN_IF_ERROR(begin(kCollective, call, in, out, deadline));
  if (count == 0) return core::ok_status();
  const int64_t chunk_bytes = count * dtype_bytes(t);
  const char* in_c = static_cast<const char*>(in);
  char* out_c = static_cast<char*>(out);
  const bool overlaps = out_c < in_c + size_ * chunk_bytes && in_c < out_c + chunk_bytes;
  void* scratch = nullptr;
  if (overlaps && out_c != in_c + rank_ * chunk_bytes) {
    LOOM_NCCL_CUDA_CHECK(call, cudaMallocAsync(&scratch, chunk_bytes, stream_[kCollective]));
  }
  LOOM_NCCL_CHECK(kCollective, call,
                  ncclReduceScatter(in, scratch != nullptr ? scratch : out, count, nccl_type(t),
                                    ncclSum, comm_[kCollective], stream_[kCollective]));
  if (scratch != nullptr) {
    LOOM_RETURN_IF_ERROR(wait_ready(kCollective, call, kCollectiveDetail, deadline));
    LOOM_NCCL_CUDA_CHECK(call, cudaMemcpyAsync(out, scratch, chunk_bytes, cudaMemcpyDeviceToDevice,
                                               stream_[kCollective]));
    LOOM_NCCL_CUDA_CHECK(call, cudaFreeAsync(scratch, stream_[kCollective]));
  }
  return finish(kCollective, call, kCollectiveDetail, deadline);
}

Status NcclComm::do_all_gather(const void* in, void* out, int64_t count, DType t) {
  const std::string call = "all_gather";
  const auto deadline = Clock::now() + timeout();
  LOOM_RETURN_IF_ERROR(begin(kCollective, call, in, out, deadline));
  if (count == 0) return core::ok_status();
  // The interface's in-place all-gather (in == out + rank * count) is NCCL's.
  LOOM_NCCL_CHECK(
      kCollective, call,
      ncclAllGather(in, out, count, nccl_type(t), comm_[kCollective], stream_[kCollective]));
  return finish(kCollective, call, kCollectiveDetail, deadline);
}

Status NcclComm::do_broadcast(void* data, int64_t count, DType t, int root) {
  const std::string call = fmt::format("broadcast from root {}", root);
  const auto deadline = Clock::now() + timeout();
  LOOM_RETURN_IF_ERROR(begin(kCollective, call, data, nullptr, deadline));
  if (count == 0) return core::ok_status();
  LOOM_NCCL_CHECK(kCollective, call,
                  ncclBroadcast(data, data, count, nccl_type(t), root, comm_[kCollective],
                                stream_[kCollective]));
  return finish(kCollective, call, kCollectiveDetail, deadline);
}

Status NcclComm::do_barrier() {
  const std::string call = "barrier";
  const auto deadline = Clock::now() + timeout();
  LOOM_RETURN_IF_ERROR(begin(kCollective, call, nullptr, nullptr, deadline));
  LOOM_RETURN_IF_ERROR(reap_sends(true));  // a barrier also means: my messages have arrived
  LOOM_NCCL_CHECK(kCollective, call,
                  ncclAllReduce(barrier_word_, barrier_word_, 1, ncclFloat32, ncclSum,
                                comm_[kCollective], stream_[kCollective]));
  return finish(kCollective, call, "(some rank never reached the barrier)", deadline);
}

// Messages to higher ranks travel on the up lane, to lower ranks on the down lane; a message to
// oneself is a copy on the collective lane (whose stream is idle between calls).
Status NcclComm::do_send(const void* data, int64_t bytes, int peer) {
  const std::string call = fmt::format("send of {} bytes to rank {}", bytes, peer);
  const auto deadline = Clock::now() + timeout();
  const Lane lane = peer == rank_ ? kCollective : peer > rank_ ? kUp : kDown;
  LOOM_RETURN_IF_ERROR(begin(lane, call, data, nullptr, deadline));
  if (bytes == 0) return core::ok_status();
  if (peer == rank_) return send_to_self(data, bytes, call);
  PendingSend s{.lane = lane, .peer = peer, .bytes = bytes, .start = Clock::now()};
  LOOM_NCCL_CUDA_CHECK(call, cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming));
  const ncclResult_t rc =
      ncclSend(data, static_cast<size_t>(bytes), ncclUint8, peer, comm_[lane], stream_[lane]);
  if (rc != ncclSuccess && rc != ncclInProgress) {
    (void)cudaEventDestroy(s.done);
    return nccl_error(rc, lane, "ncclSend", call, __FILE__, __LINE__);
  }
  // The first message between two ranks in a lane sets up their connection, which needs the
  // peer's recv: NCCL finishes the enqueue in the background and reap_sends records the event.
  sends_.push_back(s);
  return reap_sends(false);
}

Status NcclComm::do_recv(void* data, int64_t bytes, int peer) {
  const std::string call = fmt::format("recv of {} bytes from rank {}", bytes, peer);
  const auto deadline = Clock::now() + timeout();
  const Lane lane = peer == rank_ ? kCollective : peer < rank_ ? kUp : kDown;
  LOOM_RETURN_IF_ERROR(begin(lane, call, data, nullptr, deadline));
  if (bytes == 0) return core::ok_status();
  if (peer == rank_) return recv_from_self(data, bytes, call, deadline);
  LOOM_NCCL_CHECK(
      lane, call,
      ncclRecv(data, static_cast<size_t>(bytes), ncclUint8, peer, comm_[lane], stream_[lane]));
  return finish(lane, call, fmt::format("(rank {} never sent)", peer), deadline);
}

Status NcclComm::send_to_self(const void* data, int64_t bytes, const std::string& call) {
  SelfMessage m{.bytes = bytes};
  LOOM_NCCL_CUDA_CHECK(call, cudaMallocAsync(&m.buffer, bytes, stream_[kCollective]));
  self_messages_.push_back(m);
  LOOM_NCCL_CUDA_CHECK(
      call, cudaMemcpyAsync(m.buffer, data, bytes, cudaMemcpyDeviceToDevice, stream_[kCollective]));
  // The interface lets the caller reuse `data` once send returns; this copy is the buffering.
  LOOM_NCCL_CUDA_CHECK(call, cudaEventRecord(lane_done_[kCollective], stream_[kCollective]));
  return poll_event(kCollective, lane_done_[kCollective], call, "(copy to self)",
                    Clock::now() + timeout());
}

Status NcclComm::recv_from_self(void* data, int64_t bytes, const std::string& call,
                                Clock::time_point deadline) {
  if (self_messages_.empty()) {  // nobody else can send it: fail now rather than at the deadline
    return core::error(ErrorCode::kInvalidArgument,
                       "{}: no message from this rank to itself is pending (send it first)",
                       where(call));
  }
  const SelfMessage m = self_messages_.front();
  self_messages_.pop_front();
  if (m.bytes == bytes) {
    LOOM_NCCL_CUDA_CHECK(call, cudaMemcpyAsync(data, m.buffer, bytes, cudaMemcpyDeviceToDevice,
                                               stream_[kCollective]));
  }
  LOOM_NCCL_CUDA_CHECK(call, cudaFreeAsync(m.buffer, stream_[kCollective]));
  if (m.bytes != bytes) {
    return core::error(ErrorCode::kInvalidArgument, "{}: rank {} sent {} bytes", where(call), rank_,
                       m.bytes);
  }
  return finish(kCollective, call, "(copy from self)", deadline);
}

core::Result<std::unique_ptr<Communicator>> NcclComm::do_split(int color, int key,
                                                               std::string name) {
  const std::string call = fmt::format("split(color {}, key {})", color, key);
  const auto deadline = Clock::now() + timeout();
  LOOM_RETURN_IF_ERROR(begin(kCollective, call, nullptr, nullptr, deadline));
  ncclComm_t sub = nullptr;
  LOOM_RETURN_IF_ERROR(split_comm(color, key, name, call, deadline, &sub));
  int sub_size = 0, sub_rank = 0;
  if (ncclCommCount(sub, &sub_size) != ncclSuccess ||
      ncclCommUserRank(sub, &sub_rank) != ncclSuccess) {
    (void)ncclCommAbort(sub);
    return core::error(ErrorCode::kInternal, "{}: ncclCommCount/ncclCommUserRank failed at {}:{}",
                       where(call), __FILE__, __LINE__);
  }
  std::unique_ptr<NcclComm> child(new NcclComm(device_, sub_rank, sub_size, std::move(name)));
  child->comm_[kCollective] = sub;
  child->set_timeout(timeout());
  child->input_stream_ = input_stream_;
  Status s = child->init_resources();
  if (s.ok()) s = child->init_lanes(deadline);
  if (!s.ok()) {
    child->abort_all();
    return s;
  }
  return std::unique_ptr<Communicator>(std::move(child));
}

}  // namespace loom::comm
