// Atomic checkpoint directories with CRC-32C manifests: see checkpoint_store.h. The write
// order (files, fsync, directory fsync, rename, fsync of ROOT, then the marker) follows the
// usual POSIX recipe for crash-consistent replacement (rename(2) is atomic within a file
// system; fsync of the parent makes the new entry durable).
#include "checkpoint/checkpoint_store.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <regex>

#include "checkpoint/crc32c.h"
#include "checkpoint/file_io.h"

namespace loom::ckpt {

namespace fs = std::filesystem;
using core::ErrorCode;
using nlohmann::json;

namespace {

constexpr const char* kManifestName = "manifest.json";
constexpr const char* kMarkerName = "COMPLETE";
constexpr const char* kShardSuffix = ".safetensors";

std::string hex32(uint32_t v) { return fmt::format("0x{:08x}", v); }

// "model.safetensors" -> "model" (a name without the suffix comes back unchanged).
std::string shard_of(const std::string& file_name) {
  const std::string suffix = kShardSuffix;
  return file_name.ends_with(suffix) ? file_name.substr(0, file_name.size() - suffix.size())
                                     : file_name;
}

// The step of a directory named step-NNNNNNNN, or nullopt for anything else.
std::optional<int64_t> parse_step_dir(const std::string& name) {
  static const std::regex kPattern("^step-([0-9]{1,18})$");
  std::smatch m;
  if (!std::regex_match(name, m, kPattern)) return std::nullopt;
  return std::stoll(m[1].str());
}

struct StepDir {
  int64_t step;
  fs::path path;
};

// Every step-* directory under root, oldest first.
std::vector<StepDir> step_dirs(const std::string& root) {
  std::vector<StepDir> dirs;
  std::error_code ec;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_directory(ec)) continue;
    if (auto step = parse_step_dir(it->path().filename().string())) {
      dirs.push_back({*step, it->path()});
    }
  }
  std::sort(dirs.begin(), dirs.end(),
            [](const StepDir& a, const StepDir& b) { return a.step < b.step; });
  return dirs;
}

bool has_marker(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / kMarkerName, ec);
}

// Test hook (see kCrashAfterFilesEnv): -1 when unset.
core::Result<int64_t> crash_after_files() {
  const char* v = std::getenv(kCrashAfterFilesEnv);
  if (v == nullptr || *v == '\0') return int64_t{-1};
  char* end = nullptr;
  const long long n = std::strtoll(v, &end, 10);
  if (*end != '\0' || n < 0) {
    return core::error(ErrorCode::kInvalidArgument,
                       "environment variable {}='{}' must be a non-negative integer",
                       kCrashAfterFilesEnv, v);
  }
  return static_cast<int64_t>(n);
}

void maybe_crash(int64_t crash_after, int64_t files_written) {
  if (crash_after >= 0 && files_written >= crash_after) _exit(kCrashExitCode);
}

core::Status check_shard_name(const std::string& name) {
  static const std::regex kPattern("^[A-Za-z0-9_.-]+$");
  if (!std::regex_match(name, kPattern) || name == "." || name == "..") {
    return core::error(ErrorCode::kInvalidArgument,
                       "checkpoint shard name '{}' is not allowed (use letters, digits, '_', '-', "
                       "'.')",
                       name);
  }
  return core::ok_status();
}

// Writes one shard as <shard>.safetensors into `dir`; returns its manifest entry.
core::Result<json> write_shard_file(const fs::path& dir, int64_t step, const std::string& shard,
                                    const std::vector<Tensor>& tensors) {
  LOOM_RETURN_IF_ERROR(check_shard_name(shard));
  const std::string name = shard + kShardSuffix;
  WrittenFile w;
  const std::map<std::string, std::string> meta = {
      {"format", "pt"}, {"loom_shard", shard}, {"loom_step", std::to_string(step)}};
  LOOM_RETURN_IF_ERROR(write_safetensors((dir / name).string(), tensors, meta, &w));
  return json{{"name", name}, {"bytes", w.bytes}, {"crc32c", w.crc32c}};
}

