// Reading and atomically writing PREFIX.json (see metadata.h).
// Tested through tests/dataset/markov_source_test.cc and prepare_test.cc.
#include "dataset/metadata.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace loom::data {

using core::ErrorCode;

std::string metadata_path(const std::string& prefix) { return prefix + ".json"; }

core::Result<nlohmann::json> read_metadata(const std::string& prefix) {
  const std::string path = metadata_path(prefix);
  std::ifstream in(path);
  if (!in) return core::error(ErrorCode::kNotFound, "{} does not exist", path);
  try {
    nlohmann::json j = nlohmann::json::parse(in);
    if (!j.is_object()) return core::error(ErrorCode::kParse, "{}: expected a JSON object", path);
    return j;
  } catch (const nlohmann::json::exception& e) {
    return core::error(ErrorCode::kParse, "{}: not valid JSON: {}", path, e.what());
  }
}

core::Status write_metadata(const std::string& prefix, const nlohmann::json& metadata) {
  const std::string path = metadata_path(prefix);
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << metadata.dump(2) << "\n";
    if (!out) return core::error(ErrorCode::kIo, "cannot write {}", tmp);
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return core::error(ErrorCode::kIo, "cannot move {} to {}: {}", tmp, path, ec.message());
  return core::ok_status();
}

}  // namespace loom::data
