// `loom export-hf --checkpoint DIR --out DIR [--dtype fp32|bf16] [--max-shard-size 5GB] [--json]`:
// a Loom checkpoint (a step directory, or a root: its newest complete checkpoint) as a Hugging
// Face transformers folder (config.json + safetensors, sharded above --max-shard-size). The work
// is checkpoint/export_checkpoint.h, tested in tests/checkpoint/export_checkpoint_test.cc.
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "checkpoint/export_checkpoint.h"
#include "trainer/checkpoint_model.h"
#include "cli/commands.h"

namespace loom::cli {

namespace {

struct ExportHfArgs {
  std::string checkpoint;
  std::string out;
  std::string dtype = "fp32";
  std::string max_shard_size = "5GB";  // save_pretrained's default in transformers 4.x
  bool json = false;
};

nlohmann::json report_json(const ExportHfArgs& args, const ckpt::CheckpointExport& e) {
  return {{"checkpoint", e.checkpoint_dir},
          {"step", e.step},
          {"model", e.spec.name},
          {"architecture", ckpt::hf_architecture_name(e.report.arch)},
          {"dtype", args.dtype},
          {"out", args.out},
          {"files", e.report.files},
          {"num_tensors", e.report.num_tensors},
          {"weight_bytes", e.report.weight_bytes},
          {"warnings", e.warnings}};
}

core::Status run_export_hf(const ExportHfArgs& args) {
  const ckpt::DType dtype = args.dtype == "bf16" ? ckpt::DType::kBF16 : ckpt::DType::kF32;
  LOOM_ASSIGN_OR_RETURN(const int64_t max_shard_bytes,
                        ckpt::parse_byte_size(args.max_shard_size, "--max-shard-size"));
  LOOM_ASSIGN_OR_RETURN(
      const ckpt::CheckpointExport e,
      ckpt::export_hf_from_checkpoint(args.checkpoint, args.out, dtype, max_shard_bytes,
                                      train::checkpoint_model_tensors));
  for (const std::string& w : e.warnings) std::cerr << "warning: " << w << "\n";
  if (args.json) {
    std::cout << report_json(args, e).dump(2) << "\n";
    return core::ok_status();
  }
  std::cout << fmt::format("exported step {} of model '{}' ({}) as {} ({}, {} tensors, {:.3f} GB)\n",
                           e.step, e.spec.name, e.checkpoint_dir,
                           ckpt::hf_architecture_name(e.report.arch), args.dtype,
                           e.report.num_tensors, static_cast<double>(e.report.weight_bytes) / 1e9);
  for (const std::string& f : e.report.files) std::cout << "  wrote " << args.out << "/" << f << "\n";
  return core::ok_status();
}

}  // namespace

CommandRunner register_export_hf_command(CLI::App& app) {
  auto args = std::make_shared<ExportHfArgs>();
  CLI::App* cmd = app.add_subcommand(
      "export-hf", "a checkpoint as a Hugging Face transformers folder (LlamaForCausalLM, "
                   "Qwen2ForCausalLM or BloomForCausalLM)");
  cmd->add_option("--checkpoint", args->checkpoint,
                  "a step directory (step-00000020) or a checkpoint root (its newest complete "
                  "checkpoint)")
      ->required();
  cmd->add_option("--out", args->out, "output folder (created; old model*.safetensors removed)")
      ->required();
  cmd->add_option("--dtype", args->dtype, "weight dtype in the export")
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
  cmd->add_option("--max-shard-size", args->max_shard_size,
                  "split the weights into files of at most this size (5GB, 500MB, 2GiB)")
      ->capture_default_str();
  cmd->add_flag("--json", args->json, "print what was written as JSON");
  return [args, cmd]() -> core::Status {
    if (!cmd->parsed()) return core::ok_status();
    return run_export_hf(*args);
  };
}

}  // namespace loom::cli
