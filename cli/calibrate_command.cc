// `loom calibrate`: fits a cluster profile's compute section (GEMM efficiency, flash-attention
// efficiencies, memory efficiency) to measurements taken on the real device and writes the
// calibrated profile. The measurements come from scripts/gpu_torch_reference.py (run by
// scripts/gpu-check.sh on a GPU machine; --measurements), or from Loom's own kernels timed
// here (--measure): the CPU kernels for a CPU profile (cli/cpu_microbench.h), the CUDA kernels
// for a GPU profile (cli/gpu_microbench.h: cuBLASLt GEMMs, cuDNN's SDPA, a device copy); the
// fit is simulator/calibration.h.
//
// The profile is rewritten line by line: only the calibrated values change, each with a
// comment naming the measurement and the value it replaced, so every other number keeps its
// source comment. The result is parsed back as a profile before it is written (atomically).
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <memory>
#include <regex>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/table.h"
#include "core/data_paths.h"
#include "core/yaml_reader.h"
#include "cli/cpu_microbench.h"
#include "cli/cpu_ranks.h"
#ifdef LOOM_WITH_CUDA
#include "cli/gpu_microbench.h"
#include "kernels/device_query.h"
#endif
#include "core/model_io.h"
#include "simulator/calibration.h"

namespace loom::cli {

namespace {

using core::ErrorCode;

struct CalibrateArgs {
  std::string cluster;
  std::string measurements;
  bool measure = false;
  std::string model;
  int64_t mbs = 4;
  int64_t seq = 0;
  std::string attention_backend = "default";
  int ranks = 1;
  std::string name;
  std::string out;
  bool json = false;
};

std::string today_utc() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
  return buf;
}

// Replaces the value of `key`, a top-level key or one indented under a section (the first
// such line), keeping the indentation.
core::Status replace_value(std::string& text, const std::string& key, bool top_level,
                           const std::string& value, const std::string& comment) {
  const std::regex line("(^|\\n)(" + std::string(top_level ? "" : "[ \\t]+") + ")" + key +
                        ":[^\\n]*");
  std::smatch m;
  if (!std::regex_search(text, m, line))
    return core::error(ErrorCode::kParse, "profile has no '{}' line to calibrate", key);
  const std::string repl = fmt::format("{}{}{}: {}  # {}", m[1].str(), m[2].str(), key, value, comment);
  text = m.prefix().str() + repl + m.suffix().str();
  return core::ok_status();
}

// replace_value for `key` inside the top-level mapping `section` (keys such as latency_us occur
// under intra_node and inter_node alike).
core::Status replace_in(std::string& text, const std::string& section, const std::string& key,
                        const std::string& value, const std::string& comment) {
  const std::regex head("(^|\\n)" + section + ":[^\\n]*");
  std::smatch m;
  if (!std::regex_search(text, m, head))
    return core::error(ErrorCode::kParse, "profile has no '{}' section to calibrate", section);
  const size_t begin = static_cast<size_t>(m.position(0) + m.length(0));
  std::smatch next;
  const std::string rest = text.substr(begin);
  const size_t end = std::regex_search(rest, next, std::regex("\\n[A-Za-z_]"))
                         ? begin + static_cast<size_t>(next.position(0))
                         : text.size();
  std::string body = text.substr(begin, end - begin);
  LOOM_RETURN_IF_ERROR(replace_value(body, key, false, value, comment)
                           .with_context(fmt::format("section '{}'", section)));
  text = text.substr(0, begin) + body + text.substr(end);
  return core::ok_status();
}

// The intra-node fabric fitted to an all-reduce (`what` names it).
core::Status rewrite_intra_node(std::string& text, const IntraNodeFit& fit, const std::string& from,
                                const std::string& what) {
  LOOM_RETURN_IF_ERROR(replace_in(text, "intra_node", "bandwidth_gb_s", fmt::format("{:.4g}", fit.bandwidth_gb_s),
                                  fmt::format("{}: {}, fitted (worst error {:.0f}%)", from, what,
                                              100 * fit.max_error)));
  LOOM_RETURN_IF_ERROR(replace_in(text, "intra_node", "latency_us", fmt::format("{:.4g}", fit.latency_us),
                                  fmt::format("{}: fitted with the bandwidth", from)));
  return replace_in(text, "intra_node", "collective_efficiency", "1.0",
                    fmt::format("{}: the fitted bandwidth is the achieved one", from));
}

// The profile text rewritten as `ranks` devices (split_profile's values), the intra-node fabric
// from the thread backend's all-reduce.
core::Status rewrite_as_ranks(std::string& text, const core::ClusterProfile& split, int ranks,
                              const IntraNodeFit& fit, const std::string& from) {
  const std::string share = fmt::format("{}: one of {} ranks sharing the machine", from, ranks);
  LOOM_RETURN_IF_ERROR(replace_value(text, "gpus_per_node", true, std::to_string(ranks),
                                     fmt::format("{}: {} ranks (threads of `loom run`) per machine", from, ranks)));
  const auto& d = split.device;
  for (const auto& [key, value] : {std::pair{"memory_gib", d.memory_gib},
                                   {"peak_tflops_bf16", d.peak_tflops_bf16},
                                   {"peak_tflops_fp16", d.peak_tflops_fp16},
                                   {"peak_tflops_fp32", d.peak_tflops_fp32},
                                   {"memory_bandwidth_gb_s", d.memory_bandwidth_gb_s}}) {
    LOOM_RETURN_IF_ERROR(replace_in(text, "device", key, fmt::format("{:.4g}", value), share));
  }
  LOOM_RETURN_IF_ERROR(replace_in(text, "compute", "sm_count", std::to_string(split.compute.sm_count),
                                  fmt::format("{}: its cores", share)));
  LOOM_RETURN_IF_ERROR(replace_in(text, "memory_overheads", "headroom_gib",
                                  fmt::format("{:.4g}", split.memory.headroom_gib), share));
  return rewrite_intra_node(text, fit, from,
                            fmt::format("the thread communicator's all-reduce among {} ranks", ranks));
}

core::Status run_calibrate(const CalibrateArgs& a) {
  LOOM_ASSIGN_OR_RETURN(core::ClusterProfile profile, core::load_cluster_profile(a.cluster));
  LOOM_ASSIGN_OR_RETURN(std::string profile_path,
                        core::resolve_data_file("cluster_profiles", a.cluster, "cluster profile"));
  if (a.measure == !a.measurements.empty()) {
    return core::error(ErrorCode::kInvalidArgument,
                       "give either --measurements FILE (a GPU's measurements) or --measure (time "
                       "Loom's CPU kernels here)");
  }
  sim::CalibrationMeasurements meas;
  std::vector<CollectiveTiming> collectives;  // --ranks > 1
  IntraNodeFit intra;
  [[maybe_unused]] int gpu_fabric_ranks = 0;  // GPU profile: GPUs whose all-reduce was timed
  std::string attention_what = fmt::format("causal SDPA ({})", a.attention_backend);
  std::string command = fmt::format("loom calibrate --cluster {} --measurements {}", a.cluster,
                                    a.measurements);
  if (a.measure) {
    const bool gpu = profile.device.kind != "cpu";
    if (gpu && a.ranks != 1) {
      return core::error(ErrorCode::kInvalidArgument,
                         "--ranks {}: splits a CPU into ranks; cluster '{}' is a {} profile "
                         "(allowed: 1)",
                         a.ranks, profile.name, profile.device.kind);
    }
#ifndef LOOM_WITH_CUDA
    if (gpu) {
      return core::error(ErrorCode::kInvalidArgument,
                         "--measure on cluster '{}' (a {} profile) times Loom's CUDA kernels, and "
                         "this loom was built without CUDA (or use --measurements from "
                         "scripts/gpu-check.sh)",
                         profile.name, profile.device.kind);
    }
#endif
    if (a.model.empty())
      return core::error(ErrorCode::kInvalidArgument, "--measure needs --model (whose shapes to time)");
    LOOM_ASSIGN_OR_RETURN(const core::ModelSpec model, core::load_model(a.model));
    core::Layout l;
    l.gpus = 1;
    l.mbs = a.mbs;
    l.gbs = a.mbs;
    l.seq = a.seq;
    LOOM_ASSIGN_OR_RETURN(const core::Layout layout, core::resolve_layout(l, model));
    if (a.ranks != 1) {
      LOOM_RETURN_IF_ERROR(threads_per_rank(a.ranks).status());
      LOOM_RETURN_IF_ERROR(split_profile(profile, a.ranks));
    }
    std::ostream* progress = a.json ? nullptr : &std::cerr;
    if (progress != nullptr) {
      *progress << fmt::format("Timing {}'s kernels at mbs {} seq {}{}:\n", model.name, layout.mbs,
                               layout.seq, a.ranks > 1 ? fmt::format(", {} copies at once", a.ranks) : "");
    }
    if (a.ranks > 1) {
      LOOM_ASSIGN_OR_RETURN(meas, measure_cpu_ranks(model, layout, a.ranks, progress));
      LOOM_ASSIGN_OR_RETURN(collectives, measure_thread_all_reduce(a.ranks, {16384.0, 131072.0, 1048576.0, 4194304.0}));
      LOOM_ASSIGN_OR_RETURN(intra, fit_intra_node(profile, a.ranks, collectives));
      if (progress != nullptr) {
        for (const CollectiveTiming& t : collectives)
          *progress << fmt::format("  all-reduce among {} ranks, {:>9.0f} B: {:8.3f} ms\n", a.ranks, t.bytes, t.seconds * 1e3);
        *progress << fmt::format("  intra-node fit: latency {:.1f} us, bandwidth {:.2f} GB/s (worst error {:.0f}%)\n",
                                 intra.latency_us, intra.bandwidth_gb_s, 100 * intra.max_error);
      }
    } else if (gpu) {
#ifdef LOOM_WITH_CUDA
      std::string note;
      LOOM_ASSIGN_OR_RETURN(meas, measure_gpu(model, layout, progress, &note));
      if (!note.empty()) std::cerr << "note: " << note << "\n";
      // The intra-node fabric: NCCL's all-reduce among the node's GPUs, where several are here.
      const int visible = static_cast<int>(kernels::query_cuda_devices().devices.size());
      gpu_fabric_ranks = std::min<int>(visible, static_cast<int>(profile.gpus_per_node));
      if (gpu_fabric_ranks >= 2) {
        LOOM_ASSIGN_OR_RETURN(collectives,
                              measure_nccl_all_reduce(gpu_fabric_ranks, {1048576.0, 8388608.0,
                                                                         67108864.0, 536870912.0}));
        LOOM_ASSIGN_OR_RETURN(intra, fit_intra_node(profile, gpu_fabric_ranks, collectives));
        if (progress != nullptr) {
          for (const CollectiveTiming& t : collectives)
            *progress << fmt::format("  NCCL all-reduce among {} GPUs, {:>10.0f} B: {:8.3f} ms, "
                                     "bus {:.0f} GB/s\n",
                                     gpu_fabric_ranks, t.bytes, t.seconds * 1e3,
                                     2.0 * (gpu_fabric_ranks - 1) / gpu_fabric_ranks * t.bytes /
                                         t.seconds / 1e9);
          *progress << fmt::format("  intra-node fit: latency {:.1f} us, bandwidth {:.1f} GB/s "
                                   "(worst error {:.0f}%)\n",
                                   intra.latency_us, intra.bandwidth_gb_s, 100 * intra.max_error);
        }
      } else if (progress != nullptr) {
        *progress << fmt::format("  intra-node fabric not measured: {} GPU{} visible, {} per node "
                                 "in the profile\n",
                                 visible, visible == 1 ? "" : "s", profile.gpus_per_node);
      }
#endif
    } else {
      LOOM_ASSIGN_OR_RETURN(meas, measure_cpu(model, layout, progress));
    }
    attention_what = gpu ? "cuDNN's fused SDPA through Loom" : "Loom's CPU flash attention";
    command = fmt::format("loom calibrate --cluster {} --measure --model {} --mbs {} --seq {}{}",
                          a.cluster, a.model, layout.mbs, layout.seq,
                          a.ranks > 1 ? fmt::format(" --ranks {}", a.ranks) : "");
  } else {
    if (a.ranks != 1) {
      return core::error(ErrorCode::kInvalidArgument,
                         "--ranks {}: splits a CPU into ranks and goes with --measure (allowed "
                         "with --measurements: 1)",
                         a.ranks);
    }
    std::ifstream in(a.measurements);
    if (!in)
      return core::error(ErrorCode::kNotFound, "--measurements '{}': cannot open the file",
                         a.measurements);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(in);
    } catch (const nlohmann::json::exception& e) {
      return core::error(ErrorCode::kParse, "--measurements '{}': not JSON: {}", a.measurements,
                         e.what());
    }
    if (a.attention_backend != "default" && a.attention_backend != "flash" &&
        a.attention_backend != "cudnn")
      return core::error(ErrorCode::kInvalidArgument,
                         "--attention-backend '{}': expected default, flash or cudnn",
                         a.attention_backend);
    LOOM_ASSIGN_OR_RETURN(meas, sim::measurements_from_json(j, a.attention_backend));
  }
  LOOM_ASSIGN_OR_RETURN(sim::CalibrationResult r, sim::calibrate_compute(profile, meas));

