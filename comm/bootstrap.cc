// Bootstrap (bootstrap.h): the method parser and chooser, the Communicator (MPI, threads) variant
// and the shared-filesystem file variant; the TCP rendezvous is in bootstrap_tcp.cc. Tested in
// tests/comm/bootstrap_test.cc.
#include "comm/bootstrap.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "comm/bootstrap_internal.h"
#ifdef LOOM_WITH_MPI
#include "comm/mpi_comm.h"
#endif

namespace loom::comm {

using bootstrap_detail::errno_text;
using bootstrap_detail::get_u32;
using bootstrap_detail::kMaxBlobBytes;
using bootstrap_detail::put_u32;
using core::ErrorCode;
using core::Status;
using Blob = std::vector<uint8_t>;

core::Result<BootstrapMethod> parse_bootstrap_method(std::string_view text) {
  if (text == "tcp") return BootstrapMethod{BootstrapKind::kTcp, ""};
  if (text == "mpi") {
#ifdef LOOM_WITH_MPI
    return BootstrapMethod{BootstrapKind::kMpi, ""};
#else
    return core::error(ErrorCode::kInvalidArgument,
                       "bootstrap method 'mpi' needs MPI, which this build lacks (CMake found no "
                       "MPI); use 'tcp' or 'file:<path>'");
#endif
  }
  if (text.starts_with("file:")) {
    std::string path(text.substr(5));
    if (path.empty()) {
      return core::error(ErrorCode::kInvalidArgument,
                         "bootstrap method 'file:' names no path (expected file:<path> on a "
                         "filesystem every rank sees, e.g. file:/shared/run42/nccl_id)");
    }
    return BootstrapMethod{BootstrapKind::kFile, std::move(path)};
  }
  return core::error(ErrorCode::kInvalidArgument,
                     "unknown bootstrap method '{}' (expected 'mpi', 'tcp' or 'file:<path>')",
                     text);
}

std::string to_string(const BootstrapMethod& method) {
  switch (method.kind) {
    case BootstrapKind::kMpi:
      return "mpi";
    case BootstrapKind::kTcp:
      return "tcp";
    case BootstrapKind::kFile:
      return "file:" + method.path;
  }
  return "?";
}

std::string bootstrap_run_token_from_env() {
  auto get = [](const char* name) {
    const char* v = std::getenv(name);
    return std::string(v != nullptr ? v : "");
  };
  if (std::string v = get("LOOM_RUN_ID"); !v.empty()) return v;
  // torchrun's default --rdzv-id is "none" in every run: no better than no token.
  if (std::string v = get("TORCHELASTIC_RUN_ID"); !v.empty() && v != "none") return v;
  if (std::string v = get("SLURM_JOB_ID"); !v.empty()) {
    const std::string step = get("SLURM_STEP_ID");
    return step.empty() ? v : v + "." + step;
  }
  return get("PMIX_NAMESPACE");
}

core::Result<Blob> bootstrap_via_communicator(Communicator& comm, const Blob& blob) {
  const std::string context = fmt::format("bootstrap over group '{}'", comm.name());
  // fp64 holds every integer up to 2^53 exactly, far above kMaxBlobBytes.
  double length = comm.rank() == 0 ? static_cast<double>(blob.size()) : -1.0;
  if (comm.rank() == 0 && blob.size() > kMaxBlobBytes) {
    return core::error(ErrorCode::kInvalidArgument, "{}: blob of {} bytes exceeds {} bytes",
                       context, blob.size(), kMaxBlobBytes);
  }
  LOOM_RETURN_IF_ERROR(comm.broadcast(&length, 1, 0).with_context(context));
  if (!(length >= 0 && length <= kMaxBlobBytes) || std::floor(length) != length) {
    return core::error(ErrorCode::kInternal, "{}: rank 0 announced a blob of {} bytes", context,
                       length);
  }
  const size_t bytes = static_cast<size_t>(length);
  std::vector<double> packed((bytes + sizeof(double) - 1) / sizeof(double), 0.0);
  if (comm.rank() == 0 && bytes > 0) std::memcpy(packed.data(), blob.data(), bytes);
  LOOM_RETURN_IF_ERROR(
      comm.broadcast(packed.data(), static_cast<int64_t>(packed.size()), 0).with_context(context));
  Blob out(bytes);
  if (bytes > 0) std::memcpy(out.data(), packed.data(), bytes);
  return out;
}

#ifdef LOOM_WITH_MPI
core::Result<Blob> bootstrap_via_mpi(const LaunchInfo& info, const Blob& blob,
                                     std::chrono::milliseconds timeout) {
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> world, make_mpi_world(nullptr, nullptr));
  if (world->rank() != info.rank || world->size() != info.world_size) {
    return core::error(ErrorCode::kInvalidArgument,
                       "rank {}: MPI bootstrap: MPI_COMM_WORLD has this process as rank {} of {} "
                       "but the launch environment ({}) says rank {} of {}",
                       info.rank, world->rank(), world->size(), info.source, info.rank,
                       info.world_size);
  }
  world->set_timeout(timeout);
  return bootstrap_via_communicator(*world, blob);
}
#endif

