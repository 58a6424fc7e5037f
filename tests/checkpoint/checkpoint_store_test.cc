// The atomic checkpoint store: a save killed mid-way (LOOM_CHECKPOINT_CRASH_AFTER_FILES in a
// forked child) leaves the previous checkpoint loadable; a flipped byte, a missing COMPLETE
// marker or a truncated shard makes the loader fall back with a warning that names the
// directory and the reason; keep_last prunes old steps and stale temporaries.
#include "checkpoint/checkpoint_store.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace loom::ckpt {
namespace {

namespace fs = std::filesystem;

fs::path temp_root(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("loom_ckpt_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p;
}

// A checkpoint whose every value depends on the step, so a mix-up is visible.
CheckpointData make_data(int64_t step) {
  std::vector<float> w(64), m(64);
  for (size_t i = 0; i < w.size(); ++i) {
    w[i] = static_cast<float>(step) + 0.25f * static_cast<float>(i);
    m[i] = -static_cast<float>(step * 1000 + static_cast<int64_t>(i));
  }
  CheckpointData d;
  d.step = step;
  d.meta = {{"model_yaml", "name: tiny\n"}, {"tokens_seen", step * 4096}};
  d.shards["model"] = {make_f32_tensor("embed.weight", {8, 8}, w.data())};
  d.shards["optimizer"] = {make_f32_tensor("embed.weight.exp_avg", {8, 8}, m.data())};
  return d;
}

void expect_step(const CheckpointData& d, int64_t step) {
  EXPECT_EQ(d.step, step);
  EXPECT_EQ(d.meta.at("tokens_seen").get<int64_t>(), step * 4096);
  ASSERT_EQ(d.shards.size(), 2u);
  const CheckpointData want = make_data(step);
  EXPECT_EQ(d.shards.at("model")[0].bytes, want.shards.at("model")[0].bytes);
  EXPECT_EQ(d.shards.at("optimizer")[0].name, "embed.weight.exp_avg");
  EXPECT_EQ(d.shards.at("optimizer")[0].bytes, want.shards.at("optimizer")[0].bytes);
}

void flip_byte(const fs::path& file, std::streamoff offset) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(offset);
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x01);
  f.seekp(offset);
  f.write(&c, 1);
}

std::string joined(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x + "\n";
  return s;
}

TEST(CheckpointStore, SaveLoadRoundTripAndLayout) {
  const fs::path root = temp_root("roundtrip");
  ASSERT_TRUE(save_checkpoint(root.string(), make_data(10), 3).ok());
  const fs::path dir = root / "step-00000010";
  EXPECT_TRUE(fs::exists(dir / "model.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "optimizer.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "manifest.json"));
  EXPECT_TRUE(fs::exists(dir / "COMPLETE"));
  const nlohmann::json manifest = nlohmann::json::parse(std::ifstream(dir / "manifest.json"));
  EXPECT_EQ(manifest["format_version"], kCheckpointFormatVersion);
  EXPECT_EQ(manifest["files"].size(), 2u);
  EXPECT_EQ(manifest["files"][0]["bytes"].get<uint64_t>(), fs::file_size(dir / "model.safetensors"));
  std::vector<std::string> warnings;
  auto back = load_latest_checkpoint(root.string(), &warnings);
  ASSERT_TRUE(back.ok()) << back.status().message();
  expect_step(*back, 10);
  EXPECT_TRUE(warnings.empty()) << joined(warnings);
  auto direct = load_checkpoint_dir(dir.string());
  ASSERT_TRUE(direct.ok()) << direct.status().message();
  expect_step(*direct, 10);
  fs::remove_all(root);
}

// The child saves step 20 and dies after `files` files; the parent must still get step 10.
void crash_child_and_check(const fs::path& root, int files) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::setenv(kCrashAfterFilesEnv, std::to_string(files).c_str(), 1);
    (void)save_checkpoint(root.string(), make_data(20), 3);
    _exit(0);  // not reached when the hook fires
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), kCrashExitCode) << "the crash hook did not fire";
  EXPECT_FALSE(fs::exists(root / "step-00000020")) << "renamed before the crash";
  std::vector<std::string> warnings;
  auto back = load_latest_checkpoint(root.string(), &warnings);
  ASSERT_TRUE(back.ok()) << back.status().message();
  expect_step(*back, 10);
}

