// Checkpoint -> Hugging Face export: the spec comes back from meta["model_yaml"], a root
// resolves to its newest complete checkpoint (skipping a corrupt newer one with a warning), only
// the "model" shard is read, and missing metadata is refused by name. The last test runs the
// `loom export-hf` binary when it has been built with this command (skips otherwise).
#include "checkpoint/export_checkpoint.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include "checkpoint/checkpoint_store.h"
#include "core/model_io.h"

namespace loom::ckpt {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("loom_xc_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p;
}

core::ModelSpec tiny_llama() {
  core::ModelSpec m;
  m.name = "tiny-ckpt-llama";
  m.family = "llama";
  m.num_layers = 1;
  m.hidden_size = 16;
  m.num_heads = 2;
  m.num_kv_heads = 1;
  m.ffn_hidden_size = 24;
  m.vocab_size = 50;
  m.max_seq_len = 32;
  m.norm = core::NormKind::kRmsNorm;
  m.norm_bias = false;
  m.mlp = core::MlpKind::kSwiGlu;
  m.position = core::PositionKind::kRope;
  return m;
}

CheckpointData checkpoint_of(const core::ModelSpec& spec, int64_t step) {
  CheckpointData d;
  d.step = step;
  YAML::Emitter yaml;
  yaml << core::model_to_yaml(spec);
  d.meta = {{kModelYamlKey, std::string(yaml.c_str())}};
  for (const ParamShape& p : loom_param_shapes(spec)) {
    int64_t n = 1;
    for (int64_t x : p.shape) n *= x;
    std::vector<float> v(static_cast<size_t>(n), static_cast<float>(step));
    d.shards[kModelShard].push_back(make_f32_tensor(p.name, p.shape, v.data()));
  }
  const float moment = 1.0f;
  d.shards["optimizer"] = {make_f32_tensor("step_moment", {}, &moment)};
  return d;
}

TEST(ExportCheckpoint, RootExportsNewestCompleteStep) {
  const fs::path root = temp_dir("root"), out = temp_dir("root_out");
  const core::ModelSpec spec = tiny_llama();
  ASSERT_TRUE(save_checkpoint(root.string(), checkpoint_of(spec, 10), 3).ok());
  ASSERT_TRUE(save_checkpoint(root.string(), checkpoint_of(spec, 20), 3).ok());
  fs::resize_file(root / "step-00000020" / "model.safetensors", 100);  // newest is corrupt
  auto e = export_hf_from_checkpoint(root.string(), out.string(), DType::kBF16, 0);
  ASSERT_TRUE(e.ok()) << e.status().message();
  EXPECT_EQ(e->step, 10);
  EXPECT_EQ(e->checkpoint_dir, (root / "step-00000010").string());
  EXPECT_EQ(e->spec.name, spec.name);
  EXPECT_EQ(e->report.arch, HfArch::kLlama);
  ASSERT_EQ(e->warnings.size(), 1u);
  EXPECT_NE(e->warnings[0].find("step-00000020"), std::string::npos) << e->warnings[0];
  auto w = read_safetensors((out / "model.safetensors").string());
  ASSERT_TRUE(w.ok());
  EXPECT_EQ((*w)[0].dtype, DType::kBF16);
  EXPECT_EQ(as_f32((*w)[0])[0], 10.0f) << "values of step 10";
  fs::remove_all(root);
  fs::remove_all(out);
}

TEST(ExportCheckpoint, StepDirReadsOnlyTheModelShard) {
  const fs::path root = temp_dir("stepdir"), out = temp_dir("stepdir_out");
  ASSERT_TRUE(save_checkpoint(root.string(), checkpoint_of(tiny_llama(), 30), 3).ok());
  const fs::path dir = root / "step-00000030";
  fs::resize_file(dir / "optimizer.safetensors", 10);  // not needed for an export
  auto e = export_hf_from_checkpoint(dir.string(), out.string(), DType::kF32, 0);
  ASSERT_TRUE(e.ok()) << e.status().message();
  EXPECT_EQ(e->step, 30);
  EXPECT_TRUE(e->warnings.empty());
  EXPECT_FALSE(load_checkpoint_dir(dir.string()).ok()) << "a full load still verifies it";
  fs::remove_all(root);
  fs::remove_all(out);
}

TEST(ExportCheckpoint, RefusesMissingModelYamlAndMissingShard) {
  const fs::path root = temp_dir("nometa"), out = temp_dir("nometa_out");
  CheckpointData d = checkpoint_of(tiny_llama(), 5);
  d.meta = {{"other", 1}};
  ASSERT_TRUE(save_checkpoint(root.string(), d, 3).ok());
  auto e = export_hf_from_checkpoint((root / "step-00000005").string(), out.string(), DType::kF32, 0);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("meta.model_yaml"), std::string::npos)
      << e.status().message();

  d = checkpoint_of(tiny_llama(), 6);
  d.shards.erase(kModelShard);
  ASSERT_TRUE(save_checkpoint(root.string(), d, 3).ok());
  e = export_hf_from_checkpoint((root / "step-00000006").string(), out.string(), DType::kF32, 0);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("no shard 'model' (the manifest lists: optimizer)"),
            std::string::npos)
      << e.status().message();
  fs::remove_all(root);
  fs::remove_all(out);
}

std::string run_capture(const std::string& cmd, int* status) {
  std::string out;
  FILE* f = ::popen(cmd.c_str(), "r");
  if (!f) return *status = -1, out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  *status = ::pclose(f);
  return out;
}

TEST(ExportCheckpoint, LoomExportHfCommandWritesShardsAndJson) {
  const std::string loom = LOOM_BINARY;
  int status = 0;
  if (!fs::exists(loom) ||
      run_capture(loom + " export-hf --help 2>&1", &status).find("--max-shard-size") ==
          std::string::npos) {
    GTEST_SKIP() << "the loom binary at " << loom << " is not built with export-hf (ninja loom)";
  }
  const fs::path root = temp_dir("cli"), out = temp_dir("cli_out");
  ASSERT_TRUE(save_checkpoint(root.string(), checkpoint_of(tiny_llama(), 40), 3).ok());
  const std::string cmd = loom + " export-hf --checkpoint " + root.string() + " --out " +
                          out.string() + " --dtype bf16 --max-shard-size 2kB --json";
  const std::string text = run_capture(cmd + " 2>/dev/null", &status);
  ASSERT_EQ(status, 0) << text;
  const nlohmann::json j = nlohmann::json::parse(text);
  EXPECT_EQ(j["step"], 40);
  EXPECT_EQ(j["architecture"], "LlamaForCausalLM");
  EXPECT_TRUE(fs::exists(out / "model.safetensors.index.json"));
  EXPECT_GT(j["files"].size(), 3u);
  const std::string bad =
      run_capture(loom + " export-hf --checkpoint " + (root / "nope").string() + " --out " +
                      out.string() + " 2>&1",
                  &status);
  EXPECT_NE(status, 0);
  EXPECT_NE(bad.find("does not exist"), std::string::npos) << bad;
  fs::remove_all(root);
  fs::remove_all(out);
}

}  // namespace
}  // namespace loom::ckpt