// Writes manifest.json (listing `files`) into `dir` and makes the directory durable; returns
// the manifest's CRC-32C.
core::Result<uint32_t> write_manifest(const fs::path& dir, int64_t step, const json& files,
                                      const json& meta) {
  const json manifest = {{"format_version", kCheckpointFormatVersion},
                         {"step", step},
                         {"files", files},
                         {"meta", meta.is_null() ? json::object() : meta}};
  const std::string text = manifest.dump(2) + "\n";
  LOOM_RETURN_IF_ERROR(write_file_durable((dir / kManifestName).string(), text));
  LOOM_RETURN_IF_ERROR(fsync_directory(dir.string()));
  return crc32c(text);
}

// Writes the shards and the manifest into `tmp`; returns the manifest's CRC-32C.
core::Result<uint32_t> write_checkpoint_files(const fs::path& tmp, const CheckpointData& data) {
  LOOM_ASSIGN_OR_RETURN(const int64_t crash_after, crash_after_files());
  int64_t files_written = 0;
  maybe_crash(crash_after, files_written);
  json files = json::array();
  for (const auto& [shard, tensors] : data.shards) {
    LOOM_ASSIGN_OR_RETURN(json entry, write_shard_file(tmp, data.step, shard, tensors));
    files.push_back(std::move(entry));
    maybe_crash(crash_after, ++files_written);
  }
  auto crc = write_manifest(tmp, data.step, files, data.meta);
  if (crc.ok()) maybe_crash(crash_after, ++files_written);
  return crc;
}

// Deletes everything but the newest keep_last complete checkpoints, incomplete step
// directories older than `saved_step`, and .tmp-* leftovers. Failures to delete are ignored:
// the new checkpoint is already durable and the next save retries.
void prune(const fs::path& root, int keep_last, int64_t saved_step) {
  std::error_code ec;
  std::vector<StepDir> complete;
  for (const StepDir& d : step_dirs(root.string())) {
    if (has_marker(d.path)) {
      complete.push_back(d);
    } else if (d.step < saved_step) {
      fs::remove_all(d.path, ec);
    }
  }
  if (keep_last > 0 && complete.size() > static_cast<size_t>(keep_last)) {
    for (size_t i = 0; i + static_cast<size_t>(keep_last) < complete.size(); ++i) {
      fs::remove_all(complete[i].path, ec);
    }
  }
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().filename().string().starts_with(".tmp-")) {
      std::error_code rm_ec;
      fs::remove_all(it->path(), rm_ec);
    }
  }
}

core::Status fs_error(const char* what, const fs::path& p, const std::error_code& ec) {
  return core::error(ErrorCode::kIo, "{} '{}' failed: {}", what, p.string(), ec.message());
}

}  // namespace

std::string checkpoint_dir_name(int64_t step) { return fmt::format("step-{:08d}", step); }

namespace {

core::Status prepare_root(const fs::path& root_path) {
  std::error_code ec;
  const bool created_root = fs::create_directories(root_path, ec);
  if (ec) return fs_error("creating checkpoint root", root_path, ec);
  if (created_root) {  // make ROOT's own entry durable too
    const fs::path parent = root_path.parent_path();
    LOOM_RETURN_IF_ERROR(fsync_directory(parent.empty() ? "." : parent.string()));
  }
  return core::ok_status();
}

// Renames the filled staging directory `tmp` into ROOT/step-N (moving an old copy of that step
// aside), then writes the COMPLETE marker and prunes.
core::Status publish(const fs::path& root_path, const fs::path& tmp, int64_t step,
                     uint32_t manifest_crc, int keep_last, const std::string& tag) {
  std::error_code ec;
  const std::string name = checkpoint_dir_name(step);
  const fs::path final_dir = root_path / name;
  const fs::path replaced = root_path / (".tmp-replaced-" + name + "-" + tag);
  if (fs::exists(final_dir, ec)) {  // re-saving a step: move the old copy aside first
    fs::remove_all(replaced, ec);
    fs::rename(final_dir, replaced, ec);
    if (ec) return fs_error("moving aside the old", final_dir, ec);
  }
  fs::rename(tmp, final_dir, ec);
  if (ec) return fs_error("renaming into place", tmp, ec);
  LOOM_RETURN_IF_ERROR(fsync_directory(root_path.string()));
  const json marker = {{"step", step}, {"manifest_crc32c", manifest_crc}};
  LOOM_RETURN_IF_ERROR(
      write_file_durable((final_dir / kMarkerName).string(), marker.dump() + "\n"));
  LOOM_RETURN_IF_ERROR(fsync_directory(final_dir.string()));
  prune(root_path, keep_last, step);
  return core::ok_status();
}

constexpr const char* kSharedTag = "shared";

}  // namespace

