// `loom devices`: the CUDA devices this machine has, or why there are none (no driver, a
// build without CUDA). Exit code 0 either way: having no GPU is a fact, not an error.
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/table.h"
#ifdef LOOM_WITH_CUDA
#include "kernels/device_query.h"
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
