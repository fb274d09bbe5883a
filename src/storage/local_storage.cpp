#include <ckpt/local_storage.h>

#include <ckpt/checkpoint_error.h>
#include <ckpt/logger.h>

#include "storage/temporary_name.h"

#include <spdlog/spdlog.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
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

std::filesystem::path directory_of(const std::filesystem::path& path) {
  return path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
}

int64_t mtime_of(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

// ---------------------------------------------------------------- the real system calls

class PosixFile final : public PosixFileSystem::File {
 public:
  PosixFile(int fd, std::filesystem::path path) : fd_(fd), path_(std::move(path)) {}
  ~PosixFile() override {
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
      appended_ += static_cast<uint64_t>(n);
    }
    // Starts the disk write of every few MB as they are appended, rather than all of it at the
    // fsync, so that the disk works while the rest is still being copied in (RocksDB's
    // bytes_per_sync). Measured here: 256 MB appended in 4 MB pieces and fdatasync'd took 0.187 s
    // this way and 0.230 s without (medians of 8, alternating). Only a start: durability is still
    // the fdatasync at commit, which also reports any error this one hits.
    if (appended_ - writeback_started_ >= kWritebackEvery) {
      ::sync_file_range(fd_, static_cast<off_t>(writeback_started_),
                        static_cast<off_t>(appended_ - writeback_started_), SYNC_FILE_RANGE_WRITE);
      writeback_started_ = appended_;
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
  static constexpr uint64_t kWritebackEvery = 8 << 20;
  int fd_;
  std::filesystem::path path_;
  uint64_t appended_ = 0;
  uint64_t writeback_started_ = 0;
};

class PosixReader final : public RandomAccessFile {
 public:
  PosixReader(int fd, uint64_t size, std::filesystem::path path)
      : fd_(fd), size_(size), path_(std::move(path)) {}
  ~PosixReader() override { ::close(fd_); }

  uint64_t size() const override { return size_; }
  std::shared_ptr<char> map() const override {
    if (size_ == 0) return nullptr;  // mmap refuses empty ranges; read() reports the file as empty
    // Readable and writable but private (copy-on-write): a loaded tensor may alias the mapping and
    // be modified in place like any other tensor without the file changing.
    void* base = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd_, 0);
    if (base == MAP_FAILED) system_failure("memory mapping of", path_, errno);
    const std::size_t length = size_;
    return std::shared_ptr<char>(static_cast<char*>(base),
                                 [length](char* p) { ::munmap(p, length); });
  }
  void read(uint64_t offset, std::size_t size, void* out) const override {
    char* p = static_cast<char*>(out);
    while (size > 0) {
      const ssize_t n = ::pread(fd_, p, size, static_cast<off_t>(offset));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) system_failure("read of", path_, errno);
      if (n == 0) {
        throw CheckpointError("cannot read " + path_.string() + ": file shrank while reading",
                              path_);
      }
      p += n;
      offset += static_cast<uint64_t>(n);
      size -= static_cast<std::size_t>(n);
    }
  }

 private:
  int fd_;
  uint64_t size_;
  std::filesystem::path path_;
};