core::Status save_checkpoint(const std::string& root, const CheckpointData& data, int keep_last) {
  if (data.step < 0) {
    return core::error(ErrorCode::kInvalidArgument, "checkpoint step {} must be >= 0", data.step);
  }
  for (const auto& [shard, tensors] : data.shards) LOOM_RETURN_IF_ERROR(check_shard_name(shard));
  const fs::path root_path(root);
  LOOM_RETURN_IF_ERROR(prepare_root(root_path));
  std::error_code ec;
  const std::string pid = std::to_string(::getpid());
  const fs::path tmp = root_path / (".tmp-" + checkpoint_dir_name(data.step) + "-" + pid);
  fs::remove_all(tmp, ec);
  if (!fs::create_directory(tmp, ec)) return fs_error("creating", tmp, ec);
  auto manifest_crc = write_checkpoint_files(tmp, data);
  if (!manifest_crc.ok()) {
    fs::remove_all(tmp, ec);
    return manifest_crc.status();
  }
  return publish(root_path, tmp, data.step, *manifest_crc, keep_last, pid);
}

core::Result<std::string> begin_shared_checkpoint(const std::string& root, int64_t step) {
  if (step < 0) {
    return core::error(ErrorCode::kInvalidArgument, "checkpoint step {} must be >= 0", step);
  }
  LOOM_RETURN_IF_ERROR(prepare_root(fs::path(root)));
  std::error_code ec;
  const fs::path tmp = shared_checkpoint_staging(root, step);
  fs::remove_all(tmp, ec);  // an earlier attempt at this step that never committed
  if (!fs::create_directory(tmp, ec)) return fs_error("creating", tmp, ec);
  return tmp.string();
}

std::string shared_checkpoint_staging(const std::string& root, int64_t step) {
  return (fs::path(root) / (".tmp-" + checkpoint_dir_name(step) + "-" + kSharedTag)).string();
}

core::Result<ShardFile> write_checkpoint_shard(const std::string& staging, int64_t step,
                                               const std::string& shard,
                                               const std::vector<Tensor>& tensors) {
  LOOM_ASSIGN_OR_RETURN(const json entry, write_shard_file(staging, step, shard, tensors));
  return ShardFile{shard, entry.at("bytes").get<int64_t>(), entry.at("crc32c").get<uint32_t>()};
}

core::Status commit_shared_checkpoint(const std::string& root, const std::string& staging,
                                      int64_t step, const std::vector<ShardFile>& files,
                                      const json& meta, int keep_last) {
  json entries = json::array();
  for (const ShardFile& f : files) {
    entries.push_back({{"name", f.shard + kShardSuffix}, {"bytes", f.bytes}, {"crc32c", f.crc32c}});
  }
  LOOM_ASSIGN_OR_RETURN(const uint32_t crc, write_manifest(staging, step, entries, meta));
  return publish(fs::path(root), fs::path(staging), step, crc, keep_last, kSharedTag);
}

// --- Loading and verification -----------------------------------------------------------

