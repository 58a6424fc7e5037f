// The NCCL Communicator backend: the parallel trainer's collectives on GPUs, one rank per device
// (loom_comm_nccl, built when CUDA and NCCL are found; defines LOOM_WITH_NCCL). Every pointer
// passed to it is device memory (cudaMalloc / cudaMallocAsync / managed). Communicators are
// non-blocking (ncclConfig_t::blocking = 0); each call enqueues and polls until it is done or the
// deadline passes, then aborts the group with an error naming the rank, the group and the call.
// Tested in tests/comm/nccl_comm_test.cc (label gpu: skips without a device).
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "comm/bootstrap.h"
#include "comm/communicator.h"
#include "comm/launch_env.h"

namespace loom::comm {

// Determinism: NCCL breaks the rank-order contract of communicator.h. Its rings and trees split a
// buffer into chunks and add the contributions in an order set by the algorithm (ring, tree,
// NVLS, CollNet), the protocol and the channel count NCCL picks per message size and topology, so
// a sum is not ((c_0 + c_1) + c_2) + ... in general. What NCCL does give: every rank of one
// call gets the same bits (the result is computed once and copied, for ring and tree alike), and
// on a fixed machine, NCCL version and rank count the same call gives the same bits run after run
// when NCCL_ALGO and NCCL_PROTO pin the choice (e.g. NCCL_ALGO=Ring NCCL_PROTO=Simple). With two
// ranks there is one addition per element, and a + b == b + a, so two-rank sums do match the
// thread backend bit for bit. max is exact in any order.
//
// Streams: each communicator owns three non-blocking CUDA streams, one per lane (collectives,
// messages to higher ranks, messages to lower ranks). Every call first makes its lane wait (on the
// GPU, cudaStreamWaitEvent) for the work queued so far on the input stream, by default the legacy
// default stream (which also covers every blocking stream the caller created); callers that
// compute on their own non-blocking stream name it with set_input_stream(). Collectives, recv and
// barrier return when their result is in device memory.
//
// send/recv: a send enqueues ncclSend and returns (buffered, as the interface requires); its buffer
// must stay valid and unmodified until the send has completed, i.e. until the peer's recv has
// returned or this rank's next barrier() returns. NCCL's send is not buffered on the GPU (it ends
// when the matching recv runs), so messages travel on two extra communicators split from the
// group: "up" carries messages from lower to higher ranks, "down" from higher to lower, each on
// its own stream. Two ranks sending to each other at once (neighbouring pipeline stages) then
// never wait on each other, and per direction the sends and recvs of a pair match in order. What
// remains: on one rank, the sends to higher ranks and the recvs from lower ranks share the "up"
// lane and complete in issue order (likewise "down"), so a recv waits for this rank's earlier
// sends in its lane to be received. A program that needs deeper buffering than that deadlocks
// here (the timeout reports it) where the thread and MPI backends would proceed. A message to
// oneself is a device-to-device copy through a buffer this rank owns (NCCL pairs a self send and
// recv only inside one group call). The byte counts of a send and its recv must match; NCCL
// does not check it.
//
// Errors: a failing CUDA or NCCL call reads "rank R of group 'g' (n ranks): <call>: <function>
// failed at nccl_comm.cc:LINE: <error> (<ncclGetLastError>)". A timeout or an asynchronous NCCL
// error aborts every NCCL communicator of this object (ncclCommAbort) and leaves it unusable.
// While a send is pending, an implicitly device-synchronising CUDA call of the caller
// (cudaDeviceSynchronize, cudaFree) waits for it with no timeout.
//
// Cost: three NCCL communicators per group (collectives, up, down); NCCL connects peers lazily
// (NCCL_RUNTIME_CONNECT, on by default), so an unused lane holds little device memory. The first
// message between two ranks in a lane sets up their connection, which needs the peer's recv; a
// second call on that lane before then waits for it (under the timeout). The destructor waits
// up to timeout() for pending sends and for NCCL's finalize, then aborts what is left.
class NcclComm final : public Communicator {
 public:
  ~NcclComm() override;
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  int device() const { return device_; }
  // The stream whose queued work produces the buffers this communicator reads (see above).
  void set_input_stream(cudaStream_t stream) { input_stream_ = stream; }

  // Asynchronous in-place fp32 sum, for overlapping a reduction with compute (the data-parallel
  // gradient buckets of trainer/cuda_data_parallel.h during backward, as PyTorch DDP and
  // Megatron's overlap_grad_reduce do): the collective lane waits on the GPU for `ready` (an
  // event the caller recorded once `data` was complete; the input stream is not consulted),
  // NCCL enqueues the all-reduce, and the call returns without waiting for it. The returned
  // event is recorded after it on the lane: a stream that reads `data` next waits for it
  // (cudaStreamWaitEvent). wait_async() is the watchdog: it polls every pending reduction
  // against timeout() from its start and aborts the group past it, naming the reduction.
  // Later calls on the collective lane (synchronous ones included) run after these, in order.
  core::Result<cudaEvent_t> all_reduce_sum_async(float* data, int64_t count, cudaEvent_t ready);
  core::Status wait_async();
  std::size_t pending_async() const { return async_.size(); }

