// Durable POSIX file writes and whole-file reads: see file_io.h. write() and read() loop on
// short counts and EINTR. Exercised by tests/checkpoint/checkpoint_store_test.cc.
#include "checkpoint/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "checkpoint/crc32c.h"

namespace loom::ckpt {

namespace {
core::Status errno_status(const char* what, const std::string& path) {
  return core::error(core::ErrorCode::kIo, "{} '{}' failed: {}", what, path, std::strerror(errno));
}
}  // namespace

DurableFile::~DurableFile() {
  if (fd_ >= 0) ::close(fd_);
}

core::Status DurableFile::open(const std::string& path) {
  path_ = path;
  crc_ = 0;
  bytes_ = 0;
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) return errno_status("creating", path);
  return core::ok_status();
}

core::Status DurableFile::append(const void* data, size_t size) {
  const auto* p = static_cast<const uint8_t*>(data);
  crc_ = crc32c_update(crc_, p, size);
  bytes_ += size;
  while (size > 0) {
    const ssize_t n = ::write(fd_, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno_status("writing", path_);
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return core::ok_status();
}

core::Status DurableFile::finish() {
  if (::fsync(fd_) != 0) return errno_status("fsync of", path_);
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) return errno_status("closing", path_);
  return core::ok_status();
}

core::Status write_file_durable(const std::string& path, std::string_view text) {
  DurableFile f;
  LOOM_RETURN_IF_ERROR(f.open(path));
  LOOM_RETURN_IF_ERROR(f.append(text));
  return f.finish();
}

core::Status fsync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno_status("opening directory", dir);
  const int rc = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  errno = saved;
  if (rc != 0) return errno_status("fsync of directory", dir);
  return core::ok_status();
}

core::Result<std::vector<uint8_t>> read_file_bytes(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) {
      return core::error(core::ErrorCode::kNotFound, "'{}' does not exist", path);
    }
    return errno_status("opening", path);
  }
  struct stat st{};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return errno_status("stat of", path);
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      if (n == 0) return core::error(core::ErrorCode::kIo, "'{}' shrank while being read", path);
      return errno_status("reading", path);
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return bytes;
}

}  // namespace loom::ckpt