TEST(CheckpointStore, CrashDuringSaveKeepsPreviousCheckpoint) {
  const fs::path root = temp_root("crash");
  ASSERT_TRUE(save_checkpoint(root.string(), make_data(10), 3).ok());
  for (int files : {0, 1, 2, 3}) {  // before any file, after each shard, after the manifest
    SCOPED_TRACE("crash after " + std::to_string(files) + " files");
    crash_child_and_check(root, files);
  }
  // The next successful save cleans the dead child's temporary directory.
  ASSERT_TRUE(save_checkpoint(root.string(), make_data(30), 3).ok());
  for (const auto& e : fs::directory_iterator(root)) {
    EXPECT_FALSE(e.path().filename().string().starts_with(".tmp-")) << e.path();
  }
  EXPECT_EQ(list_checkpoints(root.string()).size(), 2u);
  fs::remove_all(root);
}

TEST(CheckpointStore, CorruptByteFallsBackWithWarning) {
  const fs::path root = temp_root("corrupt");
  ASSERT_TRUE(save_checkpoint(root.string(), make_data(10), 3).ok());
  ASSERT_TRUE(save_checkpoint(root.string(), make_data(20), 3).ok());
  const fs::path newest = root / "step-00000020";
  flip_byte(newest / "model.safetensors", static_cast<std::streamoff>(fs::file_size(newest / "model.safetensors") - 5));
  std::vector<std::string> warnings;
  auto back = load_latest_checkpoint(root.string(), &warnings);
  ASSERT_TRUE(back.ok()) << back.status().message();
  expect_step(*back, 10);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("step-00000020"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("shard model.safetensors: crc32c 0x"), std::string::npos)
      << warnings[0];
  EXPECT_NE(warnings[0].find("!= manifest 0x"), std::string::npos) << warnings[0];

  auto refused = load_checkpoint_dir(newest.string());
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("model.safetensors"), std::string::npos)
      << refused.status().message();
  fs::remove_all(root);
}

TEST(CheckpointStore, CorruptManifestIsCaughtByMarker) {
  const fs::path root = temp_root("manifest");
  ASSERT_TRUE(save_checkpoint(root.string(), make_data(10), 3).ok());
  ASSERT_TRUE(save_checkpoint(root.string(), make_data(20), 3).ok());
  flip_byte(root / "step-00000020" / "manifest.json", 40);
  std::vector<std::string> warnings;
  auto back = load_latest_checkpoint(root.string(), &warnings);
  ASSERT_TRUE(back.ok());
  expect_step(*back, 10);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("manifest.json: crc32c"), std::string::npos) << warnings[0];
  fs::remove_all(root);
}

TEST(CheckpointStore, MissingMarkerIsIgnored) {
  const fs::path root = temp_root("marker");
  ASSERT_TRUE(save_checkpoint(root.string(), make_data(10), 3).ok());
  ASSERT_TRUE(save_checkpoint(root.string(), make_data(20), 3).ok());
  fs::remove(root / "step-00000020" / "COMPLETE");
  EXPECT_EQ(list_checkpoints(root.string()),
            std::vector<std::string>{(root / "step-00000010").string()});
  std::vector<std::string> warnings;
  auto back = load_latest_checkpoint(root.string(), &warnings);
  ASSERT_TRUE(back.ok());
  expect_step(*back, 10);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("no COMPLETE marker"), std::string::npos) << warnings[0];
  fs::remove_all(root);
}

TEST(CheckpointStore, TruncatedShardIsRefused) {
  const fs::path root = temp_root("truncated");
  ASSERT_TRUE(save_checkpoint(root.string(), make_data(10), 3).ok());
  const fs::path shard = root / "step-00000010" / "optimizer.safetensors";
  fs::resize_file(shard, fs::file_size(shard) - 16);
  auto refused = load_checkpoint_dir((root / "step-00000010").string());
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("optimizer.safetensors"), std::string::npos);
  EXPECT_NE(refused.status().message().find("truncated"), std::string::npos)
      << refused.status().message();
  std::vector<std::string> warnings;
  auto none = load_latest_checkpoint(root.string(), &warnings);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), core::ErrorCode::kNotFound);
  EXPECT_NE(none.status().message().find(root.string()), std::string::npos);
  EXPECT_NE(none.status().message().find("step-00000010"), std::string::npos)
      << none.status().message();
  fs::remove_all(root);
}

TEST(CheckpointStore, KeepLastPrunesOldestAndStaleTemporaries) {
  const fs::path root = temp_root("prune");
  fs::create_directories(root / ".tmp-step-00000005-999999");  // a dead writer's leftovers
  fs::create_directories(root / "step-00000003");              // incomplete, older
  for (int64_t step : {10, 20, 30, 40}) {
    ASSERT_TRUE(save_checkpoint(root.string(), make_data(step), 2).ok());
  }
  EXPECT_EQ(list_checkpoints(root.string()),
            (std::vector<std::string>{(root / "step-00000030").string(),
                                      (root / "step-00000040").string()}));
  EXPECT_FALSE(fs::exists(root / ".tmp-step-00000005-999999"));
  EXPECT_FALSE(fs::exists(root / "step-00000003"));
  fs::remove_all(root);
}

