// Communicator: the one collective interface of the parallel trainer (all-reduce, reduce-scatter,
// all-gather, broadcast, send/recv, barrier, split into sub-groups), with an in-process thread
// backend (thread_comm.h), an MPI backend (mpi_comm.h), both on host memory, and an NCCL backend
// (nccl_comm.h, loom_comm_nccl) on device memory: the pointers a backend is given live where it
// says. Every call has a timeout and every failure names the rank, the group and the call.
// Tested in tests/comm/ against serial references.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/status.h"

namespace loom::comm {

enum class ReduceOp { kSum, kMax };
enum class DType { kF32, kF64 };
const char* to_string(ReduceOp op);
const char* to_string(DType t);
int64_t dtype_bytes(DType t);

// Determinism contract (thread and MPI backends): a sum is computed as
//   out[i] = ((c_0[i] + c_1[i]) + c_2[i]) + ... + c_{n-1}[i]
// with c_r the contribution of rank r of the group, in rank order, whatever order the
// contributions arrive in, and every rank gets the same bits. The parallel trainer's
// equivalence tests compare bits against the single-rank run on these backends. The NCCL
// backend does not keep it: its rings and trees associate by algorithm and topology; every rank
// still gets the same bits, and pinning NCCL_ALGO/NCCL_PROTO makes runs on one machine
// reproducible (nccl_comm.h says exactly what holds).
//
// Usage (one object per rank, used by that rank's thread only):
//   auto world = make_thread_world(4);          // or make_mpi_world(&argc, &argv)
//   world[r]->set_timeout(std::chrono::seconds(10));
//   LOOM_RETURN_IF_ERROR(world[r]->all_reduce(grads, n, ReduceOp::kSum));
// A call that times out leaves the group unusable: later calls on it fail at once (with MPI the
// caller should MPI_Abort; mpi_comm.h). Collective calls must be made by every rank of the
// group in the same order with the same counts, dtype and root.
class Communicator {
 public:
  static constexpr std::chrono::milliseconds kDefaultTimeout{300'000};  // 300 s (issue 7)

  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const std::string& name() const = 0;  // "world", "tp[0,1]", ...

  // In place over `count` elements; every rank gets the result.
  core::Status all_reduce(float* data, int64_t count, ReduceOp op);
  core::Status all_reduce(double* data, int64_t count, ReduceOp op);
  // Sum of `in` (size() * count_per_rank elements); rank r gets chunk r in `out`. `out` may be
  // `in` (in place: the first count_per_rank elements are overwritten).
  core::Status reduce_scatter(const float* in, float* out, int64_t count_per_rank);
  core::Status reduce_scatter(const double* in, double* out, int64_t count_per_rank);
  // `out` (size() * count_per_rank elements) = every rank's `in`, in rank order. In place when
  // `in` == out + rank() * count_per_rank; no other overlap of `in` and `out` is allowed.
  core::Status all_gather(const float* in, float* out, int64_t count_per_rank);
  core::Status all_gather(const double* in, double* out, int64_t count_per_rank);
  // Root's `data` to every rank.
  core::Status broadcast(float* data, int64_t count, int root);
  core::Status broadcast(double* data, int64_t count, int root);
  // Point to point. A send is buffered: it returns without waiting for the matching recv (the
  // pipeline relies on it: neighbouring stages send to each other at once). Messages between
  // two ranks arrive in the order they were sent. Both sides must name the same byte count.
  core::Status send(const void* data, int64_t bytes, int peer);
  core::Status recv(void* data, int64_t bytes, int peer);
  core::Status barrier();
  // MPI_Comm_split: ranks with the same color (>= 0) form a group, ordered by (key, rank).
  // `name` names the new group in messages (default "<parent>/color<c>").
  core::Result<std::unique_ptr<Communicator>> split(int color, int key, std::string name = "");

  void set_timeout(std::chrono::milliseconds timeout) { timeout_ = timeout; }
  std::chrono::milliseconds timeout() const { return timeout_; }

 protected:
  virtual core::Status do_all_reduce(void* data, int64_t count, DType t, ReduceOp op) = 0;
  virtual core::Status do_reduce_scatter(const void* in, void* out, int64_t count, DType t) = 0;
  virtual core::Status do_all_gather(const void* in, void* out, int64_t count, DType t) = 0;
  virtual core::Status do_broadcast(void* data, int64_t count, DType t, int root) = 0;
  virtual core::Status do_send(const void* data, int64_t bytes, int peer) = 0;
  virtual core::Status do_recv(void* data, int64_t bytes, int peer) = 0;
  virtual core::Status do_barrier() = 0;
  virtual core::Result<std::unique_ptr<Communicator>> do_split(int color, int key,
                                                               std::string name) = 0;

  // "rank 1 of group 'world' (4 ranks): <call>": the prefix of every message.
  std::string where(const std::string& call) const;

 private:
  core::Status check_args(const char* call, int64_t count, const void* a, const void* b) const;
  core::Status check_rank(const char* call, const char* what, int peer) const;

  std::chrono::milliseconds timeout_ = kDefaultTimeout;
};

// out[i] = rank-order reduction of contributions[r][i] (the determinism contract above).
// `out` may alias none of the contributions.
void reduce_rank_order(DType t, ReduceOp op, const std::vector<const void*>& contributions,
                       int64_t count, void* out);

// "1.0 s" / "250 ms" for messages.
std::string format_duration(std::chrono::milliseconds d);

}  // namespace loom::comm
