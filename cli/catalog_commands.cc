// `loom models` and `loom clusters`: the shipped presets and profiles with their key figures.
// A preset that fails to load is reported with its error (and makes the command fail), so a
// broken data file never hides.
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/table.h"
#include "core/cluster_profile.h"
#include "core/data_paths.h"
#include "core/model_io.h"
#include "core/quantity.h"

namespace loom::cli {

namespace {

core::Status run_models(bool json) {
  Table t;
  for (const char* h : {"name", "family", "layers", "hidden", "heads/kv", "ffn", "vocab", "seq",
                        "mlp", "position", "params", "published", "diff %"}) {
    t.add_column(h, std::string(h) == "name" || std::string(h) == "family" ? Table::Align::kLeft
                                                                            : Table::Align::kRight);
  }
  nlohmann::json out = nlohmann::json::array();
  core::Status first_error;
  for (const auto& name : core::list_data_files("models")) {
    auto spec = core::load_model(name);
    if (!spec.ok()) {
      std::cerr << "error: " << spec.status().message() << "\n";
      if (first_error.ok()) first_error = spec.status();
      continue;
    }
    const auto& m = *spec;
    const double params = static_cast<double>(m.total_params());
    const double diff = m.published_params > 0 ? 100.0 * (params / m.published_params - 1.0) : 0.0;
    t.add_row({m.name, m.family, std::to_string(m.num_layers), std::to_string(m.hidden_size),
               fmt::format("{}/{}", m.num_heads, m.num_kv_heads), std::to_string(m.ffn_hidden_size),
               std::to_string(m.vocab_size), std::to_string(m.max_seq_len), core::to_string(m.mlp),
               core::to_string(m.position), core::format_count(params),
               m.published_params > 0 ? core::format_count(m.published_params) : "-",
               m.published_params > 0 ? fmt::format("{:+.2f}", diff) : "-"});
    nlohmann::json j = nlohmann::json::object();
    j["name"] = m.name;
    j["family"] = m.family;
    j["num_layers"] = m.num_layers;
    j["hidden_size"] = m.hidden_size;
    j["num_heads"] = m.num_heads;
    j["num_kv_heads"] = m.num_kv_heads;
    j["ffn_hidden_size"] = m.ffn_hidden_size;
    j["vocab_size"] = m.vocab_size;
    j["max_seq_len"] = m.max_seq_len;
    j["params"] = m.total_params();
    j["published_params"] = m.published_params;
    out.push_back(j);
  }
  if (json) {
    std::cout << out.dump(2) << "\n";
  } else {
    std::cout << t.render();
  }
  return first_error;
}

std::string optional_number(const std::optional<double>& v, const char* format) {
  return v ? fmt::format(fmt::runtime(format), *v) : "-";
}

core::Status run_clusters(bool json) {
  Table t;
  for (const char* h : {"name", "device", "mem GiB", "bf16 TF", "HBM GB/s", "GPUs/node",
                        "intra GB/s", "inter-node", "storage GB/s", "fail/GPU-h", "$/GPU-h"}) {
    t.add_column(h, std::string(h) == "name" || std::string(h) == "device" ? Table::Align::kLeft
                                                                            : Table::Align::kRight);
  }
  nlohmann::json out = nlohmann::json::array();
  core::Status first_error;
  for (const auto& name : core::list_data_files("cluster_profiles")) {
    auto profile = core::load_cluster_profile(name);
    if (!profile.ok()) {
      std::cerr << "error: " << profile.status().message() << "\n";
      if (first_error.ok()) first_error = profile.status();
      continue;
    }
    const auto& c = *profile;
    t.add_row({c.name, c.device.name, fmt::format("{:.1f}", c.device.memory_gib),
               fmt::format("{:.4g}", c.device.peak_tflops_bf16),
               fmt::format("{:.0f}", c.device.memory_bandwidth_gb_s), std::to_string(c.gpus_per_node),
               fmt::format("{:.0f}", c.intra_node.bandwidth_gb_s),
               c.inter_node.nics_per_node > 0
                   ? fmt::format("{} x {:.0f} Gb/s", c.inter_node.nics_per_node,
                                 c.inter_node.nic_bandwidth_gbit_s)
                   : "-",
               fmt::format("{:.1f}", c.storage.write_gb_s),
               optional_number(c.gpu_failures_per_gpu_hour, "{:.2e}"),
               optional_number(c.price_usd_per_gpu_hour, "{:.2f}")});
    nlohmann::json j = nlohmann::json::object();
    j["name"] = c.name;
    j["device"] = c.device.name;
    j["memory_gib"] = c.device.memory_gib;
    j["peak_tflops_bf16"] = c.device.peak_tflops_bf16;
    j["memory_bandwidth_gb_s"] = c.device.memory_bandwidth_gb_s;
    j["gpus_per_node"] = c.gpus_per_node;
    j["intra_node_gb_s"] = c.intra_node.bandwidth_gb_s;
    j["nics_per_node"] = c.inter_node.nics_per_node;
    j["nic_bandwidth_gbit_s"] = c.inter_node.nic_bandwidth_gbit_s;
    j["storage_write_gb_s"] = c.storage.write_gb_s;
    j["gpu_failures_per_gpu_hour"] =
        c.gpu_failures_per_gpu_hour ? nlohmann::json(*c.gpu_failures_per_gpu_hour) : nlohmann::json();
    j["price_usd_per_gpu_hour"] =
        c.price_usd_per_gpu_hour ? nlohmann::json(*c.price_usd_per_gpu_hour) : nlohmann::json();
    out.push_back(j);
  }
  if (json) {
    std::cout << out.dump(2) << "\n";
  } else {
    std::cout << t.render();
  }
  return first_error;
}

}  // namespace

CommandRunner register_models_command(CLI::App& app) {
  auto json = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("models", "list the model presets with their parameter counts");
  cmd->add_flag("--json", *json, "print JSON instead of a table");
  return [cmd, json]() { return cmd->parsed() ? run_models(*json) : core::ok_status(); };
}

CommandRunner register_clusters_command(CLI::App& app) {
  auto json = std::make_shared<bool>(false);
  CLI::App* cmd = app.add_subcommand("clusters", "list the cluster profiles with their key figures");
  cmd->add_flag("--json", *json, "print JSON instead of a table");
  return [cmd, json]() { return cmd->parsed() ? run_clusters(*json) : core::ok_status(); };
}

}  // namespace loom::cli