class RealPosixFileSystem final : public PosixFileSystem {
 public:
  std::unique_ptr<File> create_unique(const std::filesystem::path& directory,
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
    return std::make_unique<PosixFile>(fd, *path);
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
  std::optional<uint64_t> available_space(const std::filesystem::path& directory) override {
    struct statvfs fs {};
    if (::statvfs(directory.c_str(), &fs) != 0) {
      const int error = errno;
      throw CheckpointError(
          "cannot query free space of " + directory.string() + ": " + std::strerror(error),
          directory, error);
    }
    if (fs.f_blocks == 0) {
      // Some FUSE and network filesystems report no blocks at all: that is "unknown", not "full".
      static std::once_flag logged;
      std::call_once(logged, [&] {
        logger()->debug("{} reports no blocks (statvfs): free space unknown, pre-flight skipped",
                        directory.string());
      });
      return std::nullopt;
    }
    return static_cast<uint64_t>(fs.f_bavail) * static_cast<uint64_t>(fs.f_frsize);
  }
  std::unique_ptr<RandomAccessFile> open(const std::filesystem::path& path) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      const int error_number = errno;
      throw CheckpointError("cannot open " + path.string() + ": " + std::strerror(error_number),
                            path, error_number);
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int error_number = errno;
      ::close(fd);
      throw CheckpointError("cannot stat " + path.string() + ": " + std::strerror(error_number),
                            path, error_number);
    }
    if (S_ISDIR(st.st_mode)) {
      ::close(fd);
      throw CheckpointError("cannot open " + path.string() + ": " + std::strerror(EISDIR), path,
                            EISDIR);
    }
    return std::make_unique<PosixReader>(fd, static_cast<uint64_t>(st.st_size), path);
  }
  std::optional<FileInfo> stat(const std::filesystem::path& path) override {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
      if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
      system_failure("stat of", path, errno);
    }
    FileInfo info;
    info.path = path;
    info.is_directory = S_ISDIR(st.st_mode);
    info.size = info.is_directory ? 0 : static_cast<uint64_t>(st.st_size);
    info.mtime_ns = mtime_of(st);
    return info;
  }
  std::vector<FileInfo> list(const std::filesystem::path& directory, bool recursive) override {
    std::vector<FileInfo> files;
    std::error_code ec;
    if (!std::filesystem::is_directory(directory, ec)) return files;
    const auto fail = [&] {
      throw CheckpointError("cannot list " + directory.string() + ": " + ec.message(), directory,
                            ec.value());
    };
    const auto add = [&](const std::filesystem::directory_entry& entry) {
      if (!entry.is_regular_file(ec)) return;
      struct stat st {};
      if (::stat(entry.path().c_str(), &st) != 0) return;  // removed meanwhile
      files.push_back({entry.path(), false, static_cast<uint64_t>(st.st_size), mtime_of(st)});
    };
    if (recursive) {
      auto it = std::filesystem::recursive_directory_iterator(
          directory, std::filesystem::directory_options::skip_permission_denied, ec);
      if (ec) fail();
      for (; it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
        if (ec) fail();
        add(*it);
      }
    } else {
      std::filesystem::directory_iterator it(directory, ec);
      if (ec) fail();
      for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
        if (ec) fail();
        add(*it);
      }
    }
    std::sort(files.begin(), files.end(),
              [](const FileInfo& a, const FileInfo& b) { return a.path < b.path; });
    return files;
  }
};

// ---------------------------------------------------------------- the commit protocol

// Temporary in the destination's directory, fsync, close, rename over the destination, directory
// fsync (LevelDB's SetCurrentFile). Any failure before the rename removes the temporary.
class CommittingFile final : public WritableFile {
 public:
  CommittingFile(PosixFileSystem& fs, std::filesystem::path destination)
      : fs_(fs), destination_(std::move(destination)) {
    file_ = fs_.create_unique(directory_of(destination_),
                              "." + destination_.filename().string() + detail::kTempMarker,
                              &temp_path_);
  }
  ~CommittingFile() override { discard(); }

  void append(const void* data, std::size_t size) override {
    if (!file_) {
      throw CheckpointError("write to " + destination_.string() + " after a failure or commit",
                            destination_);
    }
    guarded([&] { file_->append(data, size); });
  }
  void commit() override {
    if (!file_) {
      throw CheckpointError("commit of " + destination_.string() + " after a failure or commit",
                            destination_);
    }
    guarded([&] {
      file_->sync();
      file_->close();
      fs_.rename(temp_path_, destination_);
    });
    file_.reset();
    temp_path_.clear();
    // The new file is complete under its name; only the durability of its name is pending.
    fs_.sync_directory(directory_of(destination_));
  }

