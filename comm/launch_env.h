// Where this process sits in a multi-process launch, read from the launcher's environment the
// way the ecosystem spells it: torchrun (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT),
// Open MPI's mpirun (OMPI_COMM_WORLD_RANK / _LOCAL_RANK / _SIZE) or Slurm's srun (SLURM_PROCID,
// SLURM_LOCALID, SLURM_NTASKS); none of them means a single process. Tested in
// tests/comm/launch_env_test.cc.
#pragma once

#include <string>

#include "core/status.h"

namespace loom::comm {

struct LaunchInfo {
  int rank = 0;
  int local_rank = 0;
  int world_size = 1;
  std::string master_addr;        // torchrun only; empty when not set
  int master_port = 0;            // torchrun only; 0 when not set
  std::string source = "single";  // "torchrun", "openmpi", "slurm" or "single"
};

// Precedence torchrun > Open MPI > Slurm > single process (torchrun inside an salloc sets both;
// mpirun under Slurm sets both). A launcher is detected by its rank variable; its size variable
// must then be present. Non-numeric values, rank >= world size, negative values or a port
// outside 1..65535 are errors naming the variable and the value.
core::Result<LaunchInfo> launch_info_from_env();

}  // namespace loom::comm
