// The NCCL data-parallel group of the CUDA trainer: see cuda_data_parallel.h.
#include "trainer/cuda_data_parallel.h"

#include <fmt/format.h>

#include <chrono>
#include <vector>

#include "comm/launch_env.h"
#include "kernels/cuda/cuda_check.h"

#ifdef LOOM_WITH_NCCL
#include "comm/bootstrap.h"
#include "comm/nccl_comm.h"
#endif
#ifdef LOOM_WITH_MPI
#include "comm/mpi_comm.h"
#endif

namespace loom::train {

namespace {

#ifdef LOOM_WITH_NCCL
// GradReducer over an NcclComm: the gradient sums on NCCL's collective stream, each after an
// event recorded on the compute stream where its unit was complete.
class NcclGradReducer final : public GradReducer {
 public:
  explicit NcclGradReducer(std::unique_ptr<comm::NcclComm> comm) : comm_(std::move(comm)) {}
  ~NcclGradReducer() override {
    for (cudaEvent_t e : events_) (void)cudaEventDestroy(e);
    if (scalar_ != nullptr) (void)cudaFree(scalar_);
  }
  int size() const override { return comm_->size(); }

  core::Status start(float* data, int64_t count, cudaStream_t stream) override {
    if (next_ == events_.size()) {
      cudaEvent_t e = nullptr;
      LOOM_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
      events_.push_back(e);
    }
    cudaEvent_t ready = events_[next_++];
    LOOM_CUDA_CHECK(cudaEventRecord(ready, stream));
    LOOM_ASSIGN_OR_RETURN(cudaEvent_t done, comm_->all_reduce_sum_async(data, count, ready));
    done_.push_back(done);
    return core::ok_status();
  }

  core::Status finish(cudaStream_t stream) override {
    for (cudaEvent_t done : done_) LOOM_CUDA_CHECK(cudaStreamWaitEvent(stream, done, 0));
    done_.clear();
    next_ = 0;
    return comm_->wait_async();
  }

  core::Result<double> sum(double value) override {
    if (scalar_ == nullptr) LOOM_CUDA_CHECK(cudaMalloc(&scalar_, sizeof(double)));
    LOOM_CUDA_CHECK(cudaMemcpy(scalar_, &value, sizeof(double), cudaMemcpyHostToDevice));
    LOOM_RETURN_IF_ERROR(comm_->all_reduce(scalar_, 1, comm::ReduceOp::kSum));
    LOOM_CUDA_CHECK(cudaMemcpy(&value, scalar_, sizeof(double), cudaMemcpyDeviceToHost));
    return value;
  }

 private:
  std::unique_ptr<comm::NcclComm> comm_;
  std::vector<cudaEvent_t> events_;  // "unit ready" events, reused every iteration
  size_t next_ = 0;
  std::vector<cudaEvent_t> done_;    // the sums started this iteration (owned by comm_)
  double* scalar_ = nullptr;
};

core::Result<comm::BootstrapMethod> choose_bootstrap(const std::string& text,
                                                     const comm::LaunchInfo& info) {
  if (text != "auto") return comm::parse_bootstrap_method(text);
  if (info.source == "torchrun") return comm::BootstrapMethod{comm::BootstrapKind::kTcp, ""};
#ifdef LOOM_WITH_MPI
  if (info.source == "openmpi" || info.source == "slurm")
    return comm::BootstrapMethod{comm::BootstrapKind::kMpi, ""};
#endif
  return core::error(core::ErrorCode::kInvalidArgument,
                     "--bootstrap auto: no method for a {} launch in this build (give --bootstrap "
                     "tcp with MASTER_ADDR/MASTER_PORT set, or file:PATH on a shared filesystem)",
                     info.source);
}
#endif

}  // namespace

core::Result<CudaDataParallel> open_cuda_data_parallel(int64_t dp, const std::string& bootstrap,
                                                       double timeout_s) {
  LOOM_ASSIGN_OR_RETURN(const comm::LaunchInfo info, comm::launch_info_from_env());
  if (info.world_size != dp) {
    return core::error(core::ErrorCode::kInvalidArgument,
                       "--dp {} with --backend cuda runs one process per GPU, but the launch ({}) "
                       "started {} process{}; start {} (torchrun --nproc-per-node, mpirun -np, "
                       "srun -n)",
                       dp, info.source, info.world_size, info.world_size == 1 ? "" : "es", dp);
  }
#ifndef LOOM_WITH_NCCL
  (void)bootstrap;
  (void)timeout_s;
  return core::error(core::ErrorCode::kInvalidArgument,
                     "--dp {} with --backend cuda needs NCCL, and this loom was built without it "
                     "(install NCCL where CMake finds it, or set NCCL_HOME, and rebuild)",
                     dp);
#else
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  CudaDataParallel out;
  out.rank = info.rank;
  out.world = info.world_size;
  out.device = info.local_rank;
  out.launcher = info.source;
  std::unique_ptr<comm::NcclComm> comm;
  if (info.world_size == 1) {  // nothing to hand out: this process makes the id
    ncclUniqueId id;
    if (ncclGetUniqueId(&id) != ncclSuccess)
      return core::error(core::ErrorCode::kInternal, "ncclGetUniqueId failed");
    LOOM_ASSIGN_OR_RETURN(comm, comm::make_nccl_comm(id, 0, 1, out.device, "dp", timeout));
  } else {
    LOOM_ASSIGN_OR_RETURN(const comm::BootstrapMethod method, choose_bootstrap(bootstrap, info));
    out.mpi_bootstrap = method.kind == comm::BootstrapKind::kMpi;
    LOOM_ASSIGN_OR_RETURN(comm, comm::make_nccl_world(info, method, out.device, timeout));
  }
  comm->set_timeout(timeout);
  out.reducer = std::make_unique<NcclGradReducer>(std::move(comm));
  return out;
#endif
}

void close_cuda_data_parallel(CudaDataParallel& group) {
  group.reducer.reset();  // the NCCL group first: it may still talk to its peers
#ifdef LOOM_WITH_MPI
  if (group.mpi_bootstrap) comm::mpi_finalize();
#endif
  group.mpi_bootstrap = false;
}

}  // namespace loom::train
