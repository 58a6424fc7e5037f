// `loom devices`: the CUDA devices this machine has, or why there are none (no driver, a
// build without CUDA), and the libraries the CUDA backend finds: cuDNN (loaded at run time,
// for --attention cudnn) and NCCL (--dp over GPUs). Exit code 0 either way: having no GPU is a
// fact, not an error.
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/table.h"
#ifdef LOOM_WITH_CUDA
#include "kernels/device_query.h"
#endif
#ifdef LOOM_WITH_CUDNN
#include "kernels/cuda/cudnn_api.h"
#endif
#ifdef LOOM_WITH_NCCL
#include <nccl.h>
#endif

namespace loom::cli {

namespace {

core::Status run_devices(bool json) {
  nlohmann::json out = nlohmann::json::object();
  out["devices"] = nlohmann::json::array();
#ifdef LOOM_WITH_CUDA
  const kernels::CudaDeviceList list = kernels::query_cuda_devices();
  out["cuda_build"] = true;
  out["runtime_version"] = list.runtime_version;
  out["driver_version"] = list.driver_version;
  Table t;
  for (const char* h : {"index", "name", "memory GiB", "SMs", "compute capability"}) t.add_column(h);
  for (const auto& d : list.devices) {
    out["devices"].push_back({{"index", d.index},
                              {"name", d.name},
                              {"memory_gib", d.memory_gib},
                              {"sm_count", d.sm_count},
                              {"compute_capability", fmt::format("{}.{}", d.compute_capability_major,
                                                                 d.compute_capability_minor)}});
    t.add_row({std::to_string(d.index), d.name, fmt::format("{:.2f}", d.memory_gib),
               std::to_string(d.sm_count),
               fmt::format("{}.{}", d.compute_capability_major, d.compute_capability_minor)});
  }
  if (!list.devices.empty()) {
    if (!json) std::cout << t.render();
  } else {
    out["no_device_reason"] = list.no_device_reason;
    if (!json) std::cout << "no CUDA device: " << list.no_device_reason << "\n";
  }
  // Libraries: what the attention and data-parallel paths will find.
  std::string cudnn = "not in this build (no cuDNN headers)";
#ifdef LOOM_WITH_CUDNN
  std::string why;
  const kernels::cuda::CudnnApi* api = kernels::cuda::cudnn_api(&why);
  cudnn = api != nullptr ? fmt::format("{} (version {})", api->library, api->version) : why;
  out["cudnn_version"] = api != nullptr ? static_cast<int64_t>(api->version) : 0;
#endif
  std::string nccl = "not in this build (NCCL not found)";
#ifdef LOOM_WITH_NCCL
  int nccl_version = 0;
  nccl = ncclGetVersion(&nccl_version) == ncclSuccess ? fmt::format("version {}", nccl_version)
                                                      : std::string("ncclGetVersion failed");
  out["nccl_version"] = nccl_version;
#endif
  out["cudnn"] = cudnn;
  out["nccl"] = nccl;
  if (!json) std::cout << "cuDNN: " << cudnn << "\nNCCL: " << nccl << "\n";
#else
  out["cuda_build"] = false;
  out["no_device_reason"] = "this loom was built without CUDA (LOOM_CUDA=OFF or no nvcc found)";
  if (!json) std::cout << "no CUDA device: " << out["no_device_reason"].get<std::string>() << "\n";
#endif
  if (json) std::cout << out.dump(2) << "\n";
  return core::ok_status();
}

}  // namespace

CommandRunner register_devices_command(CLI::App& app) {
  auto json = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("devices", "list the CUDA devices of this machine");
  cmd->add_flag("--json", *json, "print JSON");
  return [cmd, json]() { return cmd->parsed() ? run_devices(*json) : core::ok_status(); };
}

}  // namespace loom::cli
