// Cluster profile loading and validation: see cluster_profile.h.
#include "core/cluster_profile.h"

#include "core/data_paths.h"
#include "core/yaml_reader.h"

namespace loom::core {

namespace {

Status read_optional_number(YamlReader& r, const std::string& key, std::optional<double>& out) {
  if (!r.has(key)) {
    double ignored = 0;
    return r.optional(key, ignored);  // marks a present-but-null key as consumed
  }
  double v = 0;
  LOOM_RETURN_IF_ERROR(r.required(key, v));
  out = v;
  return ok_status();
}

}  // namespace

Result<ClusterProfile> cluster_profile_from_yaml(const YAML::Node& node, const std::string& origin) {
  ClusterProfile c;
  YamlReader r(node, origin);
  LOOM_RETURN_IF_ERROR(r.required("name", c.name));
  LOOM_RETURN_IF_ERROR(r.optional("description", c.description));
  LOOM_RETURN_IF_ERROR(r.required("gpus_per_node", c.gpus_per_node));
  LOOM_RETURN_IF_ERROR(r.optional("max_nodes", c.max_nodes));

  YamlReader d = r.child("device", true);
  LOOM_RETURN_IF_ERROR(d.optional("kind", c.device.kind));
  LOOM_RETURN_IF_ERROR(d.required("name", c.device.name));
  LOOM_RETURN_IF_ERROR(d.required("memory_gib", c.device.memory_gib));
  LOOM_RETURN_IF_ERROR(d.required("peak_tflops_bf16", c.device.peak_tflops_bf16));
  LOOM_RETURN_IF_ERROR(d.required("peak_tflops_fp16", c.device.peak_tflops_fp16));
  LOOM_RETURN_IF_ERROR(d.required("peak_tflops_fp32", c.device.peak_tflops_fp32));
  LOOM_RETURN_IF_ERROR(d.required("memory_bandwidth_gb_s", c.device.memory_bandwidth_gb_s));
  LOOM_RETURN_IF_ERROR(d.finish());

  YamlReader f = r.child("intra_node", true);
  LOOM_RETURN_IF_ERROR(f.required("kind", c.intra_node.kind));
  LOOM_RETURN_IF_ERROR(f.required("bandwidth_gb_s", c.intra_node.bandwidth_gb_s));
  LOOM_RETURN_IF_ERROR(f.required("latency_us", c.intra_node.latency_us));
  LOOM_RETURN_IF_ERROR(f.optional("collective_efficiency", c.intra_node.collective_efficiency));
  LOOM_RETURN_IF_ERROR(f.finish());

  YamlReader n = r.child("inter_node", true);
  LOOM_RETURN_IF_ERROR(n.required("nics_per_node", c.inter_node.nics_per_node));
  LOOM_RETURN_IF_ERROR(n.required("nic_bandwidth_gbit_s", c.inter_node.nic_bandwidth_gbit_s));
  LOOM_RETURN_IF_ERROR(n.required("latency_us", c.inter_node.latency_us));
  LOOM_RETURN_IF_ERROR(n.optional("topology", c.inter_node.topology));
  LOOM_RETURN_IF_ERROR(n.optional("collective_efficiency", c.inter_node.collective_efficiency));
  LOOM_RETURN_IF_ERROR(n.finish());

  YamlReader s = r.child("storage", true);
  LOOM_RETURN_IF_ERROR(s.required("write_gb_s", c.storage.write_gb_s));
  LOOM_RETURN_IF_ERROR(s.optional("per_node_write_gb_s", c.storage.per_node_write_gb_s));
  LOOM_RETURN_IF_ERROR(s.finish());

  YamlReader rel = r.child("reliability", false);
  LOOM_RETURN_IF_ERROR(read_optional_number(rel, "gpu_failures_per_gpu_hour",
                                            c.gpu_failures_per_gpu_hour));
  LOOM_RETURN_IF_ERROR(rel.finish());

  YamlReader p = r.child("price", false);
  LOOM_RETURN_IF_ERROR(read_optional_number(p, "usd_per_gpu_hour", c.price_usd_per_gpu_hour));
  LOOM_RETURN_IF_ERROR(p.finish());

  YamlReader m = r.child("memory_overheads", true);
  LOOM_RETURN_IF_ERROR(m.required("cuda_context_gib", c.memory.cuda_context_gib));
  LOOM_RETURN_IF_ERROR(m.required("library_workspace_gib", c.memory.library_workspace_gib));
  LOOM_RETURN_IF_ERROR(m.required("nccl_buffers_gib", c.memory.nccl_buffers_gib));
  LOOM_RETURN_IF_ERROR(m.required("headroom_gib", c.memory.headroom_gib));
  LOOM_RETURN_IF_ERROR(m.finish());

  if (r.has("compute")) {
    YamlReader k = r.child("compute", true);
    c.compute.present = true;
    LOOM_RETURN_IF_ERROR(k.required("sm_count", c.compute.sm_count));
    LOOM_RETURN_IF_ERROR(k.required("gemm_max_efficiency", c.compute.gemm_max_efficiency));
    LOOM_RETURN_IF_ERROR(k.required("gemm_launch_us", c.compute.gemm_launch_us));
    LOOM_RETURN_IF_ERROR(k.required("memory_efficiency", c.compute.memory_efficiency));
    LOOM_RETURN_IF_ERROR(k.required("elementwise_launch_us", c.compute.elementwise_launch_us));
    LOOM_RETURN_IF_ERROR(k.required("attention_fwd_efficiency", c.compute.attention_fwd_efficiency));
    LOOM_RETURN_IF_ERROR(k.required("attention_bwd_efficiency", c.compute.attention_bwd_efficiency));
    LOOM_RETURN_IF_ERROR(k.finish());
  }

  LOOM_RETURN_IF_ERROR(r.finish());
  LOOM_RETURN_IF_ERROR(c.validate().with_context(origin));
  return c;
}

Status ClusterProfile::validate() const {
  auto positive = [&](const char* field, double v) -> Status {
    if (!(v > 0)) {
      return error(ErrorCode::kInvalidArgument, "cluster '{}': field '{}' = {} must be positive",
                   name, field, v);
    }
    return ok_status();
  };
  auto non_negative = [&](const char* field, double v) -> Status {
    if (v < 0) {
      return error(ErrorCode::kInvalidArgument,
                   "cluster '{}': field '{}' = {} must not be negative", name, field, v);
    }
    return ok_status();
  };
  if (device.kind != "gpu" && device.kind != "cpu") {
    return error(ErrorCode::kInvalidArgument,
                 "cluster '{}': field 'device.kind' = '{}' is not known (allowed: gpu, cpu)", name,
                 device.kind);
  }
  LOOM_RETURN_IF_ERROR(positive("gpus_per_node", gpus_per_node));
  LOOM_RETURN_IF_ERROR(non_negative("max_nodes", max_nodes));
  LOOM_RETURN_IF_ERROR(positive("device.memory_gib", device.memory_gib));
  LOOM_RETURN_IF_ERROR(positive("device.peak_tflops_fp32", device.peak_tflops_fp32));
  LOOM_RETURN_IF_ERROR(non_negative("device.peak_tflops_bf16", device.peak_tflops_bf16));
  LOOM_RETURN_IF_ERROR(non_negative("device.peak_tflops_fp16", device.peak_tflops_fp16));
  LOOM_RETURN_IF_ERROR(positive("device.memory_bandwidth_gb_s", device.memory_bandwidth_gb_s));
  LOOM_RETURN_IF_ERROR(positive("intra_node.bandwidth_gb_s", intra_node.bandwidth_gb_s));
  LOOM_RETURN_IF_ERROR(non_negative("intra_node.latency_us", intra_node.latency_us));
  LOOM_RETURN_IF_ERROR(non_negative("inter_node.nics_per_node", inter_node.nics_per_node));
  LOOM_RETURN_IF_ERROR(non_negative("inter_node.nic_bandwidth_gbit_s", inter_node.nic_bandwidth_gbit_s));
  LOOM_RETURN_IF_ERROR(non_negative("inter_node.latency_us", inter_node.latency_us));
  LOOM_RETURN_IF_ERROR(positive("storage.write_gb_s", storage.write_gb_s));
  LOOM_RETURN_IF_ERROR(non_negative("storage.per_node_write_gb_s", storage.per_node_write_gb_s));
  LOOM_RETURN_IF_ERROR(non_negative("memory_overheads.cuda_context_gib", memory.cuda_context_gib));
  LOOM_RETURN_IF_ERROR(non_negative("memory_overheads.library_workspace_gib", memory.library_workspace_gib));
  LOOM_RETURN_IF_ERROR(non_negative("memory_overheads.nccl_buffers_gib", memory.nccl_buffers_gib));
  LOOM_RETURN_IF_ERROR(non_negative("memory_overheads.headroom_gib", memory.headroom_gib));
  for (const auto& [field, v] : {std::pair{"intra_node.collective_efficiency", intra_node.collective_efficiency},
                                 std::pair{"inter_node.collective_efficiency", inter_node.collective_efficiency}}) {
    if (!(v > 0 && v <= 1)) {
      return error(ErrorCode::kInvalidArgument,
                   "cluster '{}': field '{}' = {} must be in (0, 1] (achieved / line rate)", name,
                   field, v);
    }
  }
  if (memory.total_gib() + memory.headroom_gib >= device.memory_gib) {
    return error(ErrorCode::kInvalidArgument,
                 "cluster '{}': fixed overheads ({:.2f} GiB) plus headroom ({:.2f} GiB) leave no "
                 "memory of the device's {:.2f} GiB",
                 name, memory.total_gib(), memory.headroom_gib, device.memory_gib);
  }
  if (compute.present) {
    LOOM_RETURN_IF_ERROR(positive("compute.sm_count", compute.sm_count));
    LOOM_RETURN_IF_ERROR(non_negative("compute.gemm_launch_us", compute.gemm_launch_us));
    LOOM_RETURN_IF_ERROR(non_negative("compute.elementwise_launch_us", compute.elementwise_launch_us));
    for (const auto& [field, v] :
         {std::pair{"compute.gemm_max_efficiency", compute.gemm_max_efficiency},
          std::pair{"compute.memory_efficiency", compute.memory_efficiency},
          std::pair{"compute.attention_fwd_efficiency", compute.attention_fwd_efficiency},
          std::pair{"compute.attention_bwd_efficiency", compute.attention_bwd_efficiency}}) {
      if (!(v > 0 && v <= 1)) {
        return error(ErrorCode::kInvalidArgument,
                     "cluster '{}': field '{}' = {} must be in (0, 1] (achieved / peak)", name,
                     field, v);
      }
    }
  }
  if (gpu_failures_per_gpu_hour && *gpu_failures_per_gpu_hour < 0) {
    return error(ErrorCode::kInvalidArgument,
                 "cluster '{}': reliability.gpu_failures_per_gpu_hour must not be negative", name);
  }
  if (price_usd_per_gpu_hour && *price_usd_per_gpu_hour < 0) {
    return error(ErrorCode::kInvalidArgument,
                 "cluster '{}': price.usd_per_gpu_hour must not be negative", name);
  }
  return ok_status();
}

Result<ClusterProfile> load_cluster_profile(const std::string& name_or_path) {
  LOOM_ASSIGN_OR_RETURN(std::string file,
                        resolve_data_file("cluster_profiles", name_or_path, "cluster profile"));
  LOOM_ASSIGN_OR_RETURN(YAML::Node node, load_yaml_file(file));
  return cluster_profile_from_yaml(node, file);
}

}  // namespace loom::core
