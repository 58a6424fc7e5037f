// Test helpers shared by the checkpoint suites that run Python: a command's output and exit
// status, and the first interpreter that imports numpy ($LOOM_PYTHON, /usr/bin/python3,
// python3), or "" so that the test skips.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace loom::ckpt::test_util {

inline std::string run_capture(const std::string& cmd, int* status) {
  std::string out;
  FILE* f = ::popen(cmd.c_str(), "r");
  if (!f) {
    *status = -1;
    return out;
  }
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
  *status = ::pclose(f);
  return out;
}

inline std::string python_with_numpy() {
  static const std::string found = [] {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("LOOM_PYTHON")) candidates.push_back(env);
    candidates.push_back("/usr/bin/python3");
    candidates.push_back("python3");
    for (const std::string& py : candidates) {
      int status = 0;
      run_capture(py + " -c 'import numpy' 2>/dev/null", &status);
      if (status == 0) return py;
    }
    return std::string();
  }();
  return found;
}

}  // namespace loom::ckpt::test_util