 private:
  template <class F>
  void guarded(F&& step) {
    try {
      step();
    } catch (...) {
      discard();
      throw;
    }
  }
  void discard() noexcept {
    file_.reset();
    if (temp_path_.empty()) return;
    try {
      fs_.remove(temp_path_);
    } catch (...) {
      // Best effort: the temporary is recognisably named and removed at the next start.
    }
    temp_path_.clear();
  }

  PosixFileSystem& fs_;
  std::filesystem::path destination_;
  std::filesystem::path temp_path_;
  std::unique_ptr<PosixFileSystem::File> file_;
};

// A location with a URL scheme (`s3://...`) is not a local path: refuse it instead of writing a
// directory named `s3:`.
void require_local(const std::filesystem::path& path) {
  const std::string text = path.string();
  const auto colon = text.find("://");
  if (colon == std::string::npos || colon == 0) return;
  for (std::size_t i = 0; i < colon; ++i) {
    const char c = text[i];
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.')) return;
  }
  throw CheckpointError(text + " is a URL (scheme '" + text.substr(0, colon) +
                            "'), not a local path, and this storage is the local filesystem",
                        path, EINVAL);
}

}  // namespace

std::shared_ptr<PosixFileSystem> PosixFileSystem::real() {
  static const std::shared_ptr<PosixFileSystem> instance = std::make_shared<RealPosixFileSystem>();
  return instance;
}

LocalStorage::LocalStorage(std::shared_ptr<PosixFileSystem> fs) : fs_(std::move(fs)) {
  if (!fs_) throw CheckpointError("LocalStorage needs a PosixFileSystem (got null)");
}

std::unique_ptr<WritableFile> LocalStorage::create(const std::filesystem::path& path) {
  require_local(path);
  return std::make_unique<CommittingFile>(*fs_, path);
}

std::unique_ptr<RandomAccessFile> LocalStorage::open(const std::filesystem::path& path) {
  require_local(path);
  return fs_->open(path);
}

std::optional<FileInfo> LocalStorage::stat(const std::filesystem::path& path) {
  require_local(path);
  return fs_->stat(path);
}

std::vector<FileInfo> LocalStorage::list(const std::filesystem::path& directory, bool recursive) {
  require_local(directory);
  return fs_->list(directory, recursive);
}

void LocalStorage::remove(const std::filesystem::path& path) {
  require_local(path);
  fs_->remove(path);
  fs_->sync_directory(directory_of(path));
}

void LocalStorage::create_directories(const std::filesystem::path& directory) {
  require_local(directory);
  // A new directory's name is an entry of its parent: fsync every parent that gained one, or a
  // power loss can take the directory, and every durable checkpoint in it, away again.
  std::vector<std::filesystem::path> created;
  for (auto dir = directory; !dir.empty() && !fs_->stat(dir); dir = dir.parent_path()) {
    created.push_back(dir);
    if (dir == dir.parent_path()) break;
  }
  fs_->create_directories(directory);
  for (auto it = created.rbegin(); it != created.rend(); ++it)
    fs_->sync_directory(directory_of(*it));
}

std::optional<uint64_t> LocalStorage::available_space(const std::filesystem::path& directory) {
  require_local(directory);
  return fs_->available_space(directory);
}

std::vector<std::filesystem::path> LocalStorage::remove_unfinished_writes(
    const std::filesystem::path& directory,
    const std::function<bool(const std::string& final_name)>& ours) {
  require_local(directory);
  std::vector<std::filesystem::path> removed;
  for (const auto& file : fs_->list(directory, /*recursive=*/false)) {
    const std::string target = detail::temp_target_name(file.path.filename().string());
    if (target.empty() || !ours(target)) continue;
    fs_->remove(file.path);
    removed.push_back(file.path);
  }
  if (!removed.empty()) fs_->sync_directory(directory);
  return removed;
}

}  // namespace ckpt
