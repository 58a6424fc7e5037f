// The MPI Communicator backend (Open MPI), for multi-process and multi-node CPU runs; built only
// when CMake finds MPI (LOOM_WITH_MPI). Every call is non-blocking (MPI_Iallgather, MPI_Ialltoall,
// MPI_Ibcast, MPI_Ibarrier, MPI_Isend/Irecv) polled with MPI_Test until the communicator's
// deadline, so a missing rank becomes an error naming the rank, the group and the call.
// Tested in tests/comm/mpi_comm_test.cc (ctest label `mpi`, run under mpirun -np 4).
#pragma once

#include <mpi.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace loom::comm {

// Determinism: all_reduce gathers every rank's whole buffer (MPI_Iallgather) and
// reduce_scatter exchanges chunks (MPI_Ialltoall); each rank then sums the contributions in rank
// order itself (reduce_rank_order). MPI_Allreduce would move less data (a ring moves 2(n-1)/n
// of the buffer per rank, the gather n-1 times it) but MPI leaves its association order to the
// implementation and the algorithm it picks per message size, so its sums are not reproducible
// across rank counts or versions; this backend trades that bandwidth for bit-reproducibility.
// Collectives run on buffers the communicator owns (the caller's data is copied in and out), so
// a call that times out never leaves MPI reading or writing the caller's memory.
// Not detected (unlike the thread backend): ranks calling different collectives or counts.
class MpiComm final : public Communicator {
 public:
  // Takes ownership of `comm` (freed in the destructor); errors on it return, not abort.
  MpiComm(MPI_Comm comm, std::string name);
  ~MpiComm() override;
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  MPI_Comm handle() const { return comm_; }

  // After a timeout, waits (up to timeout()) for the requests the timed-out call left pending,
  // for a program whose late ranks do arrive and that wants to shut down cleanly rather than
  // MPI_Abort. The group stays unusable for further calls.
  core::Status finish_abandoned();

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
  struct Pending {
    MPI_Request request = MPI_REQUEST_NULL;
    std::vector<char> buffer{};  // what MPI may still touch
    std::string call{};
  };
  struct PendingSend {
    Pending pending;
    int peer = -1;
    std::chrono::steady_clock::time_point start;
  };
  // Drops the sends that completed; with wait_all, waits for all of them. A send older than the
  // timeout breaks the group (its message names the peer that never received).
  core::Status reap_sends(bool wait_all);
  // Refuses calls on a group broken by a timeout; checks `count` fits MPI's int counts.
  core::Status check_usable(const std::string& call, int64_t count) const;
  // Polls `pending.request` until it completes or the deadline passes; on timeout the request
  // and its buffer move to abandoned_ and the group is marked broken.
  core::Status wait(Pending pending, std::vector<char>* done_buffer, const std::string& detail);
  // Every rank's `count` elements of `in`, in rank order, into *gathered (timed; for all_reduce
  // and all_gather).
  core::Status gather_all(const std::string& call, const void* in, int64_t count, DType t,
                          std::vector<char>* gathered);
  core::Status mpi_error(int rc, const char* mpi_call, const std::string& call, const char* file,
                         int line) const;

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  std::string name_;
  std::vector<Pending> abandoned_;
  std::vector<PendingSend> sends_;  // buffered sends not yet received
  std::string broken_;
};

// Initialises MPI (MPI_THREAD_SERIALIZED) unless already done and returns the world group
// (a duplicate of MPI_COMM_WORLD named "world").
core::Result<std::unique_ptr<Communicator>> make_mpi_world(int* argc, char*** argv);
// MPI_Finalize unless already finalized. Destroy every MpiComm first.
void mpi_finalize();
// Prints "rank R: <message>" to stderr and MPI_Abort(MPI_COMM_WORLD, 1): what main() does with
// a failed collective, since the other ranks may be stuck in it.
[[noreturn]] void mpi_abort(const core::Status& status);

}  // namespace loom::comm
