// The NCCL backend (nccl_comm.h), part 1: creation (unique id, split, message lanes), the polling
// that turns every wait into a deadline, error reporting, teardown and the factories. The calls
// themselves are in nccl_comm_ops.cc. Tested in tests/comm/nccl_comm_test.cc (label gpu).
#include "comm/nccl_comm.h"

#include <cstring>
#include <thread>

#include "comm/nccl_comm_internal.h"

namespace loom::comm {

using core::ErrorCode;
using core::Status;
using nccl_detail::backoff;
using nccl_detail::poll_comm;

namespace nccl_detail {

ncclResult_t poll_comm(ncclComm_t comm, std::chrono::steady_clock::time_point deadline) {
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    ncclResult_t state = ncclInProgress;
    const ncclResult_t rc = ncclCommGetAsyncError(comm, &state);
    if (rc != ncclSuccess) return rc;
    if (state != ncclInProgress) return state;
    if (std::chrono::steady_clock::now() >= deadline) return ncclInProgress;
    backoff(start);
  }
}

void backoff(std::chrono::steady_clock::time_point start) {
  // Spin briefly (a small collective takes microseconds), then poll every 100 us so a rank that
  // waits for a slow peer does not hold a core (the MPI backend does the same).
  if (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(10)) {
    std::this_thread::yield();
  } else {
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
}

ncclConfig_t nonblocking_config(const std::string& name) {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  config.commName = name.c_str();  // NCCL's logs; `name` outlives the init
  return config;
}

}  // namespace nccl_detail

NcclComm::NcclComm(int device, int rank, int size, std::string name)
    : device_(device), rank_(rank), size_(size), name_(std::move(name)) {}

Status NcclComm::cuda_error(cudaError_t e, const char* expr, const std::string& call,
                            const char* file, int line) const {
  return core::error(ErrorCode::kInternal, "{}: {} failed at {}:{}: {}: {}", where(call), expr,
                     file, line, cudaGetErrorName(e), cudaGetErrorString(e));
}

Status NcclComm::nccl_error(ncclResult_t r, Lane lane, const char* expr, const std::string& call,
                            const char* file, int line) const {
  const char* last = comm_[lane] != nullptr ? ncclGetLastError(comm_[lane]) : nullptr;
  if (last == nullptr) last = "";
  const ErrorCode code = r == ncclInvalidArgument || r == ncclInvalidUsage
                             ? ErrorCode::kInvalidArgument
                             : ErrorCode::kInternal;
  return core::error(code, "{}: {} failed at {}:{}: {}{}{}{}", where(call), expr, file, line,
                     ncclGetErrorString(r), *last != '\0' ? " (" : "", last,
                     *last != '\0' ? ")" : "");
}

void NcclComm::abort_all() {
  for (ncclComm_t& c : comm_) {
    if (c != nullptr) (void)ncclCommAbort(c);  // frees the communicator; nothing to poll after
    c = nullptr;
  }
}

Status NcclComm::break_group(std::string message) {
  if (broken_.empty()) broken_ = message;
  abort_all();
  return Status(ErrorCode::kInternal, std::move(message));
}

Status NcclComm::wait_ready(Lane lane, const std::string& call, const std::string& detail,
                            Clock::time_point deadline) {
  const ncclResult_t state = poll_comm(comm_[lane], deadline);
  if (state == ncclSuccess) return core::ok_status();
  if (state == ncclInProgress) {
    return break_group(
        fmt::format("{} timed out after {} {}", where(call), format_duration(timeout()), detail));
  }
  return break_group(
      nccl_error(state, lane, "ncclCommGetAsyncError", call, __FILE__, __LINE__).message());
}

Status NcclComm::poll_event(Lane lane, cudaEvent_t event, const std::string& call,
                            const std::string& detail, Clock::time_point deadline) {
  const auto start = Clock::now();
  for (;;) {
    const cudaError_t e = cudaEventQuery(event);
    if (e == cudaSuccess) return core::ok_status();
    if (e != cudaErrorNotReady) {
      return break_group(cuda_error(e, "cudaEventQuery", call, __FILE__, __LINE__).message());
    }
    ncclResult_t state = ncclSuccess;
    (void)ncclCommGetAsyncError(comm_[lane], &state);
    if (state != ncclSuccess && state != ncclInProgress) {
      return break_group(
          nccl_error(state, lane, "ncclCommGetAsyncError", call, __FILE__, __LINE__).message());
    }
    if (Clock::now() >= deadline) {
      return break_group(
          fmt::format("{} timed out after {} {}", where(call), format_duration(timeout()), detail));
    }
    backoff(start);
  }
}

Status NcclComm::finish(Lane lane, const std::string& call, const std::string& detail,
                        Clock::time_point deadline) {
  LOOM_RETURN_IF_ERROR(wait_ready(lane, call, detail, deadline));  // NCCL has enqueued it
  LOOM_NCCL_CUDA_CHECK(call, cudaEventRecord(lane_done_[lane], stream_[lane]));
  return poll_event(lane, lane_done_[lane], call, detail, deadline);
}

Status NcclComm::init_resources() {
  const std::string call = "init";
  LOOM_NCCL_CUDA_CHECK(call, cudaSetDevice(device_));
  for (int lane = 0; lane < kLanes; ++lane) {
    LOOM_NCCL_CUDA_CHECK(call, cudaStreamCreateWithFlags(&stream_[lane], cudaStreamNonBlocking));
    LOOM_NCCL_CUDA_CHECK(call, cudaEventCreateWithFlags(&lane_done_[lane], cudaEventDisableTiming));
  }
  LOOM_NCCL_CUDA_CHECK(call, cudaEventCreateWithFlags(&input_ready_, cudaEventDisableTiming));
  void* word = nullptr;
  LOOM_NCCL_CUDA_CHECK(call, cudaMallocAsync(&word, sizeof(float), stream_[kCollective]));
  barrier_word_ = static_cast<float*>(word);
  LOOM_NCCL_CUDA_CHECK(call, cudaMemsetAsync(word, 0, sizeof(float), stream_[kCollective]));
  LOOM_NCCL_CUDA_CHECK(call, cudaStreamSynchronize(stream_[kCollective]));  // nothing NCCL yet
  return core::ok_status();
}

Status NcclComm::init_from_id(const ncclUniqueId& id, Clock::time_point deadline) {
  const std::string call = "ncclCommInitRankConfig";
  ncclConfig_t config = nccl_detail::nonblocking_config(name_);
  ncclUniqueId copy = id;  // NCCL takes it by value
  LOOM_NCCL_CHECK(kCollective, call,
                  ncclCommInitRankConfig(&comm_[kCollective], size_, copy, rank_, &config));
  return wait_ready(kCollective, call, "(some rank never joined the init)", deadline);
}

// Splits comm_[kCollective] into a new communicator (all ranks, or those of `color`); polls the
// child and the parent, since a non-blocking split may leave either in progress.
Status NcclComm::split_comm(int color, int key, const std::string& child_name,
                            const std::string& call, Clock::time_point deadline,
                            ncclComm_t* child) {
  ncclConfig_t config = nccl_detail::nonblocking_config(child_name);
  *child = nullptr;
  const ncclResult_t rc = ncclCommSplit(comm_[kCollective], color, key, child, &config);
  if (rc != ncclSuccess && rc != ncclInProgress) {
    if (*child != nullptr) (void)ncclCommAbort(*child);
    *child = nullptr;
    return nccl_error(rc, kCollective, "ncclCommSplit", call, __FILE__, __LINE__);
  }
  const std::string detail = "(some rank never joined the split)";
  ncclResult_t state = *child != nullptr ? poll_comm(*child, deadline) : ncclSuccess;
  if (state == ncclSuccess) state = poll_comm(comm_[kCollective], deadline);
  if (state == ncclSuccess) return core::ok_status();
  if (*child != nullptr) (void)ncclCommAbort(*child);
  *child = nullptr;
  if (state == ncclInProgress) {
    return break_group(
        fmt::format("{} timed out after {} {}", where(call), format_duration(timeout()), detail));
  }
  return break_group(
      nccl_error(state, kCollective, "ncclCommSplit", call, __FILE__, __LINE__).message());
}

// The message lanes: two more communicators over the same ranks (color 0, key = rank), so that
// a message's peer has the same rank number in its lane as in the group.
Status NcclComm::init_lanes(Clock::time_point deadline) {
  LOOM_RETURN_IF_ERROR(
      split_comm(0, rank_, name_, "split of the up message lane", deadline, &comm_[kUp]));
  return split_comm(0, rank_, name_, "split of the down message lane", deadline, &comm_[kDown]);
}

NcclComm::~NcclComm() {
  if (cudaSetDevice(device_) != cudaSuccess) return;
  // Sends still in flight read their buffers: wait for them (timed) unless the group is broken.
  if (broken_.empty() && !reap_sends(true).ok()) abort_all();
  const auto deadline = Clock::now() + timeout();
  for (ncclComm_t& c : comm_) {
    if (c == nullptr) continue;
    // Finalize flushes outstanding work and is non-blocking here: poll it (timed), then free.
    const ncclResult_t rc = ncclCommFinalize(c);
    const bool finalized =
        (rc == ncclSuccess || rc == ncclInProgress) && poll_comm(c, deadline) == ncclSuccess;
    (void)(finalized ? ncclCommDestroy(c) : ncclCommAbort(c));
    c = nullptr;
  }
  for (PendingSend& s : sends_) (void)cudaEventDestroy(s.done);
  for (PendingCollective& p : async_) (void)cudaEventDestroy(p.done);
  for (cudaEvent_t e : free_events_) (void)cudaEventDestroy(e);
  for (SelfMessage& m : self_messages_) (void)cudaFreeAsync(m.buffer, stream_[kCollective]);
  if (barrier_word_ != nullptr) (void)cudaFreeAsync(barrier_word_, stream_[kCollective]);
  for (int lane = 0; lane < kLanes; ++lane) {
    if (lane_done_[lane] != nullptr) (void)cudaEventDestroy(lane_done_[lane]);
    if (stream_[lane] != nullptr) (void)cudaStreamDestroy(stream_[lane]);  // does not block
  }
  if (input_ready_ != nullptr) (void)cudaEventDestroy(input_ready_);
}

core::Result<std::unique_ptr<NcclComm>> make_nccl_comm(const ncclUniqueId& id, int rank, int size,
                                                       int device, std::string name,
                                                       std::chrono::milliseconds timeout) {
  if (size < 1 || rank < 0 || rank >= size) {
    return core::error(ErrorCode::kInvalidArgument,
                       "make_nccl_comm: rank {} of {} ranks is not a rank (valid: 0..size-1)", rank,
                       size);
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_ptr<NcclComm> comm(new NcclComm(device, rank, size, std::move(name)));
  comm->set_timeout(timeout);
  Status s = comm->init_resources();
  if (s.ok()) s = comm->init_from_id(id, deadline);
  if (s.ok()) s = comm->init_lanes(deadline);
  if (!s.ok()) {
    comm->abort_all();
    return s.with_context(fmt::format("make_nccl_comm at {}:{}", __FILE__, __LINE__));
  }
  return comm;
}

namespace {

core::Result<int> pick_device(const LaunchInfo& info, int device) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    return core::error(ErrorCode::kInternal, "rank {}: cudaGetDeviceCount failed at {}:{}: {}: {}",
                       info.rank, __FILE__, __LINE__, cudaGetErrorName(e), cudaGetErrorString(e));
  }
  const int chosen = device >= 0 ? device : info.local_rank;
  if (chosen >= count) {
    return core::error(ErrorCode::kInvalidArgument,
                       "rank {}: device {} ({}) does not exist: {} CUDA devices are visible "
                       "(valid: 0..{})",
                       info.rank, chosen, device >= 0 ? "as asked" : "LOCAL_RANK", count,
                       count - 1);
  }
  return chosen;
}

}  // namespace