  const std::string name = a.name.empty() ? profile.name + "-calibrated" : a.name;
  const std::string date = today_utc();
  std::ifstream src(profile_path);
  std::stringstream ss;
  ss << src.rdbuf();
  std::string text = ss.str();
  const std::string from = fmt::format("calibrated {} on {}", date, meas.source);
  if (name != profile.name)
    LOOM_RETURN_IF_ERROR(
        replace_value(text, "name", true, name, fmt::format("{} (from {})", from, profile.name)));
  struct Field {
    const char* key;
    double before, after;
    std::string what;
  };
  const std::vector<Field> fields = {
      {"gemm_max_efficiency", r.before.gemm_max_efficiency, r.after.gemm_max_efficiency,
       fmt::format("{} GEMMs, least squares in log time", meas.gemms.size())},
      {"attention_fwd_efficiency", r.before.attention_fwd_efficiency,
       r.after.attention_fwd_efficiency,
       fmt::format("median of {} {} forwards", r.attention_fwd_samples, attention_what)},
      {"attention_bwd_efficiency", r.before.attention_bwd_efficiency,
       r.after.attention_bwd_efficiency,
       fmt::format("median of {} {} backwards", r.attention_bwd_samples, attention_what)},
      {"memory_efficiency", r.before.memory_efficiency, r.after.memory_efficiency,
       !meas.copy_gb_s ? std::string()
       : meas.large_copy_gb_s
           ? fmt::format("the trainer's element-wise kernels on one block, {:.1f} GB/s effective "
                         "(a 256 MiB copy: {:.1f} GB/s)",
                         *meas.copy_gb_s, *meas.large_copy_gb_s)
           : fmt::format("copy {:.0f} GB/s", *meas.copy_gb_s)},
  };
  for (const Field& f : fields) {
    if (f.after == f.before) continue;  // not measured: the line and its source stay
    LOOM_RETURN_IF_ERROR(replace_value(text, f.key, false, fmt::format("{:.3f}", f.after),
                                       fmt::format("{}: {}; was {:.3f}", from, f.what, f.before)));
  }
  if (a.ranks > 1) LOOM_RETURN_IF_ERROR(rewrite_as_ranks(text, profile, a.ranks, intra, from));
  if (gpu_fabric_ranks >= 2) {
    LOOM_RETURN_IF_ERROR(rewrite_intra_node(
        text, intra, from, fmt::format("NCCL's all-reduce among {} GPUs", gpu_fabric_ranks)));
  }
  // The rewritten profile must load as a profile before it replaces anything.
  YAML::Node node;
  try {
    node = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    return core::error(ErrorCode::kInternal, "calibrated profile does not parse: {}", e.what());
  }
  LOOM_ASSIGN_OR_RETURN(core::ClusterProfile check, core::cluster_profile_from_yaml(node, a.out));

