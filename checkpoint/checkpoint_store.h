// Atomic, verified training checkpoints: ROOT/step-00000020 holds one safetensors file per
// shard ("model", "optimizer", ...), manifest.json (each file's size and CRC-32C, the run's
// meta) and a COMPLETE marker written last. A crash at any point leaves the previous checkpoints
// intact and at worst a directory the loader skips with a warning. Tested in
// tests/checkpoint/checkpoint_store_test.cc (forked crash injection, flipped bytes, pruning).

// Usage:
//   CheckpointData d{.step = 20, .meta = {{"model_yaml", yaml}}, .shards = {{"model", params}}};
//   LOOM_RETURN_IF_ERROR(save_checkpoint("runs/x/ckpt", d, /*keep_last=*/3));
//   std::vector<std::string> warnings;
//   LOOM_ASSIGN_OR_RETURN(CheckpointData back, load_latest_checkpoint("runs/x/ckpt", &warnings));
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "checkpoint/safetensors.h"
#include "core/status.h"

namespace loom::ckpt {

// manifest.json "format_version" this code writes and reads.
inline constexpr int kCheckpointFormatVersion = 1;
// Test hook: save_checkpoint calls _exit(kCrashExitCode) after writing this many files of the
// new checkpoint (shards, then manifest.json), before the rename and the COMPLETE marker.
inline constexpr const char* kCrashAfterFilesEnv = "LOOM_CHECKPOINT_CRASH_AFTER_FILES";
inline constexpr int kCrashExitCode = 86;

struct CheckpointData {
  int64_t step = 0;
  nlohmann::json meta;  // the run's resolved config, model_yaml, data position, RNG state, ...
  std::map<std::string, std::vector<Tensor>> shards;  // shard name -> tensors ("model", ...)
  std::string dir;  // the step directory it was read from (set by the loaders; not saved)
};

// "step-00000020": the directory name of a step (8 digits, wider for steps >= 1e8).
std::string checkpoint_dir_name(int64_t step);

// Writes ROOT/step-NNNNNNNN: each shard as <shard>.safetensors plus manifest.json
// {format_version, step, files: [{name, bytes, crc32c}], meta} into ROOT/.tmp-step-NNNNNNNN-<pid>,
// fsyncs every file and the directory, renames it into place, fsyncs ROOT, and only then writes
// the COMPLETE marker (holding the manifest's CRC-32C) and fsyncs it. Then keeps the newest
// `keep_last` complete checkpoints (keep_last <= 0 keeps all) and deletes older ones, older
// incomplete step directories and stale .tmp-* directories. Saving a step that already exists
// replaces it. One writer per ROOT at a time.
core::Status save_checkpoint(const std::string& root, const CheckpointData& data, int keep_last);

// Several writers filling one checkpoint (the ranks of a parallel run, on a filesystem they
// all see): one caller opens the step's staging directory ROOT/.tmp-step-N-shared (removing what
// an earlier, uncommitted attempt left), each writer puts its shards there
// (write_checkpoint_shard, each file fsynced) and hands the returned entry to the committer, who
// then writes the manifest listing every file and publishes the step as save_checkpoint does
// (rename into place, COMPLETE marker last, pruning). Until the commit, readers see nothing new.
struct ShardFile {
  std::string shard;  // "<shard>.safetensors" in the step directory
  int64_t bytes = 0;
  uint32_t crc32c = 0;
};
core::Result<std::string> begin_shared_checkpoint(const std::string& root, int64_t step);
// The staging directory begin_shared_checkpoint opens (what the other writers write into).
std::string shared_checkpoint_staging(const std::string& root, int64_t step);
core::Result<ShardFile> write_checkpoint_shard(const std::string& staging, int64_t step,
                                               const std::string& shard,
                                               const std::vector<Tensor>& tensors);
core::Status commit_shared_checkpoint(const std::string& root, const std::string& staging,
                                      int64_t step, const std::vector<ShardFile>& files,
                                      const nlohmann::json& meta, int keep_last);

// The newest checkpoint in ROOT whose COMPLETE marker exists and whose files match the
// manifest's sizes and CRC-32Cs. Each newer directory that fails is skipped with a line in
// *warnings (may be null) naming it and the reason. No valid checkpoint -> kNotFound naming ROOT
// and what was there. `only_shards` non-empty: read (and verify) just those shards, which must
// all be present (an export needs "model", not the optimizer state); an entry ending in '*'
// names every shard with that prefix ("model*": the weights of a sharded checkpoint too), of
// which at least one must be present.
core::Result<CheckpointData> load_latest_checkpoint(
    const std::string& root, std::vector<std::string>* warnings,
    const std::vector<std::string>& only_shards = {});

// One specific step directory, verified; a corrupt or incomplete one is refused with the
// reason (the file and the mismatch). `only_shards` as above.
core::Result<CheckpointData> load_checkpoint_dir(const std::string& dir,
                                                 const std::vector<std::string>& only_shards = {});

// `path` is a step directory (it holds manifest.json or COMPLETE): that checkpoint, verified;
// otherwise a checkpoint root: its newest complete one, as load_latest_checkpoint. What `loom
// eval` and `loom export-hf` accept as --checkpoint.
core::Result<CheckpointData> load_checkpoint_at(const std::string& path,
                                                std::vector<std::string>* warnings,
                                                const std::vector<std::string>& only_shards = {});

// The step directories of ROOT that carry a COMPLETE marker, oldest first (paths; contents not
// verified).
std::vector<std::string> list_checkpoints(const std::string& root);

}  // namespace loom::ckpt
