// Durable file writes for checkpoints and exports: POSIX open/write/fsync with a running
// CRC-32C and byte count, directory fsync (so a rename or a new entry survives a power loss),
// and whole-file reads. Errors name the path and strerror(errno).
// Exercised by the checkpoint store and safetensors tests in tests/checkpoint/.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace loom::ckpt {

// Writes one file: open() truncates, append() writes everything it is given, finish() fsyncs
// and closes. The destructor closes without fsync (a failed write leaves a partial file that
// the caller discards).
class DurableFile {
 public:
  DurableFile() = default;
  DurableFile(const DurableFile&) = delete;
  DurableFile& operator=(const DurableFile&) = delete;
  ~DurableFile();

  core::Status open(const std::string& path);
  core::Status append(const void* data, size_t size);
  core::Status append(std::string_view s) { return append(s.data(), s.size()); }
  core::Status finish();

  uint32_t crc32c() const { return crc_; }
  uint64_t bytes() const { return bytes_; }
  const std::string& path() const { return path_; }

 private:
  int fd_ = -1;
  std::string path_;
  uint32_t crc_ = 0;
  uint64_t bytes_ = 0;
};

// Writes `text` to `path` durably (open, write, fsync, close).
core::Status write_file_durable(const std::string& path, std::string_view text);

// fsyncs a directory so that entries created or renamed in it are on disk.
core::Status fsync_directory(const std::string& dir);

core::Result<std::vector<uint8_t>> read_file_bytes(const std::string& path);

}  // namespace loom::ckpt