 protected:
  core::Status do_all_reduce(void* data, int64_t count, DType t, ReduceOp op) override;
  core::Status do_reduce_scatter(const void* in, void* out, int64_t count, DType t) override;
  core::Status do_all_gather(const void* in, void* out, int64_t count, DType t) override;
  core::Status do_broadcast(void* data, int64_t count, DType t, int root) override;
  core::Status do_send(const void* data, int64_t bytes, int peer) override;
  core::Status do_recv(void* data, int64_t bytes, int peer) override;
  core::Status do_barrier() override;
  core::Result<std::unique_ptr<Communicator>> do_split(int color, int key,
                                                       std::string name) override;

 private:
  friend core::Result<std::unique_ptr<NcclComm>> make_nccl_comm(const ncclUniqueId&, int, int, int,
                                                                std::string,
                                                                std::chrono::milliseconds);
  using Clock = std::chrono::steady_clock;
  enum Lane { kCollective = 0, kUp = 1, kDown = 2, kLanes = 3 };
  struct PendingSend {
    Lane lane = kUp;
    cudaEvent_t done = nullptr;
    bool recorded = false;  // `done` is recorded once NCCL has enqueued the send
    int peer = -1;
    int64_t bytes = 0;
    std::chrono::steady_clock::time_point start;
  };
  struct PendingCollective {
    cudaEvent_t done = nullptr;
    int64_t count = 0;
    Clock::time_point start;
  };
  struct SelfMessage {
    void* buffer = nullptr;  // device, stream-ordered on the collective lane
    int64_t bytes = 0;
  };

  NcclComm(int device, int rank, int size, std::string name);
  // Streams, events and the barrier word; then comm_[kCollective] from the unique id (or a
  // split, in do_split); then the two message lanes.
  core::Status init_resources();
  core::Status init_from_id(const ncclUniqueId& id, Clock::time_point deadline);
  core::Status init_lanes(Clock::time_point deadline);
  core::Status split_comm(int color, int key, const std::string& child_name,
                          const std::string& call, Clock::time_point deadline, ncclComm_t* child);
  // Polls comm_[lane] until the operation NCCL is running on it (init, split, enqueue) is done;
  // on the deadline or an NCCL error aborts and breaks the group.
  core::Status wait_ready(Lane lane, const std::string& call, const std::string& detail,
                          Clock::time_point deadline);
  // After enqueueing on `lane`: waits for NCCL's enqueue, records an event and polls it (and
  // NCCL's asynchronous error state) until the work is done or the deadline passes.
  core::Status finish(Lane lane, const std::string& call, const std::string& detail,
                      Clock::time_point deadline);
  core::Status poll_event(Lane lane, cudaEvent_t event, const std::string& call,
                          const std::string& detail, Clock::time_point deadline);
  // Common to every call: a usable group, the device current, device pointers, finished sends
  // dropped, `lane` settled (a send's enqueue done) and ordered after the input stream.
  core::Status begin(Lane lane, const std::string& call, const void* a, const void* b,
                     Clock::time_point deadline);
  core::Status check_device_pointer(const std::string& call, const void* p) const;
  // Records the completion events of sends whose enqueue has finished, drops completed sends;
  // with wait_all, waits for all. A send older than timeout() breaks the group.
  core::Status reap_sends(bool wait_all);
  core::Status settle_lane(Lane lane, const std::string& call, Clock::time_point deadline);
  core::Status record_enqueued_sends(Lane lane, const std::string& call);
  core::Status break_group(std::string message);
  void abort_all();
  core::Status cuda_error(cudaError_t e, const char* expr, const std::string& call,
                          const char* file, int line) const;
  core::Status nccl_error(ncclResult_t r, Lane lane, const char* expr, const std::string& call,
                          const char* file, int line) const;
  core::Status send_to_self(const void* data, int64_t bytes, const std::string& call);
  core::Status recv_from_self(void* data, int64_t bytes, const std::string& call,
                              Clock::time_point deadline);

  int device_, rank_, size_;
  std::string name_;
  ncclComm_t comm_[kLanes] = {nullptr, nullptr, nullptr};
  cudaStream_t stream_[kLanes] = {nullptr, nullptr, nullptr};
  cudaEvent_t input_ready_ = nullptr, lane_done_[kLanes] = {nullptr, nullptr, nullptr};
  cudaStream_t input_stream_ = cudaStreamLegacy;
  float* barrier_word_ = nullptr;  // device, one fp32 for barrier()
  std::deque<PendingSend> sends_;
  std::deque<SelfMessage> self_messages_;
  std::deque<PendingCollective> async_;
  std::vector<cudaEvent_t> free_events_;  // the async reductions' events, reused
  std::string broken_;
};

// One rank of a new NCCL group from an id every rank shares (ncclGetUniqueId on one rank, handed
// to the others by bootstrap.h): sets `device` current on the calling thread, initialises the
// group (non-blocking, polled until `timeout`) and its two message lanes. Every rank of the group
// calls it at the same time, each with its own device.
core::Result<std::unique_ptr<NcclComm>> make_nccl_comm(const ncclUniqueId& id, int rank, int size,
                                                       int device, std::string name,
                                                       std::chrono::milliseconds timeout);

// The world group of a launch: device `device` (LOCAL_RANK when negative), ncclGetUniqueId on
// rank 0, the id to every rank by `method` (bootstrap.h), then make_nccl_comm(..., "world").
// With BootstrapKind::kMpi the caller calls mpi_finalize() at exit.
core::Result<std::unique_ptr<NcclComm>> make_nccl_world(const LaunchInfo& info,
                                                        const BootstrapMethod& method, int device,
                                                        std::chrono::milliseconds timeout);

}  // namespace loom::comm