  if (!a.out.empty()) {
    const std::string tmp = a.out + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << "# Calibrated by `" << command << "` on " << date << ".\n" << text;
      if (!out.flush())
        return core::error(ErrorCode::kIo, "--out '{}': cannot write {}", a.out, tmp);
    }
    if (std::rename(tmp.c_str(), a.out.c_str()) != 0)
      return core::error(ErrorCode::kIo, "--out '{}': cannot rename {} into place", a.out, tmp);
  }

  if (a.json) {
    nlohmann::json o;
    o["cluster"] = profile.name;
    o["name"] = check.name;
    o["source"] = meas.source;
    o["out"] = a.out;
    for (const Field& f : fields) o["fields"][f.key] = {{"before", f.before}, {"after", f.after}};
    o["gemm"] = {{"samples", meas.gemms.size()},
                 {"median_error_before", r.gemm_median_error_before},
                 {"median_error_after", r.gemm_median_error_after},
                 {"max_error_before", r.gemm_max_error_before},
                 {"max_error_after", r.gemm_max_error_after}};
    if (a.ranks > 1 || gpu_fabric_ranks >= 2) {
      o["ranks"] = a.ranks > 1 ? a.ranks : gpu_fabric_ranks;
      o["intra_node"] = {{"latency_us", intra.latency_us}, {"bandwidth_gb_s", intra.bandwidth_gb_s},
                         {"max_error", intra.max_error}};
      for (const CollectiveTiming& t : collectives)
        o["all_reduce"].push_back({{"bytes", t.bytes}, {"seconds", t.seconds}});
    }
    for (const auto& row : r.gemm_rows)
      o["gemm_rows"].push_back({{"label", row.label}, {"measured_s", row.measured_s},
                                {"predicted_before_s", row.before_s}, {"predicted_after_s", row.after_s}});
    std::cout << o.dump(2) << "\n";
    return core::ok_status();
  }
  std::cout << fmt::format("Calibrating {} from {} GEMMs, {} attention timings{} ({})\n\n",
                           profile.name, meas.gemms.size(), meas.attention.size(),
                           meas.copy_gb_s ? ", a copy bandwidth" : "", meas.source);
  Table t;
  t.add_column("field", Table::Align::kLeft);
  t.add_column("before");
  t.add_column("after");
  for (const Field& f : fields)
    t.add_row({f.key, fmt::format("{:.3f}", f.before), fmt::format("{:.3f}", f.after)});
  std::cout << t.render();
  if (!meas.gemms.empty())
    std::cout << fmt::format(
        "\nGEMM time error |predicted/measured - 1|: median {:.1f}% -> {:.1f}%, worst {:.1f}% -> "
        "{:.1f}%\n",
        100 * r.gemm_median_error_before, 100 * r.gemm_median_error_after,
        100 * r.gemm_max_error_before, 100 * r.gemm_max_error_after);
  std::cout << (a.out.empty() ? std::string("\n(no --out: nothing written)\n")
                              : fmt::format("\nWrote {} (profile '{}')\n", a.out, check.name));
  return core::ok_status();
}

}  // namespace

