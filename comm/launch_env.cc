// Reads the launcher's environment (launch_env.h). Tested in tests/comm/launch_env_test.cc.
#include "comm/launch_env.h"

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <optional>

namespace loom::comm {
namespace {

using core::ErrorCode;

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr) return std::nullopt;
  return std::string(v);
}

// The variable as a non-negative int; absent -> `fallback`, absent without fallback -> error.
core::Result<int> env_int(const char* name, const char* launcher, std::optional<int> fallback) {
  const std::optional<std::string> v = env(name);
  if (!v) {
    if (fallback) return *fallback;
    return core::error(ErrorCode::kInvalidArgument, "{} launch: {} is not set", launcher, name);
  }
  errno = 0;
  char* end = nullptr;
  const long value = std::strtol(v->c_str(), &end, 10);
  if (v->empty() || *end != '\0' || errno != 0 || value < 0 || value > INT_MAX) {
    return core::error(ErrorCode::kInvalidArgument,
                       "{} launch: {}='{}' is not a non-negative integer", launcher, name, *v);
  }
  return static_cast<int>(value);
}

struct Names {
  const char* source;
  const char* rank;
  const char* local_rank;
  const char* size;
};

core::Result<LaunchInfo> read_launcher(const Names& n) {
  LaunchInfo info;
  info.source = n.source;
  LOOM_ASSIGN_OR_RETURN(info.rank, env_int(n.rank, n.source, std::nullopt));
  LOOM_ASSIGN_OR_RETURN(info.world_size, env_int(n.size, n.source, std::nullopt));
  // torchrun and mpirun always set the local rank; without it a single node is the best guess.
  LOOM_ASSIGN_OR_RETURN(info.local_rank, env_int(n.local_rank, n.source, info.rank));
  if (info.world_size < 1) {
    return core::error(ErrorCode::kInvalidArgument, "{} launch: {}={} (must be >= 1)", n.source,
                       n.size, info.world_size);
  }
  if (info.rank >= info.world_size) {
    return core::error(ErrorCode::kInvalidArgument, "{} launch: {}={} is not below {}={}", n.source,
                       n.rank, info.rank, n.size, info.world_size);
  }
  if (info.local_rank > info.rank) {
    return core::error(ErrorCode::kInvalidArgument, "{} launch: {}={} exceeds {}={}", n.source,
                       n.local_rank, info.local_rank, n.rank, info.rank);
  }
  return info;
}

}  // namespace

core::Result<LaunchInfo> launch_info_from_env() {
  if (env("RANK")) {
    LOOM_ASSIGN_OR_RETURN(LaunchInfo info,
                          read_launcher({"torchrun", "RANK", "LOCAL_RANK", "WORLD_SIZE"}));
    info.master_addr = env("MASTER_ADDR").value_or("");
    LOOM_ASSIGN_OR_RETURN(info.master_port, env_int("MASTER_PORT", "torchrun", 0));
    if (env("MASTER_PORT") && (info.master_port < 1 || info.master_port > 65535)) {
      return core::error(ErrorCode::kInvalidArgument,
                         "torchrun launch: MASTER_PORT={} is not a port (1..65535)",
                         info.master_port);
    }
    return info;
  }
  if (env("OMPI_COMM_WORLD_RANK")) {
    return read_launcher(
        {"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_SIZE"});
  }
  if (env("SLURM_PROCID")) {
    return read_launcher({"slurm", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS"});
  }
  return LaunchInfo{};
}

}  // namespace loom::comm
