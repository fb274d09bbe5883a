#pragma once

#include <ckpt/storage.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ckpt {

/// The POSIX calls LocalStorage is made of, one virtual each, so that tests can fail any of them
/// or replace the filesystem with a model of what survives a power loss (tests/crash_simulator.h)
/// while LocalStorage's commit protocol stays the real one. Paths are local paths.
///
/// Thread safety: implementations must allow concurrent calls on different files.
class PosixFileSystem {
 public:
  /// A file open for appending (a file descriptor).
  class File {
   public:
    File() = default;
    File(const File&) = delete;
    File& operator=(const File&) = delete;
    virtual ~File() = default;  ///< Closes the file if still open (errors ignored).

    /// write(2) until all `size` bytes are written. Throws CheckpointError (path, errno).
    virtual void append(const void* data, std::size_t size) = 0;
    /// fdatasync(2): the appended bytes survive a power loss. Throws CheckpointError.
    virtual void sync() = 0;
    /// close(2). Throws CheckpointError.
    virtual void close() = 0;
  };

  PosixFileSystem() = default;
  PosixFileSystem(const PosixFileSystem&) = delete;
  PosixFileSystem& operator=(const PosixFileSystem&) = delete;
  virtual ~PosixFileSystem() = default;

  /// mkostemp(3): a new, uniquely named, empty file in `directory` whose name starts with
  /// `name_prefix`; stores its path in `*path`. Throws CheckpointError.
  virtual std::unique_ptr<File> create_unique(const std::filesystem::path& directory,
                                              const std::string& name_prefix,
                                              std::filesystem::path* path) = 0;
  /// rename(2): atomically replaces `to` with `from`. Throws CheckpointError.
  virtual void rename(const std::filesystem::path& from, const std::filesystem::path& to) = 0;
  /// unlink(2); a missing file is not an error. Throws CheckpointError otherwise.
  virtual void remove(const std::filesystem::path& path) = 0;
  /// fsync(2) of a directory: its renames, creations and removals survive a power loss.
  virtual void sync_directory(const std::filesystem::path& directory) = 0;
  /// mkdir -p. Throws CheckpointError.
  virtual void create_directories(const std::filesystem::path& directory) = 0;
  /// statvfs(3) of `directory`: f_bavail * f_frsize, or nullopt when the filesystem reports zero
  /// blocks in all (some FUSE and network filesystems: "unknown", not "full").
  virtual std::optional<uint64_t> available_space(const std::filesystem::path& directory) = 0;

  /// open(2) for reading, then pread(2) at any offset.
  virtual std::unique_ptr<RandomAccessFile> open(const std::filesystem::path& path) = 0;
  /// stat(2), following symbolic links; nullopt if nothing is there.
  virtual std::optional<FileInfo> stat(const std::filesystem::path& path) = 0;
  /// readdir(3) of `directory` (and below, with `recursive`): regular files only, sorted.
  virtual std::vector<FileInfo> list(const std::filesystem::path& directory, bool recursive) = 0;

  /// The real system calls (shared instance).
  static std::shared_ptr<PosixFileSystem> real();
};

/// Forwards every call to another PosixFileSystem; derive from it to change only some calls.
class PosixFileSystemWrapper : public PosixFileSystem {
 public:
  explicit PosixFileSystemWrapper(std::shared_ptr<PosixFileSystem> target)
      : target_(std::move(target)) {}

  std::unique_ptr<File> create_unique(const std::filesystem::path& directory,
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
  std::optional<uint64_t> available_space(const std::filesystem::path& directory) override {
    return target_->available_space(directory);
  }
  std::unique_ptr<RandomAccessFile> open(const std::filesystem::path& path) override {
    return target_->open(path);
  }
  std::optional<FileInfo> stat(const std::filesystem::path& path) override {
    return target_->stat(path);
  }
  std::vector<FileInfo> list(const std::filesystem::path& directory, bool recursive) override {
    return target_->list(directory, recursive);
  }

  PosixFileSystem& target() const noexcept { return *target_; }

 private:
  std::shared_ptr<PosixFileSystem> target_;
};

/// The local filesystem as a Storage. A commit is LevelDB's `SetCurrentFile`: the bytes go to a
/// temporary in the destination's directory (`.<name>.ckpt-tmp-XXXXXX`), which is fsynced, closed,
/// renamed over the destination, and then the directory is fsynced. A removal is unlink + directory
/// fsync; a new directory is fsynced into its parent. Locations with a URL scheme (`s3://...`) are
/// refused, naming the location: they are not local paths, and writing a directory named `s3:`
/// would lose the user's intent silently.
///
///   auto storage = std::make_shared<ckpt::LocalStorage>();   // == *ckpt::Storage::local()
///   ckpt::save_state_file(state, "out/weights.pt", *storage);
///
/// Thread safety: as PosixFileSystem.
class LocalStorage final : public Storage {
 public:
  explicit LocalStorage(std::shared_ptr<PosixFileSystem> fs = PosixFileSystem::real());

  std::unique_ptr<WritableFile> create(const std::filesystem::path& path) override;
  std::unique_ptr<RandomAccessFile> open(const std::filesystem::path& path) override;
  std::optional<FileInfo> stat(const std::filesystem::path& path) override;
  std::vector<FileInfo> list(const std::filesystem::path& directory, bool recursive) override;
  void remove(const std::filesystem::path& path) override;
  void create_directories(const std::filesystem::path& directory) override;
  std::optional<uint64_t> available_space(const std::filesystem::path& directory) override;
  /// Removes ckpt's temporaries (`.<name>.ckpt-tmp-XXXXXX`) directly in `directory`.
  std::vector<std::filesystem::path> remove_unfinished_writes(
      const std::filesystem::path& directory,
      const std::function<bool(const std::string& final_name)>& ours) override;

  PosixFileSystem& file_system() const noexcept { return *fs_; }

 private:
  std::shared_ptr<PosixFileSystem> fs_;
};

}  // namespace ckpt
