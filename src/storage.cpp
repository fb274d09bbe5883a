#include <ckpt/storage.h>

#include <ckpt/checkpoint_error.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <system_error>
#include <vector>

namespace ckpt {
namespace {

[[noreturn]] void system_failure(const std::string& what, const std::filesystem::path& path,
                                 int error_number) {
  throw CheckpointError(what + " " + path.string() + " failed: " + std::strerror(error_number),
                        path, error_number);
}

class LocalFile final : public WritableFile {
 public:
  LocalFile(int fd, std::filesystem::path path) : fd_(fd), path_(std::move(path)) {}
  ~LocalFile() override {
    if (fd_ >= 0) ::close(fd_);
  }

  void append(const void* data, std::size_t size) override {
    const char* p = static_cast<const char*>(data);
    while (size > 0) {
      const ssize_t n = ::write(fd_, p, size);
      if (n < 0) {
        if (errno == EINTR) continue;
        system_failure("write to", path_, errno);
      }
      p += n;
      size -= static_cast<std::size_t>(n);
    }
  }
  void sync() override {
    if (::fdatasync(fd_) != 0) system_failure("fsync of", path_, errno);
  }
  void close() override {
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) system_failure("close of", path_, errno);
  }

 private:
  int fd_;
  std::filesystem::path path_;
};

class LocalStorage final : public Storage {
 public:
  std::unique_ptr<WritableFile> create_unique(const std::filesystem::path& directory,
                                              const std::string& name_prefix,
                                              std::filesystem::path* path) override {
    const std::string pattern = (directory / (name_prefix + "XXXXXX")).string();
    std::vector<char> name(pattern.begin(), pattern.end());
    name.push_back('\0');
    const int fd = ::mkostemp(name.data(), O_CLOEXEC);
    if (fd < 0) system_failure("creating a file in", directory, errno);
    // mkstemp creates 0600; checkpoints are ordinary files, readable as the umask allows.
    const mode_t mask = ::umask(0);
    ::umask(mask);
    ::fchmod(fd, 0666 & ~mask);
    *path = name.data();
    return std::make_unique<LocalFile>(fd, *path);
  }
  void rename(const std::filesystem::path& from, const std::filesystem::path& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) system_failure("rename to", to, errno);
  }
  void remove(const std::filesystem::path& path) override {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) system_failure("removal of", path, errno);
  }
  void sync_directory(const std::filesystem::path& directory) override {
    const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) system_failure("opening directory", directory, errno);
    if (::fsync(fd) != 0 && errno != EINVAL) {
      const int error_number = errno;
      ::close(fd);
      system_failure("fsync of directory", directory, error_number);
    }
    ::close(fd);
  }
  void create_directories(const std::filesystem::path& directory) override {
    std::error_code ec;
    std::filesystem::create_directories(directory, ec);
    if (ec) {
      throw CheckpointError("cannot create directory " + directory.string() + ": " + ec.message(),
                            directory, ec.value());
    }
  }
};

}  // namespace

std::uint64_t Storage::available_space(const std::filesystem::path& directory) {
  struct statvfs fs {};
  if (::statvfs(directory.c_str(), &fs) != 0) {
    const int error = errno;
    throw CheckpointError("cannot query free space of " + directory.string() + ": " +
                              std::strerror(error),
                          directory, error);
  }
  return static_cast<std::uint64_t>(fs.f_bavail) * static_cast<std::uint64_t>(fs.f_frsize);
}

std::shared_ptr<Storage> Storage::local() {
  static const std::shared_ptr<Storage> instance = std::make_shared<LocalStorage>();
  return instance;
}

}  // namespace ckpt
