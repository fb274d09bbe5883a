#include "detail/atomic_file.h"

#include <ckpt/checkpoint_error.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

namespace ckpt::detail {
namespace {

constexpr std::size_t kBufferSize = 1 << 20;

std::string system_reason(int error_number) { return std::strerror(error_number); }

}  // namespace

bool is_temp_name(const std::string& filename) {
  return !filename.empty() && filename[0] == '.' && filename.find(kTempMarker) != std::string::npos;
}

AtomicFile::AtomicFile(std::filesystem::path destination) : destination_(std::move(destination)) {
  const auto directory = destination_.has_parent_path() ? destination_.parent_path()
                                                        : std::filesystem::path(".");
  std::string pattern =
      (directory / ("." + destination_.filename().string() + kTempMarker + "XXXXXX")).string();
  std::vector<char> name(pattern.begin(), pattern.end());
  name.push_back('\0');
  fd_ = ::mkostemp(name.data(), O_CLOEXEC);
  if (fd_ < 0) {
    const int error_number = errno;
    throw CheckpointError("cannot create a temporary file for " + destination_.string() + ": " +
                              system_reason(error_number),
                          destination_, error_number);
  }
  temp_path_ = name.data();
  // mkstemp creates 0600; checkpoints are ordinary files, readable as the umask allows.
  const mode_t mask = ::umask(0);
  ::umask(mask);
  ::fchmod(fd_, 0666 & ~mask);
  buffer_.reserve(kBufferSize);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !temp_path_.empty()) ::unlink(temp_path_.c_str());
}

void AtomicFile::fail(const std::string& what, int error_number) {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  ::unlink(temp_path_.c_str());
  temp_path_.clear();
  throw CheckpointError("cannot write " + destination_.string() + ": " + what + " failed: " +
                            system_reason(error_number),
                        destination_, error_number);
}

void AtomicFile::write_fully(const char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = ::write(fd_, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("write", errno);
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
}

void AtomicFile::flush_buffer() {
  write_fully(buffer_.data(), buffer_.size());
  buffer_.clear();
}

void AtomicFile::write(const void* data, std::size_t size) {
  const char* bytes = static_cast<const char*>(data);
  bytes_ += size;
  if (buffer_.size() + size <= kBufferSize) {
    buffer_.append(bytes, size);
    return;
  }
  flush_buffer();
  if (size < kBufferSize) {
    buffer_.append(bytes, size);
  } else {
    write_fully(bytes, size);  // large tensor data goes straight from its own memory
  }
}

void AtomicFile::commit() {
  flush_buffer();
  if (::fsync(fd_) != 0) fail("fsync", errno);
  if (::close(fd_) != 0) {
    fd_ = -1;
    fail("close", errno);
  }
  fd_ = -1;
  if (::rename(temp_path_.c_str(), destination_.c_str()) != 0) fail("rename", errno);
  committed_ = true;
  fsync_directory(destination_.has_parent_path() ? destination_.parent_path()
                                                 : std::filesystem::path("."));
}

void fsync_directory(const std::filesystem::path& directory) {
  const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    const int error_number = errno;
    throw CheckpointError("cannot open directory " + directory.string() + " to fsync it: " +
                              system_reason(error_number),
                          directory, error_number);
  }
  if (::fsync(fd) != 0 && errno != EINVAL) {
    const int error_number = errno;
    ::close(fd);
    throw CheckpointError(
        "cannot fsync directory " + directory.string() + ": " + system_reason(error_number),
        directory, error_number);
  }
  ::close(fd);
}

}  // namespace ckpt::detail
