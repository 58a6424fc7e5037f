// Shared by nccl_comm.cc and nccl_comm_ops.cc (not a public header): the checks that turn a
// failing CUDA or NCCL call into "rank R of group 'g' (n ranks): <call>: <expr> failed at
// file:line: <error>", and the polling helpers.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <string>

// Inside NcclComm members: a failing CUDA call returns its error (the group stays usable; the
// caller decides whether the failure breaks it).
#define LOOM_NCCL_CUDA_CHECK(call, expr)                                 \
  do {                                                                   \
    const cudaError_t loom_cuda_rc_ = (expr);                            \
    if (loom_cuda_rc_ != cudaSuccess) {                                  \
      return cuda_error(loom_cuda_rc_, #expr, call, __FILE__, __LINE__); \
    }                                                                    \
  } while (0)

// A failing NCCL call on `lane`'s communicator; ncclInProgress is not a failure (non-blocking
// communicators return it while they work; wait_ready polls until they are done).
#define LOOM_NCCL_CHECK(lane, call, expr)                                      \
  do {                                                                         \
    const ncclResult_t loom_nccl_rc_ = (expr);                                 \
    if (loom_nccl_rc_ != ncclSuccess && loom_nccl_rc_ != ncclInProgress) {     \
      return nccl_error(loom_nccl_rc_, lane, #expr, call, __FILE__, __LINE__); \
    }                                                                          \
  } while (0)

namespace loom::comm::nccl_detail {

// The state of `comm` once it leaves ncclInProgress: ncclSuccess or an error; ncclInProgress
// when the deadline passed first.
ncclResult_t poll_comm(ncclComm_t comm, std::chrono::steady_clock::time_point deadline);
// One poll interval: yields for the first 10 ms after `start`, then sleeps 100 us.
void backoff(std::chrono::steady_clock::time_point start);
// NCCL_CONFIG_INITIALIZER with blocking = 0 and `name` as NCCL's commName.
ncclConfig_t nonblocking_config(const std::string& name);

}  // namespace loom::comm::nccl_detail