// ---- shared-filesystem file -------------------------------------------------------------------

namespace {

constexpr char kFileMagic[8] = {'L', 'O', 'O', 'M', 'B', 'L', 'O', 'B'};
constexpr uint32_t kFileVersion = 1;
constexpr size_t kFileHeaderBytes = 8 + 4 * 4;  // magic, version, world size, token and blob bytes
constexpr std::chrono::milliseconds kFilePoll{20};  // a stat per rank every 20 ms: cheap on NFS

Blob encode_file(int world_size, const std::string& token, const Blob& blob) {
  Blob out(kFileMagic, kFileMagic + 8);
  put_u32(&out, kFileVersion);
  put_u32(&out, static_cast<uint32_t>(world_size));
  put_u32(&out, static_cast<uint32_t>(token.size()));
  put_u32(&out, static_cast<uint32_t>(blob.size()));
  out.insert(out.end(), token.begin(), token.end());
  out.insert(out.end(), blob.begin(), blob.end());
  return out;
}

Status write_all(int fd, const Blob& bytes, const std::string& path) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return core::error(ErrorCode::kIo, "rank 0: writing {} failed: {}", path, errno_text(errno));
    }
    done += static_cast<size_t>(n);
  }
  return core::ok_status();
}

// <path>.tmp.<pid>, fsync, rename: readers see either no file or the whole file.
Status write_file_atomically(const std::string& path, const Blob& bytes) {
  const std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return core::error(ErrorCode::kIo, "rank 0: cannot create bootstrap file {}: {}", tmp,
                       errno_text(errno));
  }
  Status status = write_all(fd, bytes, tmp);
  if (status.ok() && ::fsync(fd) != 0) {
    status = core::error(ErrorCode::kIo, "rank 0: fsync of {} failed: {}", tmp, errno_text(errno));
  }
  ::close(fd);
  if (status.ok() && ::rename(tmp.c_str(), path.c_str()) != 0) {
    status = core::error(ErrorCode::kIo, "rank 0: renaming {} to {} failed: {}", tmp, path,
                         errno_text(errno));
  }
  if (!status.ok()) ::unlink(tmp.c_str());
  return status;
}

struct FileRead {
  bool present = false;     // `path` exists
  bool this_run = false;    // and carries this run's token
  std::string other_token;  // its token when !this_run
  Blob blob;                // when this_run
};

// The whole of `path`; *present = false (and no bytes) when it does not exist.
core::Result<Blob> read_whole_file(int rank, const std::string& path, bool* present) {
  constexpr size_t kMaxFileBytes = kMaxBlobBytes + (1u << 16);  // the blob, header and token
  *present = false;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Blob{};
    return core::error(ErrorCode::kIo, "rank {}: cannot open bootstrap file {}: {}", rank, path,
                       errno_text(errno));
  }
  *present = true;
  Blob bytes;
  uint8_t chunk[4096];
  int error = 0;
  for (;;) {
    const ssize_t n = ::read(fd, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) error = errno;
    if (n <= 0 || bytes.size() > kMaxFileBytes) break;
    bytes.insert(bytes.end(), chunk, chunk + n);
  }
  ::close(fd);
  if (error != 0) {
    return core::error(ErrorCode::kIo, "rank {}: reading bootstrap file {} failed: {}", rank, path,
                       errno_text(error));
  }
  if (bytes.size() > kMaxFileBytes) {
    return core::error(ErrorCode::kParse,
                       "rank {}: bootstrap file {} is over {} bytes, larger than any bootstrap "
                       "file; remove it",
                       rank, path, kMaxFileBytes);
  }
  return bytes;
}

