#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>

namespace ckpt {

/// A file being written through a Storage.
class WritableFile {
 public:
  WritableFile() = default;
  WritableFile(const WritableFile&) = delete;
  WritableFile& operator=(const WritableFile&) = delete;
  virtual ~WritableFile() = default;  ///< Closes the file if still open (errors ignored).

  /// Appends all `size` bytes. Throws CheckpointError (path, errno) on failure.
  virtual void append(const void* data, std::size_t size) = 0;
  /// Makes the appended bytes durable (fsync). Throws CheckpointError on failure.
  virtual void sync() = 0;
  /// Closes the file. Throws CheckpointError on failure.
  virtual void close() = 0;
};

/// The seam through which ckpt writes, renames and removes files, in the manner of LevelDB's
/// `Env`: the default is the local filesystem; tests substitute one that fails on demand, and
/// other backends can be plugged in. Reads go straight to the filesystem.
///
///   struct FullDisk final : ckpt::StorageWrapper {
///     using StorageWrapper::StorageWrapper;
///     void rename(const std::filesystem::path&, const std::filesystem::path& to) override {
///       throw ckpt::CheckpointError("injected ENOSPC", to, ENOSPC);
///     }
///   };
///
/// Thread safety: implementations must allow concurrent calls on different files.
class Storage {
 public:
  Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  virtual ~Storage() = default;

  /// Creates a new, uniquely named, empty file in `directory` whose name starts with
  /// `name_prefix`, and stores its path in `*path`. Throws CheckpointError on failure.
  virtual std::unique_ptr<WritableFile> create_unique(const std::filesystem::path& directory,
                                                      const std::string& name_prefix,
                                                      std::filesystem::path* path) = 0;
  /// Atomically replaces `to` with `from` (POSIX rename). Throws CheckpointError on failure.
  virtual void rename(const std::filesystem::path& from, const std::filesystem::path& to) = 0;
  /// Removes a file. A file that does not exist is not an error. Throws CheckpointError otherwise.
  virtual void remove(const std::filesystem::path& path) = 0;
  /// Makes renames and removals in `directory` durable (fsync of the directory).
  virtual void sync_directory(const std::filesystem::path& directory) = 0;
  /// Creates `directory` and its parents if missing.
  virtual void create_directories(const std::filesystem::path& directory) = 0;
  /// Bytes an unprivileged writer can still add in `directory` (statvfs: f_bavail * f_frsize);
  /// used by the checkpointer's disk pre-flight. Throws CheckpointError if it cannot be queried.
  virtual std::uint64_t available_space(const std::filesystem::path& directory);

  /// The local filesystem (shared instance).
  static std::shared_ptr<Storage> local();
};

/// Forwards every call to another Storage; derive from it to change only some calls.
class StorageWrapper : public Storage {
 public:
  explicit StorageWrapper(std::shared_ptr<Storage> target) : target_(std::move(target)) {}

  std::unique_ptr<WritableFile> create_unique(const std::filesystem::path& directory,
                                              const std::string& name_prefix,
                                              std::filesystem::path* path) override {
    return target_->create_unique(directory, name_prefix, path);
  }
  void rename(const std::filesystem::path& from, const std::filesystem::path& to) override {
    target_->rename(from, to);
  }
  void remove(const std::filesystem::path& path) override { target_->remove(path); }
  void sync_directory(const std::filesystem::path& directory) override {
    target_->sync_directory(directory);
  }
  void create_directories(const std::filesystem::path& directory) override {
    target_->create_directories(directory);
  }
  std::uint64_t available_space(const std::filesystem::path& directory) override {
    return target_->available_space(directory);
  }

  Storage& target() const noexcept { return *target_; }

 private:
  std::shared_ptr<Storage> target_;
};

}  // namespace ckpt
