// Cluster profiles: every profile the validation files name ships under that exact name, all
// load through the strict schema, every number carries a source comment, and bad profiles are
// rejected with the field named.
#include "core/cluster_profile.h"

#include <gtest/gtest.h>

#include <fstream>
#include <regex>

#include "core/data_paths.h"
#include "core/yaml_reader.h"

namespace loom::core {
namespace {

TEST(ClusterProfiles, ShipsEveryProfileTheValidationFilesName) {
  const auto names = list_data_files("cluster_profiles");
  for (const char* required : {"dgx-a100-80gb", "dgx-a100-40gb", "jean-zay-a100-80gb",
                               "a100-80gb-4xhdr", "dgx-h100-80gb", "grand-teton-h100-96gb",
                               "dgx-h200", "h200-1gpu", "local-cpu"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), required), names.end()) << required;
  }
  // And every cluster_profile named in the vendored validation files exists.
  for (const char* file : {"published_runs.yaml", "vtrain_single_node.yaml"}) {
    auto runs = load_yaml_file(std::string(LOOM_TEST_DATA_DIR) + "/validation/" + file);
    ASSERT_TRUE(runs.ok()) << runs.status().message();
    for (const auto& run : *runs) {
      if (!run["cluster_profile"] || run["cluster_profile"].IsNull()) continue;
      const std::string name = run["cluster_profile"].Scalar();
      EXPECT_NE(std::find(names.begin(), names.end(), name), names.end()) << name;
    }
  }
}

TEST(ClusterProfiles, AllLoadAndNamesMatchFiles) {
  for (const auto& name : list_data_files("cluster_profiles")) {
    auto p = load_cluster_profile(name);
    ASSERT_TRUE(p.ok()) << p.status().message();
    EXPECT_EQ(p->name, name);
    EXPECT_GT(p->usable_memory_gib(), 0.5 * p->device.memory_gib) << name;
  }
}

TEST(ClusterProfiles, EveryNumberHasASourceComment) {
  // A numeric value must have a comment on its line or on the line above (the house rule:
  // "every number carries its source in a comment").
  const std::regex numeric(R"(^\s*[A-Za-z_]+:\s*[-+]?[0-9][0-9.eE+-]*\s*(#.*)?$)");
  for (const auto& dir : data_search_dirs()) {
    for (const auto& name : list_data_files("cluster_profiles")) {
      std::ifstream in(dir + "/cluster_profiles/" + name + ".yaml");
      if (!in) continue;
      std::string line, previous;
      int line_no = 0;
      while (std::getline(in, line)) {
        ++line_no;
        if (std::regex_match(line, numeric)) {
          const size_t first = previous.find_first_not_of(' ');
          const bool comment_above = first != std::string::npos && previous[first] == '#';
          const bool commented = line.find('#') != std::string::npos || comment_above;
          EXPECT_TRUE(commented) << name << ".yaml:" << line_no << ": " << line;
        }
        previous = line;
      }
    }
    break;
  }
}

TEST(ClusterProfiles, RejectsUnknownKeysAndImpossibleValues) {
  auto p = load_cluster_profile("dgx-a100-80gb");
  ASSERT_TRUE(p.ok());
  auto node = load_yaml_file(resolve_data_file("cluster_profiles", "dgx-a100-80gb", "x").value());
  ASSERT_TRUE(node.ok());
  YAML::Node typo = YAML::Clone(*node);
  typo["device"]["memory_gb"] = 80;
  auto r = cluster_profile_from_yaml(typo, "typo.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("unknown key 'memory_gb' in 'device'"), std::string::npos)
      << r.status().message();

  YAML::Node negative = YAML::Clone(*node);
  negative["device"]["memory_gib"] = -1;
  r = cluster_profile_from_yaml(negative, "neg.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("device.memory_gib"), std::string::npos);

  YAML::Node overhead = YAML::Clone(*node);
  overhead["memory_overheads"]["headroom_gib"] = 200;
  r = cluster_profile_from_yaml(overhead, "over.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("leave no memory"), std::string::npos);

  YAML::Node kind = YAML::Clone(*node);
  kind["device"]["kind"] = "tpu";
  r = cluster_profile_from_yaml(kind, "kind.yaml");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("allowed: gpu, cpu"), std::string::npos);
}

TEST(ClusterProfiles, UnknownProfileListsAvailable) {
  auto p = load_cluster_profile("dgx-b200");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), ErrorCode::kNotFound);
  EXPECT_NE(p.status().message().find("dgx-a100-80gb"), std::string::npos);
}

}  // namespace
}  // namespace loom::core