namespace {

core::Status corrupt(const std::string& reason) { return core::Status(ErrorCode::kIo, reason); }

core::Result<json> parse_json_bytes(const std::vector<uint8_t>& bytes, const std::string& what) {
  try {
    return json::parse(bytes.begin(), bytes.end());
  } catch (const json::exception& e) {
    return corrupt(fmt::format("{}: not valid JSON ({})", what, e.what()));
  }
}

// The manifest CRC-32C recorded in the COMPLETE marker.
core::Result<uint32_t> read_marker(const fs::path& dir) {
  auto bytes = read_file_bytes((dir / kMarkerName).string());
  if (!bytes.ok()) {
    if (bytes.status().code() == ErrorCode::kNotFound) {
      return corrupt("no COMPLETE marker (the save did not finish)");
    }
    return bytes.status();
  }
  LOOM_ASSIGN_OR_RETURN(json marker, parse_json_bytes(*bytes, kMarkerName));
  auto it = marker.find("manifest_crc32c");
  if (!marker.is_object() || it == marker.end() || !it->is_number_unsigned()) {
    return corrupt("COMPLETE: missing 'manifest_crc32c'");
  }
  return it->get<uint32_t>();
}

core::Result<json> read_manifest(const fs::path& dir, uint32_t expected_crc) {
  auto bytes = read_file_bytes((dir / kManifestName).string());
  if (!bytes.ok()) return corrupt(fmt::format("{}: {}", kManifestName, bytes.status().message()));
  const uint32_t crc = crc32c(bytes->data(), bytes->size());
  if (crc != expected_crc) {
    return corrupt(fmt::format("{}: crc32c {} != COMPLETE marker {}", kManifestName, hex32(crc),
                               hex32(expected_crc)));
  }
  LOOM_ASSIGN_OR_RETURN(json manifest, parse_json_bytes(*bytes, kManifestName));
  if (!manifest.is_object() || !manifest.contains("format_version") ||
      !manifest["format_version"].is_number_integer()) {
    return corrupt(fmt::format("{}: missing integer 'format_version'", kManifestName));
  }
  const int64_t version = manifest["format_version"].get<int64_t>();
  if (version != kCheckpointFormatVersion) {
    return corrupt(fmt::format("{}: format_version {} is not supported (this Loom reads {})",
                               kManifestName, version, kCheckpointFormatVersion));
  }
  if (!manifest.contains("step") || !manifest["step"].is_number_integer() ||
      !manifest.contains("files") || !manifest["files"].is_array()) {
    return corrupt(fmt::format("{}: needs integer 'step' and array 'files'", kManifestName));
  }
  return manifest;
}

// Reads one manifest entry's file, checks size and CRC-32C, and parses its tensors.
core::Status load_shard(const fs::path& dir, const json& entry, CheckpointData& out) {
  if (!entry.is_object() || !entry.contains("name") || !entry["name"].is_string() ||
      !entry.contains("bytes") || !entry["bytes"].is_number_unsigned() ||
      !entry.contains("crc32c") || !entry["crc32c"].is_number_unsigned()) {
    return corrupt(fmt::format("{}: file entry {} needs name, bytes and crc32c", kManifestName,
                               entry.dump()));
  }
  const std::string name = entry["name"].get<std::string>();
  const std::string shard = shard_of(name);
  if (!name.ends_with(kShardSuffix) || !check_shard_name(shard).ok()) {
    return corrupt(fmt::format("{}: file name '{}' is not <shard>{}", kManifestName, name,
                               kShardSuffix));
  }
  auto bytes = read_file_bytes((dir / name).string());
  if (!bytes.ok()) return corrupt(fmt::format("shard {}: {}", name, bytes.status().message()));
  const uint64_t want_bytes = entry["bytes"].get<uint64_t>();
  if (bytes->size() != want_bytes) {
    return corrupt(fmt::format("shard {}: {} bytes != manifest {} (truncated or overwritten)",
                               name, bytes->size(), want_bytes));
  }
  const uint32_t crc = crc32c(bytes->data(), bytes->size());
  const uint32_t want_crc = entry["crc32c"].get<uint32_t>();
  if (crc != want_crc) {
    return corrupt(fmt::format("shard {}: crc32c {} != manifest {}", name, hex32(crc),
                               hex32(want_crc)));
  }
  auto tensors = parse_safetensors(*bytes, name);
  if (!tensors.ok()) return corrupt(tensors.status().message());
  out.shards[shard] = std::move(tensors).value();
  return core::ok_status();
}

// "model" matches the shard "model"; "model*" every shard whose name starts with "model".
bool shard_matches(const std::string& want, const std::string& shard) {
  if (!want.empty() && want.back() == '*') return shard.starts_with(want.substr(0, want.size() - 1));
  return shard == want;
}

// Loads `dir` (all shards, or only_shards) if it verifies; the error message is the reason
// (without the directory).
core::Result<CheckpointData> read_verified(const fs::path& dir,
                                           const std::vector<std::string>& only_shards) {
  LOOM_ASSIGN_OR_RETURN(const uint32_t manifest_crc, read_marker(dir));
  LOOM_ASSIGN_OR_RETURN(json manifest, read_manifest(dir, manifest_crc));
  CheckpointData data;
  data.step = manifest["step"].get<int64_t>();
  data.dir = dir.string();
  const auto dir_step = parse_step_dir(dir.filename().string());
  if (dir_step && *dir_step != data.step) {
    return corrupt(fmt::format("{}: step {} does not match the directory name",
                               kManifestName, data.step));
  }
  data.meta = manifest.value("meta", json::object());
  std::vector<std::string> listed;
  for (const json& entry : manifest["files"]) {
    const std::string name = entry.is_object() ? entry.value("name", std::string()) : "";
    const std::string shard = shard_of(name);
    listed.push_back(shard);
    if (!only_shards.empty() &&
        std::none_of(only_shards.begin(), only_shards.end(),
                     [&](const std::string& want) { return shard_matches(want, shard); })) {
      continue;
    }
    LOOM_RETURN_IF_ERROR(load_shard(dir, entry, data));
  }
  for (const std::string& want : only_shards) {
    if (std::none_of(data.shards.begin(), data.shards.end(),
                     [&](const auto& kv) { return shard_matches(want, kv.first); })) {
      std::string have;
      for (const std::string& s : listed) have += (have.empty() ? "" : ", ") + s;
      return core::error(ErrorCode::kNotFound, "no shard '{}' (the manifest lists: {})", want,
                         have.empty() ? "none" : have);
    }
  }
  return data;
}

}  // namespace

