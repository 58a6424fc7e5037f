// ClusterProfile: the hardware a plan runs on (device, node, fabrics, storage, reliability,
// price, fixed memory overheads). Loaded from cluster_profiles/<name>.yaml, where every
// number carries its source in a comment; tests/core/cluster_profile_test.cc checks the schema.
#pragma once

#include <optional>
#include <string>

#include <yaml-cpp/yaml.h>

#include "core/status.h"

namespace loom::core {

struct DeviceSpec {
  std::string kind = "gpu";  // gpu | cpu
  std::string name;
  double memory_gib = 0;            // usable device memory as the driver reports it
  double peak_tflops_bf16 = 0;      // dense (no 2:4 sparsity)
  double peak_tflops_fp16 = 0;
  double peak_tflops_fp32 = 0;      // plain fp32 (not TF32)
  double memory_bandwidth_gb_s = 0; // HBM (or DRAM for CPUs), 1e9 bytes/s
};

struct IntraNodeFabric {
  std::string kind;            // nvswitch | nvlink | pcie | shared-memory
  double bandwidth_gb_s = 0;   // per GPU, per direction, 1e9 bytes/s
  double latency_us = 0;
  // NCCL bus bandwidth of large collectives / bandwidth_gb_s (nccl-tests busbw), 0 < x <= 1.
  double collective_efficiency = 1.0;
};

struct InterNodeNetwork {
  int nics_per_node = 0;
  double nic_bandwidth_gbit_s = 0;  // per NIC, per direction, 1e9 bits/s
  double latency_us = 0;
  std::string topology;             // free text: fat tree, rail-optimized, dragonfly, ...
  // NCCL bus bandwidth of large inter-node collectives / NIC line rate, 0 < x <= 1.
  double collective_efficiency = 1.0;
  double per_node_bandwidth_gb_s() const { return nics_per_node * nic_bandwidth_gbit_s / 8.0; }
};

struct StorageSpec {
  double write_gb_s = 0;           // aggregate filesystem write bandwidth for checkpoints
  double per_node_write_gb_s = 0;  // what one node can push (NIC / client limit); 0 = unbounded
};

// Per-GPU memory that training frameworks do not see in their allocator statistics.
struct MemoryOverheads {
  double cuda_context_gib = 0;       // driver context + loaded kernels (cuBLAS, cuDNN, NCCL)
  double library_workspace_gib = 0;  // cuBLAS/cuBLASLt/cuDNN workspaces
  double nccl_buffers_gib = 0;       // NCCL channel buffers for the communicators of a layout
  double headroom_gib = 0;           // kept free: a plan must leave this much unused
  double total_gib() const { return cuda_context_gib + library_workspace_gib + nccl_buffers_gib; }
};

// Parameters of the per-device compute model (simulator/compute_model.h). Optional: a profile
// without them supports the memory model only, and step-time simulation says so.
struct ComputeSpec {
  bool present = false;
  int sm_count = 0;                  // streaming multiprocessors (GEMM wave quantization)
  double gemm_max_efficiency = 0;    // large, well-shaped GEMMs: achieved / dense peak
  double gemm_launch_us = 0;         // fixed cost per GEMM kernel
  double memory_efficiency = 0;      // streaming kernels: achieved / HBM bandwidth
  double elementwise_launch_us = 0;  // fixed cost per memory-bound kernel
  double attention_fwd_efficiency = 0;  // flash attention forward: achieved / dense peak
  double attention_bwd_efficiency = 0;  // flash attention backward
};

struct ClusterProfile {
  std::string name;
  std::string description;
  DeviceSpec device;
  int gpus_per_node = 0;
  int max_nodes = 0;  // 0 = no stated limit
  IntraNodeFabric intra_node;
  InterNodeNetwork inter_node;
  StorageSpec storage;
  std::optional<double> gpu_failures_per_gpu_hour;  // unknown when absent
  std::optional<double> price_usd_per_gpu_hour;
  MemoryOverheads memory;
  ComputeSpec compute;

  double usable_memory_gib() const { return device.memory_gib - memory.headroom_gib; }
  Status validate() const;
};

Result<ClusterProfile> load_cluster_profile(const std::string& name_or_path);
Result<ClusterProfile> cluster_profile_from_yaml(const YAML::Node& node, const std::string& origin);

}  // namespace loom::core