TEST(CheckpointStore, ResavingAStepReplacesIt) {
  const fs::path root = temp_root("resave");
  CheckpointData first = make_data(10);
  first.meta["tokens_seen"] = 1;
  ASSERT_TRUE(save_checkpoint(root.string(), first, 3).ok());
  ASSERT_TRUE(save_checkpoint(root.string(), make_data(10), 3).ok());
  auto back = load_latest_checkpoint(root.string(), nullptr);
  ASSERT_TRUE(back.ok());
  expect_step(*back, 10);
  EXPECT_EQ(list_checkpoints(root.string()).size(), 1u);
  fs::remove_all(root);
}

// Several writers, one commit: nothing is visible before the commit, the committed step loads
// with every writer's file verified, a prefix ("model*") selects shards, and an attempt that
// never committed is swept by the next begin.
TEST(CheckpointStore, SharedCheckpointCommitsEveryWritersFiles) {
  const fs::path root = temp_root("shared");
  ASSERT_TRUE(save_checkpoint(root.string(), make_data(10), 3).ok());
  const CheckpointData want = make_data(20);
  auto staging = begin_shared_checkpoint(root.string(), 20);
  ASSERT_TRUE(staging.ok()) << staging.status().message();
  EXPECT_EQ(*staging, shared_checkpoint_staging(root.string(), 20));
  std::vector<ShardFile> files;
  for (const char* part : {"t0", "t1"}) {  // two writers
    for (const auto& [shard, tensors] : want.shards) {
      auto f = write_checkpoint_shard(*staging, 20, shard + "-" + part, tensors);
      ASSERT_TRUE(f.ok()) << f.status().message();
      files.push_back(*f);
    }
  }
  auto before = load_latest_checkpoint(root.string(), nullptr);
  ASSERT_TRUE(before.ok());
  EXPECT_EQ(before->step, 10) << "an uncommitted step is visible";
  ASSERT_TRUE(commit_shared_checkpoint(root.string(), *staging, 20, files, want.meta, 3).ok());
  EXPECT_FALSE(fs::exists(*staging));
  auto back = load_latest_checkpoint(root.string(), nullptr);
  ASSERT_TRUE(back.ok()) << back.status().message();
  EXPECT_EQ(back->step, 20);
  EXPECT_EQ(back->shards.size(), 4u);
  EXPECT_EQ(back->shards.at("model-t1")[0].bytes, want.shards.at("model")[0].bytes);
  auto models = load_latest_checkpoint(root.string(), nullptr, {"model*"});
  ASSERT_TRUE(models.ok()) << models.status().message();
  EXPECT_EQ(models->shards.size(), 2u);
  EXPECT_FALSE(load_latest_checkpoint(root.string(), nullptr, {"absent*"}).ok());
  // A writer's file damaged after the commit: the manifest's CRC catches it.
  flip_byte(root / "step-00000020" / "optimizer-t0.safetensors", 200);
  std::vector<std::string> warnings;
  auto fallback = load_latest_checkpoint(root.string(), &warnings);
  ASSERT_TRUE(fallback.ok());
  EXPECT_EQ(fallback->step, 10);
  EXPECT_NE(joined(warnings).find("optimizer-t0.safetensors"), std::string::npos) << joined(warnings);
  // An attempt that died before its commit leaves a staging directory the next begin sweeps.
  auto stale = begin_shared_checkpoint(root.string(), 30);
  ASSERT_TRUE(stale.ok());
  ASSERT_TRUE(write_checkpoint_shard(*stale, 30, "model-t0", want.shards.at("model")).ok());
  auto again = begin_shared_checkpoint(root.string(), 30);
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(fs::is_empty(*again));
  fs::remove_all(root);
}

TEST(CheckpointStore, EmptyOrMissingRootIsNotFound) {
  const fs::path root = temp_root("empty");
  auto missing = load_latest_checkpoint(root.string(), nullptr);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), core::ErrorCode::kNotFound);
  fs::create_directories(root);
  auto empty = load_latest_checkpoint(root.string(), nullptr);
  ASSERT_FALSE(empty.ok());
  EXPECT_NE(empty.status().message().find("no step-* directories"), std::string::npos)
      << empty.status().message();
  fs::remove_all(root);
}

}  // namespace
}  // namespace loom::ckpt