core::Result<std::unique_ptr<NcclComm>> make_nccl_world(const LaunchInfo& info,
                                                        const BootstrapMethod& method, int device,
                                                        std::chrono::milliseconds timeout) {
  const std::string context = fmt::format("make_nccl_world at {}:{}", __FILE__, __LINE__);
  auto chosen = pick_device(info, device);
  if (!chosen.ok()) return chosen.status().with_context(context);
  ncclUniqueId id{};
  if (info.rank == 0) {
    if (const cudaError_t e = cudaSetDevice(*chosen); e != cudaSuccess) {
      return core::error(ErrorCode::kInternal, "{}: rank 0: cudaSetDevice({}) failed: {}", context,
                         *chosen, cudaGetErrorString(e));
    }
    if (const ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess) {
      return core::error(ErrorCode::kInternal, "{}: rank 0: ncclGetUniqueId failed at {}:{}: {}",
                         context, __FILE__, __LINE__, ncclGetErrorString(r));
    }
  }
  const std::vector<uint8_t> blob(reinterpret_cast<const uint8_t*>(&id),
                                  reinterpret_cast<const uint8_t*>(&id) + sizeof(id));
  auto shared = bootstrap_blob(info, method, blob, timeout);
  if (!shared.ok()) return shared.status().with_context(context);
  if (shared->size() != sizeof(id)) {
    return core::error(ErrorCode::kInternal,
                       "{}: rank {}: bootstrap delivered {} bytes, not an "
                       "ncclUniqueId ({} bytes)",
                       context, info.rank, shared->size(), sizeof(id));
  }
  std::memcpy(&id, shared->data(), sizeof(id));
  auto comm = make_nccl_comm(id, info.rank, info.world_size, *chosen, "world", timeout);
  if (!comm.ok()) return comm.status().with_context(context);
  return comm;
}

}  // namespace loom::comm
