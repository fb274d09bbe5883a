#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ckpt {

/// What a listing or stat() reports of one entry.
struct FileInfo {
  std::filesystem::path path;  ///< The location, as the storage names it.
  bool is_directory = false;   ///< Only stat() reports directories; listings hold files only.
  uint64_t size = 0;           ///< Bytes (0 for a directory).
  int64_t mtime_ns = 0;        ///< Modification time, nanoseconds since the epoch (0: unknown).
};

/// A file being written under its final name. Nothing is visible under that name until commit()
/// returns; then the whole file is, durably. Destroying it uncommitted, or a failed commit, leaves
/// nothing visible and any previous file under the name untouched.
class WritableFile {
 public:
  WritableFile() = default;
  WritableFile(const WritableFile&) = delete;
  WritableFile& operator=(const WritableFile&) = delete;
  virtual ~WritableFile() = default;  ///< Uncommitted: discards what was written (errors ignored).

  /// Appends all `size` bytes. Throws CheckpointError (naming the file, with errno) on failure.
  virtual void append(const void* data, std::size_t size) = 0;
  /// Makes the file visible under its final name, whole and durable, replacing any previous one.
  /// Throws CheckpointError on failure; nothing new is visible then.
  virtual void commit() = 0;
};

/// A file opened for reads at any offset, e.g. a zip's directory at its end.
class RandomAccessFile {
 public:
  RandomAccessFile() = default;
  RandomAccessFile(const RandomAccessFile&) = delete;
  RandomAccessFile& operator=(const RandomAccessFile&) = delete;
  virtual ~RandomAccessFile() = default;

  /// The file's size when it was opened.
  virtual uint64_t size() const = 0;
  /// Reads exactly `size` bytes at `offset` into `out`. Throws CheckpointError (naming the file)
  /// on failure or if the file ends before `offset + size`.
  virtual void read(uint64_t offset, std::size_t size, void* out) const = 0;
  /// The whole file mapped into memory copy-on-write (as Python's `torch.load(mmap=True)` maps
  /// it: writes to the memory stay private and never reach the file), or nullptr where this file
  /// cannot be mapped: the default, and then readers use read(). A page is read from the file when
  /// it is first touched, so a reader that uses a few records reads only their pages. The mapping
  /// stays valid while the returned pointer or a copy of it lives, also after this file is
  /// destroyed or the file removed. It relies on the file not being truncated while mapped, which
  /// holds for files ckpt writes (a save replaces a file, it never rewrites one in place). Throws
  /// CheckpointError naming the file if mapping is supported but fails.
  virtual std::shared_ptr<char> map() const { return nullptr; }
};

/// The seam through which ckpt does all checkpoint I/O, in the manner of LevelDB's `Env` and
/// Arrow's `arrow::fs::FileSystem`: writes that become visible whole on commit, whole and ranged
/// reads, listings with sizes and times, removal, and free space where the storage knows it. It is
/// shaped for what both a POSIX filesystem and an object store can promise: no rename, no
/// directory handles, no partial visibility.
///
/// Locations are `std::filesystem::path`s whose strings the storage interprets: a local path for
/// Storage::local() (which refuses URLs such as `s3://bucket/prefix`), a URL for S3Storage, either
/// for Storage::by_location(), a key for MemoryStorage.
/// ckpt only joins a directory and a name with `/` and takes the last component, never resolves.
///
///   struct ReadOnly final : ckpt::StorageWrapper {
///     using StorageWrapper::StorageWrapper;
///     std::unique_ptr<ckpt::WritableFile> create(const std::filesystem::path& path) override {
///       throw ckpt::CheckpointError("read-only storage: cannot write " + path.string(), path,
///       EROFS);
///     }
///   };
///
/// Failures are CheckpointErrors naming the location and carrying an errno (EIO when nothing more
/// specific fits): DefaultCheckpointer's `on_save_failure` rides out a failure with an errno, and
/// throws one without at once, as a checkpoint that cannot be written at all.
///
/// Thread safety: implementations must allow concurrent calls on different files.
class Storage {
 public:
  Storage() = default;
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;
  virtual ~Storage() = default;

