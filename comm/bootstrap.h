// Bootstrap: hands an opaque blob (NCCL's 128-byte ncclUniqueId) from rank 0 to every rank of a
// launch before any GPU communicator exists, over a Communicator (MPI or threads), a TCP
// rendezvous at torchrun's MASTER_ADDR:MASTER_PORT, or a file on a shared filesystem written
// atomically. No CUDA. Every wait has a deadline and every failure names the rank, the address or
// path, and what went wrong. Tested in tests/comm/bootstrap_test.cc (and under mpirun in
// tests/comm/mpi_comm_test.cc).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "comm/communicator.h"
#include "comm/launch_env.h"
#include "core/status.h"

namespace loom::comm {

// Usage (every rank of the launch, e.g. before ncclCommInitRank):
//   LOOM_ASSIGN_OR_RETURN(BootstrapMethod method, parse_bootstrap_method("tcp"));
//   LOOM_ASSIGN_OR_RETURN(LaunchInfo info, launch_info_from_env());
//   std::vector<uint8_t> id(128);  // filled on rank 0 only (ncclGetUniqueId)
//   LOOM_ASSIGN_OR_RETURN(id, bootstrap_blob(info, method, id, std::chrono::seconds(300)));
// Rank 0's `blob` is what every rank gets back; the other ranks' `blob` is ignored.
enum class BootstrapKind {
  kMpi,   // MPI_COMM_WORLD (builds with LOOM_WITH_MPI only)
  kTcp,   // rank 0 serves MASTER_ADDR:MASTER_PORT
  kFile,  // rank 0 writes `path` on a filesystem every rank sees
};

struct BootstrapMethod {
  BootstrapKind kind = BootstrapKind::kTcp;
  std::string path;  // kFile only
};

// "mpi", "tcp" or "file:<path>"; anything else is an error naming the value and these three.
core::Result<BootstrapMethod> parse_bootstrap_method(std::string_view text);
std::string to_string(const BootstrapMethod& method);  // the spelling parse accepts

// The chooser: rank 0's `blob` to every rank of `info`'s launch by `method`, within `timeout`.
// kFile uses bootstrap_run_token_from_env() as the run token.
core::Result<std::vector<uint8_t>> bootstrap_blob(const LaunchInfo& info,
                                                  const BootstrapMethod& method,
                                                  const std::vector<uint8_t>& blob,
                                                  std::chrono::milliseconds timeout);

// Rank 0 of `comm` broadcasts `blob` (its length, then the bytes packed into fp64 words: a
// broadcast copies, it never adds, so every bit pattern survives) under comm.timeout(). Works on
// every backend (threads, MPI); a call on the NCCL backend would need device pointers.
core::Result<std::vector<uint8_t>> bootstrap_via_communicator(Communicator& comm,
                                                              const std::vector<uint8_t>& blob);

#ifdef LOOM_WITH_MPI
// Initialises MPI if needed (MPI_THREAD_SERIALIZED; the caller calls mpi_finalize() at exit) and
// broadcasts over a duplicate of MPI_COMM_WORLD. `info` must agree with MPI's rank and size.
core::Result<std::vector<uint8_t>> bootstrap_via_mpi(const LaunchInfo& info,
                                                     const std::vector<uint8_t>& blob,
                                                     std::chrono::milliseconds timeout);
#endif

// TCP rendezvous. Rank 0 listens on every local address at info.master_port (SO_REUSEADDR; the
// wildcard address, because MASTER_ADDR may name this host by an address it cannot bind, e.g. a
// hostname mapped to 127.0.1.1 locally) and answers world_size - 1 clients; each client connects
// to info.master_addr:master_port, retrying every 100 ms until the deadline, sends a hello
// (magic, protocol version, its rank, its world size) and gets the blob back. A hello whose world
// size differs from rank 0's, or a rank out of range or seen twice, is rejected: the client gets
// rank 0's reason, and rank 0 fails with the same one. A connection that sends no valid hello
// within 2 s (a port scanner, a health check) is dropped and does not count.
// Errors read "rank 2: TCP rendezvous with 127.0.0.1:29500 timed out after 5.0 s (rank 0 never
// answered; last attempt: connect: Connection refused)".
core::Result<std::vector<uint8_t>> bootstrap_via_tcp(const LaunchInfo& info,
                                                     const std::vector<uint8_t>& blob,
                                                     std::chrono::milliseconds timeout);

// Shared-filesystem file. Rank 0 writes `<path>.tmp.<pid>`, fsyncs it and renames it to `path`
// (atomic on POSIX filesystems, so nobody sees a partial file); the other ranks poll every 20 ms
// until `path` holds a file for this run. The file is a header (magic "LOOMBLOB", format version,
// world size, run-token and blob lengths), the run token, then the blob.
// - A file with another run token is a stale one from an earlier run: readers keep waiting for
//   rank 0 to replace it (the timeout message says so).
// - A file that is not a Loom bootstrap file, is truncated, or has this run's token but another
//   world size is an error naming the path (remove it).
// - With an empty run token, a stale file from an earlier run of the same world size cannot be
//   told apart: delete `path` before launching, or set LOOM_RUN_ID (bootstrap_run_token_from_env).
// Nobody deletes `path` afterwards (rank 0 cannot know when the last reader is done); with a
// run token the leftover is harmless.
core::Result<std::vector<uint8_t>> bootstrap_via_file(const LaunchInfo& info,
                                                      const std::string& path,
                                                      const std::string& run_token,
                                                      const std::vector<uint8_t>& blob,
                                                      std::chrono::milliseconds timeout);

// The first of LOOM_RUN_ID, TORCHELASTIC_RUN_ID, SLURM_JOB_ID (+ "." SLURM_STEP_ID) and
// PMIX_NAMESPACE (Open MPI) that is set and non-empty, else "". Every rank of one launch sees the
// same value; a value that repeats across runs (torchrun's default rdzv id "none") protects
// nothing.
std::string bootstrap_run_token_from_env();

}  // namespace loom::comm
