// Data parallelism for the CUDA trainer (`loom train --backend cuda --dp N`): one process per
// GPU, launched as users launch PyTorch or Megatron jobs (torchrun, mpirun, srun; comm/
// launch_env.h), the ranks joined in an NCCL group (comm/nccl_comm.h; NCCL's unique id handed
// out by comm/bootstrap.h), ZeRO-0: every rank holds the weights and AdamW state and sums the
// gradients. The sums overlap the backward: CudaTrainer starts each unit's all-reduce (a block,
// the embedding, the head: 1/(L + 2) of the gradients each, the bucket size of Megatron's
// per-layer buckets) as soon as the last micro-batch's backward has completed it, on NCCL's own
// stream, and the optimizer waits for all of them (NcclComm::all_reduce_sum_async, whose
// watchdog aborts the group past --comm-timeout). Tested on a GPU in
// tests/trainer/cuda_data_parallel_gpu_test.cc (one rank through the whole path; two ranks
// where two GPUs exist).
#pragma once

#include <memory>
#include <string>

#include "core/status.h"
#include "trainer/cuda_transformer.h"

namespace loom::train {

struct CudaDataParallel {
  std::unique_ptr<GradReducer> reducer;
  int rank = 0, world = 1, device = 0;
  std::string launcher;  // "single", "torchrun", "openmpi", "slurm"
  bool mpi_bootstrap = false;  // MPI was initialised to hand out NCCL's id
};

// The data-parallel group of this process for `dp` ranks: the launch (comm::launch_info_from_env)
// must have started `dp` processes (one when not launched); device = the local rank. bootstrap:
// "auto" (tcp under torchrun, mpi under mpirun or srun when built with MPI), "tcp", "mpi" or
// "file:PATH" (comm/bootstrap.h). One rank needs no bootstrap. Errors name the launcher, the
// counts and the method; a build without NCCL says so.
core::Result<CudaDataParallel> open_cuda_data_parallel(int64_t dp, const std::string& bootstrap,
                                                       double timeout_s);

// Ends the group: the NCCL communicator, then MPI when the bootstrap initialised it.
void close_cuda_data_parallel(CudaDataParallel& group);

}  // namespace loom::train
