// Data directory lookup: see data_paths.h.
#include "core/data_paths.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <set>

namespace loom::core {

namespace fs = std::filesystem;

std::vector<std::string> data_search_dirs() {
  std::vector<std::string> dirs;
  if (const char* env = std::getenv("LOOM_DATA_DIR"); env && *env) dirs.emplace_back(env);
#ifdef LOOM_SOURCE_DATA_DIR
  dirs.emplace_back(LOOM_SOURCE_DATA_DIR);
#endif
#ifdef LOOM_INSTALL_DATA_DIR
  dirs.emplace_back(LOOM_INSTALL_DATA_DIR);
#endif
  return dirs;
}

std::vector<std::string> list_data_files(const std::string& subdir) {
  std::set<std::string> names;
  for (const auto& dir : data_search_dirs()) {
    std::error_code ec;
    const fs::path p = fs::path(dir) / subdir;
    if (!fs::is_directory(p, ec)) continue;
    for (const auto& entry : fs::directory_iterator(p, ec)) {
      if (entry.path().extension() == ".yaml") names.insert(entry.path().stem().string());
    }
    if (!names.empty()) break;  // the first directory that has the data wins
  }
  return {names.begin(), names.end()};
}

Result<std::string> resolve_data_file(const std::string& subdir, const std::string& name_or_path,
                                      const std::string& what) {
  std::error_code ec;
  if (name_or_path.empty()) {
    return error(ErrorCode::kInvalidArgument, "no {} given", what);
  }
  if (fs::is_regular_file(name_or_path, ec)) return name_or_path;
  const bool looks_like_path = name_or_path.find('/') != std::string::npos ||
                               name_or_path.ends_with(".yaml") || name_or_path.ends_with(".json");
  if (looks_like_path) {
    return error(ErrorCode::kNotFound, "{} file '{}' does not exist", what, name_or_path);
  }
  for (const auto& dir : data_search_dirs()) {
    const fs::path p = fs::path(dir) / subdir / (name_or_path + ".yaml");
    if (fs::is_regular_file(p, ec)) return p.string();
  }
  std::string names;
  for (const auto& n : list_data_files(subdir)) names += (names.empty() ? "" : ", ") + n;
  if (names.empty()) {
    return error(ErrorCode::kNotFound,
                 "unknown {} '{}': no {}/ directory found (searched $LOOM_DATA_DIR and the build "
                 "and install locations)",
                 what, name_or_path, subdir);
  }
  return error(ErrorCode::kNotFound, "unknown {} '{}' (available: {}; or give a path to a file)",
               what, name_or_path, names);
}

}  // namespace loom::core