  /// Starts writing `path`; see WritableFile. The parent directory must exist where the storage
  /// has directories (create_directories). Throws CheckpointError naming `path` on failure.
  virtual std::unique_ptr<WritableFile> create(const std::filesystem::path& path) = 0;
  /// Opens `path` for reading. Throws CheckpointError naming `path` (errno ENOENT if it does not
  /// exist, EISDIR if it is a directory).
  virtual std::unique_ptr<RandomAccessFile> open(const std::filesystem::path& path) = 0;
  /// What is at `path`: a file, a directory, or nothing (nullopt). Throws CheckpointError only if
  /// the storage cannot tell.
  virtual std::optional<FileInfo> stat(const std::filesystem::path& path) = 0;
  /// The files in `directory` (with `recursive`, also in every directory below it), sorted by
  /// path. Empty if `directory` does not exist or is not a directory; unreadable subdirectories
  /// are skipped. Throws CheckpointError naming `directory` if it cannot be listed.
  virtual std::vector<FileInfo> list(const std::filesystem::path& directory, bool recursive) = 0;
  /// Removes the file `path`, durably. A file that does not exist is not an error. Throws
  /// CheckpointError otherwise.
  virtual void remove(const std::filesystem::path& path) = 0;
  /// Creates `directory` and its parents if missing (a storage without directories does nothing).
  /// Throws CheckpointError naming it on failure.
  virtual void create_directories(const std::filesystem::path& directory) = 0;
  /// Bytes an unprivileged writer can still add in `directory`, or nullopt where the storage does
  /// not know (an object store; a filesystem reporting no blocks at all): the checkpointer's disk
  /// pre-flight is then skipped. Throws CheckpointError if the query itself fails.
  virtual std::optional<uint64_t> available_space(const std::filesystem::path& directory) = 0;
  /// Removes what writes that never committed (the process died first) left in `directory` for
  /// final names that `ours` accepts, and returns the removed locations. The default does nothing:
  /// where an uncommitted write leaves nothing behind (MemoryStorage), there is nothing to remove.
  /// Throws CheckpointError naming `directory` if it cannot be listed or a leftover removed.
  virtual std::vector<std::filesystem::path> remove_unfinished_writes(
      const std::filesystem::path& directory,
      const std::function<bool(const std::string& final_name)>& ours);

  /// The local filesystem (shared instance of LocalStorage).
  static std::shared_ptr<Storage> local();
  /// The default of every file function and of the checkpointer: the local filesystem for paths,
  /// S3 (S3Storage with default S3Options, configured from the AWS environment) for `s3://` URLs,
  /// and an error naming the location for any other scheme. One shared instance
  /// (ckpt::storage_by_location in ckpt/s3_storage.h makes others).
  static std::shared_ptr<Storage> by_location();
};

/// Forwards every call to another Storage; derive from it to change only some calls.
class StorageWrapper : public Storage {
 public:
  explicit StorageWrapper(std::shared_ptr<Storage> target) : target_(std::move(target)) {}

  std::unique_ptr<WritableFile> create(const std::filesystem::path& path) override {
    return target_->create(path);
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
  void remove(const std::filesystem::path& path) override { target_->remove(path); }
  void create_directories(const std::filesystem::path& directory) override {
    target_->create_directories(directory);
  }
  std::optional<uint64_t> available_space(const std::filesystem::path& directory) override {
    return target_->available_space(directory);
  }
  std::vector<std::filesystem::path> remove_unfinished_writes(
      const std::filesystem::path& directory,
      const std::function<bool(const std::string& final_name)>& ours) override {
    return target_->remove_unfinished_writes(directory, ours);
  }

  Storage& target() const noexcept { return *target_; }

 private:
  std::shared_ptr<Storage> target_;
};

/// The whole of `path` through `storage`, as a string (for small files such as the latest
/// pointer). Throws CheckpointError as Storage::open and RandomAccessFile::read do, and if the
/// file is larger than `max_bytes`.
std::string read_small_file(Storage& storage, const std::filesystem::path& path,
                            std::size_t max_bytes = 1 << 20);

}  // namespace ckpt