core::Result<FileRead> read_bootstrap_file(const LaunchInfo& info, const std::string& path,
                                           const std::string& token) {
  FileRead result;
  LOOM_ASSIGN_OR_RETURN(const Blob bytes, read_whole_file(info.rank, path, &result.present));
  if (!result.present) return result;
  const std::string bad = fmt::format("rank {}: bootstrap file {}", info.rank, path);
  if (bytes.size() < 8 || std::memcmp(bytes.data(), kFileMagic, 8) != 0) {
    return core::error(ErrorCode::kParse,
                       "{} is not a Loom bootstrap file (no LOOMBLOB magic at its start); "
                       "remove it",
                       bad);
  }
  if (bytes.size() < kFileHeaderBytes) {
    return core::error(ErrorCode::kParse,
                       "{} is truncated: {} bytes, shorter than its {}-byte "
                       "header; remove it",
                       bad, bytes.size(), kFileHeaderBytes);
  }
  const uint32_t version = get_u32(&bytes[8]), world = get_u32(&bytes[12]);
  const uint32_t token_bytes = get_u32(&bytes[16]), blob_bytes = get_u32(&bytes[20]);
  if (version != kFileVersion) {
    return core::error(ErrorCode::kParse, "{} has format version {}; this build reads version {}",
                       bad, version, kFileVersion);
  }
  const uint64_t expected = uint64_t{kFileHeaderBytes} + token_bytes + blob_bytes;
  if (bytes.size() != expected) {
    return core::error(ErrorCode::kParse,
                       "{} is truncated or corrupt: {} bytes, but its header announces {}; "
                       "remove it",
                       bad, bytes.size(), expected);
  }
  const auto token_begin = bytes.begin() + kFileHeaderBytes;
  const std::string file_token(token_begin, token_begin + token_bytes);
  if (file_token != token) {
    result.other_token = file_token;
    return result;
  }
  if (static_cast<int>(world) != info.world_size) {
    return core::error(ErrorCode::kInvalidArgument,
                       "{} was written for a {}-rank launch but this launch has {} ranks (a stale "
                       "file from an earlier run? remove it, or set LOOM_RUN_ID to a per-run "
                       "value)",
                       bad, world, info.world_size);
  }
  result.this_run = true;
  result.blob.assign(token_begin + token_bytes, bytes.end());
  return result;
}

}  // namespace

core::Result<Blob> bootstrap_via_file(const LaunchInfo& info, const std::string& path,
                                      const std::string& run_token, const Blob& blob,
                                      std::chrono::milliseconds timeout) {
  if (info.rank == 0) {
    if (blob.size() > kMaxBlobBytes || run_token.size() > (1u << 16) - kFileHeaderBytes) {
      return core::error(ErrorCode::kInvalidArgument,
                         "rank 0: blob of {} bytes or run token of {} bytes too large for "
                         "bootstrap file {}",
                         blob.size(), run_token.size(), path);
    }
    LOOM_RETURN_IF_ERROR(
        write_file_atomically(path, encode_file(info.world_size, run_token, blob)));
    return blob;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool saw_stale = false;
  std::string stale_token;
  for (;;) {
    LOOM_ASSIGN_OR_RETURN(FileRead read, read_bootstrap_file(info, path, run_token));
    if (read.this_run) return std::move(read.blob);
    if (read.present) {
      saw_stale = true;
      stale_token = read.other_token;
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(kFilePoll);
  }
  std::string why = "rank 0 never wrote it";
  if (saw_stale) {
    why = fmt::format(
        "found a stale one from run '{}', but this run is '{}'; rank 0 never wrote "
        "this run's",
        stale_token, run_token);
  }
  return core::error(ErrorCode::kInternal,
                     "rank {}: bootstrap file {} did not appear within {} ({})", info.rank, path,
                     format_duration(timeout), why);
}

// ---- chooser ---------------------------------------------------------------------------------

core::Result<Blob> bootstrap_blob(const LaunchInfo& info, const BootstrapMethod& method,
                                  const Blob& blob, std::chrono::milliseconds timeout) {
  if (info.world_size < 1 || info.rank < 0 || info.rank >= info.world_size) {
    return core::error(ErrorCode::kInvalidArgument,
                       "bootstrap: rank {} of world size {} is not a rank (valid: 0..world size-1)",
                       info.rank, info.world_size);
  }
  switch (method.kind) {
    case BootstrapKind::kMpi:
#ifdef LOOM_WITH_MPI
      return bootstrap_via_mpi(info, blob, timeout);
#else
      return core::error(ErrorCode::kInvalidArgument,
                         "rank {}: bootstrap method 'mpi' needs MPI, which this build lacks",
                         info.rank);
#endif
    case BootstrapKind::kTcp:
      return bootstrap_via_tcp(info, blob, timeout);
    case BootstrapKind::kFile:
      return bootstrap_via_file(info, method.path, bootstrap_run_token_from_env(), blob, timeout);
  }
  return core::error(ErrorCode::kInternal, "bootstrap: unknown method");
}

}  // namespace loom::comm
