// Locating shipped data: model presets (models/*.yaml) and cluster profiles
// (cluster_profiles/*.yaml). Search order: $LOOM_DATA_DIR, the source tree the binary was
// built from, the install prefix (share/loom).
#pragma once

#include <string>
#include <vector>

#include "core/status.h"

namespace loom::core {

std::vector<std::string> data_search_dirs();

// Names (file stems) of the YAML files in `subdir` ("models" or "cluster_profiles"), sorted.
std::vector<std::string> list_data_files(const std::string& subdir);

// Resolves `name_or_path`: an existing file path is returned as is; otherwise `name` is looked
// up as <dir>/<subdir>/<name>.yaml. The error lists the available names.
Result<std::string> resolve_data_file(const std::string& subdir, const std::string& name_or_path,
                                      const std::string& what);

}  // namespace loom::core
