// Runs a shell command and captures its standard output: the end-to-end tests drive the `loom`
// executable (and mpirun) as a user would, through this one helper.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace loom::testing {

#ifdef LOOM_BINARY
// The loom executable the tests drive: LOOM_TEST_LOOM_BINARY when set (scripts/gpu-check.sh sets
// it: the gpu tests run on another machine than the one that built them), else the build's.
inline std::string loom_binary() {
  const char* env = std::getenv("LOOM_TEST_LOOM_BINARY");
  return env != nullptr && *env != '\0' ? std::string(env) : std::string(LOOM_BINARY);
}
#endif

struct ShellOutput {
  int exit_code = -1;   // the shell's exit status (a child killed by signal s reads 128 + s)
  bool killed = false;  // the command died of SIGKILL
  std::string text;     // standard output (with standard error when the command redirects it)
};

// `cmd` through /bin/sh (popen); with `echo` the output is also copied to this process's
// standard output as it arrives (the iteration lines of long runs).
inline ShellOutput run_shell(const std::string& cmd, bool echo = false) {
  ShellOutput out;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return out;
  std::array<char, 4096> buf{};
  size_t n = 0;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) {
    out.text.append(buf.data(), n);
    if (echo) fwrite(buf.data(), 1, n, stdout);
  }
  const int status = pclose(pipe);
  out.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  out.killed = out.exit_code == 128 + 9 || (WIFSIGNALED(status) && WTERMSIG(status) == 9);
  return out;
}

}  // namespace loom::testing
