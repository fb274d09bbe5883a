#pragma once

#include <ckpt/storage.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace ckpt {

/// A Storage that keeps every file in memory, like LevelDB's `helpers/memenv`: for tests, and for
/// programs that want checkpoints they can inspect without a disk. Locations are keys, compared
/// after lexical normalisation (`a/./b/` is `a/b`). Directories exist where create_directories
/// made them or where a file lies below them. A commit replaces the file atomically; an
/// uncommitted writer leaves nothing behind. With a `capacity`, available_space() reports what is
/// left of it and a commit that would exceed it fails with ENOSPC; without one, free space is
/// unknown (as on an object store) and the checkpointer's pre-flight is skipped.
///
///   auto storage = std::make_shared<ckpt::MemoryStorage>();
///   ckpt::DefaultCheckpointer checkpointer(args, storage);
///   checkpointer.save(checkpoint, 0);
///   storage->list(args.save_dir, false);   // [{save_dir/model_0.pt, size, mtime}, ...]
///
/// Thread safety: every member may be called from several threads.
class MemoryStorage final : public Storage {
 public:
  explicit MemoryStorage(std::optional<uint64_t> capacity = std::nullopt);

  std::unique_ptr<WritableFile> create(const std::filesystem::path& path) override;
  std::unique_ptr<RandomAccessFile> open(const std::filesystem::path& path) override;
  std::optional<FileInfo> stat(const std::filesystem::path& path) override;
  std::vector<FileInfo> list(const std::filesystem::path& directory, bool recursive) override;
  void remove(const std::filesystem::path& path) override;
  void create_directories(const std::filesystem::path& directory) override;
  std::optional<uint64_t> available_space(const std::filesystem::path& directory) override;

  /// Bytes held by committed files.
  uint64_t used_bytes() const;
  /// Bytes handed out by reads so far (RandomAccessFile::read through open()).
  uint64_t bytes_read() const;

 private:
  struct Entry {
    std::shared_ptr<const std::string> bytes;
    int64_t mtime_ns = 0;
  };
  class Writer;
  class Reader;

  static std::string key_of(const std::filesystem::path& path);
  bool is_directory_locked(const std::string& key) const;
  void commit(const std::string& key, std::string bytes);

  const std::optional<uint64_t> capacity_;
  mutable std::mutex mutex_;
  std::map<std::string, Entry> files_;
  std::set<std::string> directories_;
  uint64_t used_ = 0;
  int64_t last_mtime_ns_ = 0;
  std::shared_ptr<std::atomic<uint64_t>> bytes_read_ = std::make_shared<std::atomic<uint64_t>>(0);
};

}  // namespace ckpt
