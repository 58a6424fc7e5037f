// The MPI backend (mpi_comm.h): non-blocking MPI calls polled until the deadline, rank-order sums
// over gathered contributions. Tested in tests/comm/mpi_comm_test.cc under mpirun -np 4.
#include "comm/mpi_comm.h"

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

namespace loom::comm {

using core::ErrorCode;
using core::Status;

// A failing MPI call becomes "rank R of group 'g' (n ranks): <call>: MPI_X failed at file:line".
#define LOOM_MPI_CHECK(call, expr)                                     \
  do {                                                                 \
    const int loom_mpi_rc_ = (expr);                                   \
    if (loom_mpi_rc_ != MPI_SUCCESS) {                                 \
      return mpi_error(loom_mpi_rc_, #expr, call, __FILE__, __LINE__); \
    }                                                                  \
  } while (0)

namespace {
MPI_Datatype mpi_type(DType t) { return t == DType::kF32 ? MPI_FLOAT : MPI_DOUBLE; }
}  // namespace

MpiComm::MpiComm(MPI_Comm comm, std::string name) : comm_(comm), name_(std::move(name)) {
  MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(comm_, &rank_);
  MPI_Comm_size(comm_, &size_);
}

MpiComm::~MpiComm() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  // MPI may still read the buffers of sends not yet received: wait for them (timed).
  if (!finalized && broken_.empty()) (void)reap_sends(true);
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

Status MpiComm::mpi_error(int rc, const char* mpi_call, const std::string& call, const char* file,
                          int line) const {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(rc, text, &length);
  return core::error(ErrorCode::kInternal, "{}: {} failed at {}:{}: {}", where(call), mpi_call,
                     file, line, std::string(text, length));
}

Status MpiComm::check_usable(const std::string& call, int64_t count) const {
  if (!broken_.empty()) {
    return core::error(ErrorCode::kInternal, "{} refused: the group is unusable after: {}",
                       where(call), broken_);
  }
  if (count > INT_MAX) {
    return core::error(ErrorCode::kInvalidArgument,
                       "{}: count {} exceeds MPI's int counts (max {}); split the call",
                       where(call), count, INT_MAX);
  }
  return core::ok_status();
}

Status MpiComm::wait(Pending pending, std::vector<char>* done_buffer, const std::string& detail) {
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + timeout();
  for (;;) {
    int done = 0;
    LOOM_MPI_CHECK(pending.call, MPI_Test(&pending.request, &done, MPI_STATUS_IGNORE));
    if (done) break;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      const std::string message = fmt::format("{} timed out after {} {}", where(pending.call),
                                              format_duration(timeout()), detail);
      broken_ = message;
      abandoned_.push_back(std::move(pending));
      return Status(ErrorCode::kInternal, message);
    }
    // Spin briefly (a collective of a few microseconds), then back off to 100 us polls so a
    // rank waiting for a slow peer does not hold a core.
    if (now - start < std::chrono::milliseconds(10)) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  if (done_buffer != nullptr) *done_buffer = std::move(pending.buffer);
  return core::ok_status();
}

Status MpiComm::finish_abandoned() {
  const auto deadline = std::chrono::steady_clock::now() + timeout();
  for (Pending& p : abandoned_) {
    for (int done = 0; !done;) {
      LOOM_MPI_CHECK(p.call, MPI_Test(&p.request, &done, MPI_STATUS_IGNORE));
      if (!done && std::chrono::steady_clock::now() >= deadline) {
        return core::error(ErrorCode::kInternal, "{}: still pending after {}", where(p.call),
                           format_duration(timeout()));
      }
      if (!done) std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  abandoned_.clear();
  return core::ok_status();
}

// A collective's contributions: the whole buffer of every rank, gathered in rank order.
#define LOOM_MPI_GATHER_DETAIL "(some rank never joined the collective)"

Status MpiComm::gather_all(const std::string& call, const void* in, int64_t count, DType t,
                           std::vector<char>* gathered) {
  LOOM_RETURN_IF_ERROR(check_usable(call, count));
  const int64_t bytes = count * dtype_bytes(t);
  Pending p{.call = call};
  p.buffer.resize(bytes * size_);
  if (bytes > 0) std::memcpy(p.buffer.data() + rank_ * bytes, in, bytes);
  LOOM_MPI_CHECK(call, MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, p.buffer.data(),
                                      static_cast<int>(count), mpi_type(t), comm_, &p.request));
  return wait(std::move(p), gathered, LOOM_MPI_GATHER_DETAIL);
}

Status MpiComm::do_all_reduce(void* data, int64_t count, DType t, ReduceOp op) {
  std::vector<char> gathered;
  LOOM_RETURN_IF_ERROR(gather_all("all_reduce", data, count, t, &gathered));
  const int64_t bytes = count * dtype_bytes(t);
  std::vector<const void*> contributions(size_);
  for (int r = 0; r < size_; ++r) contributions[r] = gathered.data() + r * bytes;
  reduce_rank_order(t, op, contributions, count, data);
  return core::ok_status();
}

Status MpiComm::do_reduce_scatter(const void* in, void* out, int64_t count, DType t) {
  const std::string call = "reduce_scatter";
  LOOM_RETURN_IF_ERROR(check_usable(call, count));
  const int64_t bytes = count * dtype_bytes(t);
  // One buffer: [0, n*bytes) what this rank sends (its input), [n*bytes, 2n*bytes) chunk `rank`
  // of every rank's input, in rank order.
  Pending p{.call = call};
  p.buffer.resize(2 * bytes * size_);
  if (bytes > 0) std::memcpy(p.buffer.data(), in, bytes * size_);
  LOOM_MPI_CHECK(call, MPI_Ialltoall(p.buffer.data(), static_cast<int>(count), mpi_type(t),
                                     p.buffer.data() + bytes * size_, static_cast<int>(count),
                                     mpi_type(t), comm_, &p.request));
  std::vector<char> exchanged;
  LOOM_RETURN_IF_ERROR(wait(std::move(p), &exchanged, LOOM_MPI_GATHER_DETAIL));
  std::vector<const void*> contributions(size_);
  for (int r = 0; r < size_; ++r) contributions[r] = exchanged.data() + (size_ + r) * bytes;
  reduce_rank_order(t, ReduceOp::kSum, contributions, count, out);
  return core::ok_status();
}

Status MpiComm::do_all_gather(const void* in, void* out, int64_t count, DType t) {
  std::vector<char> gathered;
  LOOM_RETURN_IF_ERROR(gather_all("all_gather", in, count, t, &gathered));
  if (!gathered.empty()) std::memcpy(out, gathered.data(), gathered.size());
  return core::ok_status();
}

Status MpiComm::do_broadcast(void* data, int64_t count, DType t, int root) {
  const std::string call = fmt::format("broadcast from root {}", root);
  LOOM_RETURN_IF_ERROR(check_usable(call, count));
  const int64_t bytes = count * dtype_bytes(t);
  Pending p{.call = call};
  p.buffer.resize(bytes);
  if (rank_ == root && bytes > 0) std::memcpy(p.buffer.data(), data, bytes);
  LOOM_MPI_CHECK(call, MPI_Ibcast(p.buffer.data(), static_cast<int>(count), mpi_type(t), root,
                                  comm_, &p.request));
  std::vector<char> received;
  LOOM_RETURN_IF_ERROR(wait(std::move(p), &received, LOOM_MPI_GATHER_DETAIL));
  if (rank_ != root && bytes > 0) std::memcpy(data, received.data(), bytes);
  return core::ok_status();
}

namespace {
constexpr int kSendRecvTag = 7;  // one tag for all Loom point-to-point messages (issue 7)
}  // namespace

// Buffered: the message is copied and posted (MPI_Isend) and the call returns; the send
// completes when the peer receives it. A pipeline needs this: two stages that send to each other
// at the same time (an activation one way, a gradient the other) would each wait for the
// other's receive if sends waited for completion (MPI's rendezvous protocol above the eager
// limit). Pending sends are reaped at the next send and waited for, under the timeout, by
// barrier() and the destructor, so a peer that never receives still becomes an error.
Status MpiComm::do_send(const void* data, int64_t bytes, int peer) {
  const std::string call = fmt::format("send of {} bytes to rank {}", bytes, peer);
  LOOM_RETURN_IF_ERROR(check_usable(call, bytes));
  LOOM_RETURN_IF_ERROR(reap_sends(false));
  PendingSend s{.pending = {.call = call}, .peer = peer, .start = std::chrono::steady_clock::now()};
  const char* c = static_cast<const char*>(data);
  s.pending.buffer.assign(c, c + bytes);
  LOOM_MPI_CHECK(call, MPI_Isend(s.pending.buffer.data(), static_cast<int>(bytes), MPI_BYTE, peer,
                                 kSendRecvTag, comm_, &s.pending.request));
  sends_.push_back(std::move(s));
  return core::ok_status();
}

Status MpiComm::reap_sends(bool wait_all) {
  for (;;) {
    const auto now = std::chrono::steady_clock::now();
    std::vector<PendingSend> left;
    for (PendingSend& s : sends_) {
      int done = 0;
      LOOM_MPI_CHECK(s.pending.call, MPI_Test(&s.pending.request, &done, MPI_STATUS_IGNORE));
      if (done) continue;
      if (now - s.start >= timeout()) {
        const std::string message =
            fmt::format("{} timed out after {} (rank {} never received)", where(s.pending.call),
                        format_duration(timeout()), s.peer);
        broken_ = message;
        for (PendingSend& p : sends_) abandoned_.push_back(std::move(p.pending));
        sends_.clear();
        return Status(ErrorCode::kInternal, message);
      }
      left.push_back(std::move(s));
    }
    sends_ = std::move(left);
    if (!wait_all || sends_.empty()) return core::ok_status();
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

Status MpiComm::do_recv(void* data, int64_t bytes, int peer) {
  const std::string call = fmt::format("recv of {} bytes from rank {}", bytes, peer);
  LOOM_RETURN_IF_ERROR(check_usable(call, bytes));
  // One byte more than expected, so that a longer message shows up as a size mismatch rather
  // than an MPI truncation error.
  Pending p{.call = call};
  p.buffer.resize(bytes + 1);
  LOOM_MPI_CHECK(call, MPI_Irecv(p.buffer.data(), static_cast<int>(bytes + 1), MPI_BYTE, peer,
                                 kSendRecvTag, comm_, &p.request));
  const auto start = std::chrono::steady_clock::now();
  MPI_Status status;
  for (int done = 0; !done;) {
    LOOM_MPI_CHECK(call, MPI_Test(&p.request, &done, &status));
    if (done) break;
    if (std::chrono::steady_clock::now() - start >= timeout()) {
      // A receive can be cancelled (MPI 3.1 section 3.8.4), so nothing is left pending.
      MPI_Cancel(&p.request);
      MPI_Wait(&p.request, MPI_STATUS_IGNORE);
      const std::string message = fmt::format("{} timed out after {} (rank {} never sent)",
                                              where(call), format_duration(timeout()), peer);
      broken_ = message;
      return Status(ErrorCode::kInternal, message);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  int received = 0;
  MPI_Get_count(&status, MPI_BYTE, &received);
  if (received != bytes) {
    return core::error(ErrorCode::kInvalidArgument, "{}: rank {} sent {} bytes", where(call), peer,
                       received);
  }
  if (bytes > 0) std::memcpy(data, p.buffer.data(), bytes);
  return core::ok_status();
}

Status MpiComm::do_barrier() {
  LOOM_RETURN_IF_ERROR(check_usable("barrier", 0));
  LOOM_RETURN_IF_ERROR(reap_sends(true));  // a barrier also means: my messages have arrived
  Pending p{.call = "barrier"};
  LOOM_MPI_CHECK(p.call, MPI_Ibarrier(comm_, &p.request));
  return wait(std::move(p), nullptr, "(some rank never reached the barrier)");
}

core::Result<std::unique_ptr<Communicator>> MpiComm::do_split(int color, int key,
                                                              std::string name) {
  const std::string call = fmt::format("split(color {}, key {})", color, key);
  LOOM_RETURN_IF_ERROR(check_usable(call, 0));
  // MPI has no non-blocking MPI_Comm_split: a timed all-gather of (color, key) first proves that
  // every rank has arrived, so the blocking split that follows cannot hang on a missing rank.
  Pending p{.call = call};
  p.buffer.resize(2 * sizeof(int) * size_);
  const int mine[2] = {color, key};
  std::memcpy(p.buffer.data() + rank_ * sizeof(mine), mine, sizeof(mine));
  LOOM_MPI_CHECK(call, MPI_Iallgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, p.buffer.data(), 2,
                                      MPI_INT, comm_, &p.request));
  LOOM_RETURN_IF_ERROR(wait(std::move(p), nullptr, "(some rank never joined the split)"));
  MPI_Comm sub = MPI_COMM_NULL;
  LOOM_MPI_CHECK(call, MPI_Comm_split(comm_, color, key, &sub));
  auto comm = std::make_unique<MpiComm>(sub, std::move(name));
  comm->set_timeout(timeout());
  return std::unique_ptr<Communicator>(std::move(comm));
}

core::Result<std::unique_ptr<Communicator>> make_mpi_world(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS) {
      return core::error(ErrorCode::kInternal, "MPI_Init_thread failed");
    }
  }
  MPI_Comm world = MPI_COMM_NULL;
  if (MPI_Comm_dup(MPI_COMM_WORLD, &world) != MPI_SUCCESS) {
    return core::error(ErrorCode::kInternal, "MPI_Comm_dup(MPI_COMM_WORLD) failed");
  }
  return std::unique_ptr<Communicator>(std::make_unique<MpiComm>(world, "world"));
}

void mpi_finalize() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void mpi_abort(const core::Status& status) {
  int rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::fprintf(stderr, "rank %d: %s\n", rank, status.message().c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  std::abort();  // MPI_Abort does not return; this keeps [[noreturn]] honest
}

}  // namespace loom::comm