core::Result<CheckpointData> load_checkpoint_dir(const std::string& dir,
                                                 const std::vector<std::string>& only_shards) {
  std::error_code ec;
  fs::path path = fs::path(dir);
  if (path.filename().empty()) path = path.parent_path();  // "ckpt/step-00000020/"
  if (!fs::is_directory(path, ec)) {
    return core::error(ErrorCode::kNotFound, "checkpoint directory '{}' does not exist", dir);
  }
  auto data = read_verified(path, only_shards);
  if (!data.ok()) {
    return core::error(data.status().code(), "checkpoint '{}' refused: {}", dir,
                       data.status().message());
  }
  return data;
}

core::Result<CheckpointData> load_checkpoint_at(const std::string& path,
                                                std::vector<std::string>* warnings,
                                                const std::vector<std::string>& only_shards) {
  std::error_code ec;
  const fs::path p(path);
  if (fs::exists(p / "manifest.json", ec) || fs::exists(p / "COMPLETE", ec)) {
    return load_checkpoint_dir(path, only_shards);
  }
  return load_latest_checkpoint(path, warnings, only_shards);
}

core::Result<CheckpointData> load_latest_checkpoint(const std::string& root,
                                                    std::vector<std::string>* warnings,
                                                    const std::vector<std::string>& only_shards) {
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    return core::error(ErrorCode::kNotFound, "checkpoint root '{}' does not exist", root);
  }
  std::vector<StepDir> dirs = step_dirs(root);
  std::vector<std::string> found;
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) {
    auto data = read_verified(it->path, only_shards);
    if (data.ok()) return data;
    const std::string line = fmt::format("skipping checkpoint '{}': {}", it->path.string(),
                                         data.status().message());
    if (warnings) warnings->push_back(line);
    found.push_back(it->path.filename().string() + " (" + data.status().message() + ")");
  }
  std::string what = found.empty() ? "no step-* directories" : "";
  for (size_t i = 0; i < found.size(); ++i) what += (i ? "; " : "") + found[i];
  return core::error(ErrorCode::kNotFound, "no complete checkpoint in '{}' (found: {})", root,
                     what);
}

std::vector<std::string> list_checkpoints(const std::string& root) {
  std::vector<std::string> out;
  for (const StepDir& d : step_dirs(root)) {
    if (has_marker(d.path)) out.push_back(d.path.string());
  }
  return out;
}

}  // namespace loom::ckpt