CommandRunner register_calibrate_command(CLI::App& app) {
  auto a = std::make_shared<CalibrateArgs>();
  CLI::App* cmd = app.add_subcommand(
      "calibrate", "fit a cluster profile's compute section to measurements from the device");
  cmd->add_option("--cluster", a->cluster, "cluster profile name or YAML to calibrate")->required();
  cmd->add_option("--measurements", a->measurements,
                  "JSON of device measurements (scripts/gpu_torch_reference.py: gemm, attention, "
                  "memory)");
  cmd->add_flag("--measure", a->measure,
                "time Loom's kernels here instead (the CPU's for a CPU profile, the GPU's for a "
                "GPU profile): the GEMMs the simulator prices for --model, its attention, a copy");
  cmd->add_option("--model", a->model, "with --measure: the model whose shapes are timed");
  cmd->add_option("--mbs", a->mbs, "with --measure: micro-batch size of the timed shapes")
      ->capture_default_str();
  cmd->add_option("--seq", a->seq, "with --measure: sequence length (default: the model's)");
  cmd->add_option("--attention-backend", a->attention_backend,
                  "which attention rows to fit: default, flash, cudnn")
      ->capture_default_str();
  cmd->add_option("--ranks", a->ranks,
                  "with --measure: describe this CPU as R devices, one per rank of `loom run` "
                  "(cores / R threads each): per-rank peak, bandwidth and memory, kernels timed by "
                  "R copies at once, the thread communicator's all-reduce as the intra-node fabric")
      ->capture_default_str();
  cmd->add_option("--name", a->name, "name of the calibrated profile (default: <cluster>-calibrated)");
  cmd->add_option("--out", a->out, "write the calibrated profile YAML here");
  cmd->add_flag("--json", a->json, "print JSON instead of a table");
  return [cmd, a]() { return cmd->parsed() ? run_calibrate(*a) : core::ok_status(); };
}

}  // namespace loom::cli
