// Removes the scratch directories the dataset tests create (temp_directory_path()/loom_ds_*_PID)
// when the test process ends, so that repeated runs leave nothing behind in /tmp.
#include <unistd.h>

#include <filesystem>
#include <string>

#include <gtest/gtest.h>

namespace {

class ScratchCleanup : public ::testing::Environment {
 public:
  void TearDown() override {
    namespace fs = std::filesystem;
    std::string suffix(1, '_');  // not "_" + to_string(): GCC 12 -Wrestrict false positive
    suffix += std::to_string(::getpid());
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(fs::temp_directory_path(), ec)) {
      const std::string name = e.path().filename().string();
      if (name.rfind("loom_ds_", 0) == 0 && name.size() > suffix.size() &&
          name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
        fs::remove_all(e.path(), ec);
      }
    }
  }
};

[[maybe_unused]] ::testing::Environment* const kCleanup =
    ::testing::AddGlobalTestEnvironment(new ScratchCleanup);

}  // namespace
