#pragma once
// Fault injection at the level of the system calls LocalStorage is made of: FailingFileSystem is
// a PosixFileSystem whose n-th call of a chosen operation throws the CheckpointError the real one
// would throw for a given errno. It counts every call, so a test can first record how many calls
// of each kind a save makes, then fail each of them in turn. FailingStorage is the LocalStorage
// over one, for code that takes a Storage (DefaultCheckpointer, save_*_file).

#include <ckpt/checkpoint_error.h>
#include <ckpt/local_storage.h>
#include <ckpt/storage.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace ckpt::test {

enum class Op { create, append, sync, close, rename, remove, sync_directory, create_directories };

inline const char* op_name(Op op) {
  switch (op) {
    case Op::create: return "create";
    case Op::append: return "append";
    case Op::sync: return "sync";
    case Op::close: return "close";
    case Op::rename: return "rename";
    case Op::remove: return "remove";
    case Op::sync_directory: return "sync_directory";
    case Op::create_directories: return "create_directories";
  }
  return "?";
}

inline const std::vector<Op>& all_ops() {
  static const std::vector<Op> ops{Op::create, Op::append, Op::sync, Op::close, Op::rename,
                                   Op::remove, Op::sync_directory, Op::create_directories};
  return ops;
}

/// The real system calls (or `target`'s), failing on demand. Op::create is create_unique (the
/// temporary), Op::remove is unlink (of a checkpoint or of a discarded temporary).
class FailingFileSystem final : public PosixFileSystemWrapper {
 public:
  explicit FailingFileSystem(std::shared_ptr<PosixFileSystem> target = PosixFileSystem::real())
      : PosixFileSystemWrapper(std::move(target)) {}

  /// Makes the `nth` (0-based, counted from now) call of `op` fail with `error_number`.
  void fail(Op op, int nth, int error_number) {
    std::lock_guard<std::mutex> lock(mutex_);
    fail_op_ = op;
    fail_at_ = counts_[op] + nth;
    errno_ = error_number;
    armed_ = true;
  }
  /// Makes every call of `op` from now on fail with `error_number`, until disarm(): a storage
  /// that stays broken (a full disk, a failed controller).
  void fail_every(Op op, int error_number) {
    std::lock_guard<std::mutex> lock(mutex_);
    fail_op_ = op;
    errno_ = error_number;
    armed_ = false;
    every_ = true;
  }
  void disarm() {
    std::lock_guard<std::mutex> lock(mutex_);
    armed_ = false;
    every_ = false;
  }
  int count(Op op) {
    std::lock_guard<std::mutex> lock(mutex_);
    return counts_[op];
  }
  /// Every path created (the temporary), renamed to or removed, in order: "create:<path>",
  /// "rename:<to>", "remove:<path>".
  std::vector<std::string> journal() {
    std::lock_guard<std::mutex> lock(mutex_);
    return journal_;
  }

  std::unique_ptr<File> create_unique(const std::filesystem::path& directory,
                                      const std::string& name_prefix,
                                      std::filesystem::path* path) override {
    check(Op::create, directory);
    auto file = PosixFileSystemWrapper::create_unique(directory, name_prefix, path);
    record("create:" + path->string());
    return std::make_unique<FailingFile>(*this, std::move(file), *path);
  }
  void rename(const std::filesystem::path& from, const std::filesystem::path& to) override {
    check(Op::rename, to);
    record("rename:" + to.string());
    PosixFileSystemWrapper::rename(from, to);
  }
  void remove(const std::filesystem::path& path) override {
    check(Op::remove, path);
    record("remove:" + path.string());
    PosixFileSystemWrapper::remove(path);
  }
  void sync_directory(const std::filesystem::path& directory) override {
    check(Op::sync_directory, directory);
    PosixFileSystemWrapper::sync_directory(directory);
  }
  void create_directories(const std::filesystem::path& directory) override {
    check(Op::create_directories, directory);
    PosixFileSystemWrapper::create_directories(directory);
  }

 private:
  class FailingFile final : public File {
   public:
    FailingFile(FailingFileSystem& owner, std::unique_ptr<File> inner, std::filesystem::path path)
        : owner_(owner), inner_(std::move(inner)), path_(std::move(path)) {}
    void append(const void* data, std::size_t size) override {
      owner_.check(Op::append, path_);
      inner_->append(data, size);
    }
    void sync() override {
      owner_.check(Op::sync, path_);
      inner_->sync();
    }
    void close() override {
      owner_.check(Op::close, path_);
      inner_->close();
    }

   private:
    FailingFileSystem& owner_;
    std::unique_ptr<File> inner_;
    std::filesystem::path path_;
  };

  void check(Op op, const std::filesystem::path& path) {
    std::lock_guard<std::mutex> lock(mutex_);
    const int n = counts_[op]++;
    if ((every_ && op == fail_op_) || (armed_ && op == fail_op_ && n == fail_at_)) {
      armed_ = false;
      throw CheckpointError(std::string(op_name(op)) + " of " + path.string() +
                                " failed: " + std::strerror(errno_),
                            path, errno_);
    }
  }
  void record(std::string entry) {
    std::lock_guard<std::mutex> lock(mutex_);
    journal_.push_back(std::move(entry));
  }

  std::mutex mutex_;
  std::map<Op, int> counts_;
  std::vector<std::string> journal_;
  bool armed_ = false;
  bool every_ = false;
  Op fail_op_ = Op::append;
  int fail_at_ = 0;
  int errno_ = 0;
};

/// LocalStorage over a FailingFileSystem, with its fail/disarm/count/journal at hand:
///
///   auto storage = std::make_shared<FailingStorage>();
///   DefaultCheckpointer checkpointer(args, storage);
///   storage->fail(Op::rename, 0, EIO);
///
/// Every LocalStorage::remove is one Op::remove and one Op::sync_directory; a commit is one
/// create, its appends, one sync, one close, one rename and one sync_directory.
class FailingStorage final : public StorageWrapper {
 public:
  FailingStorage() : FailingStorage(std::make_shared<FailingFileSystem>()) {}
  explicit FailingStorage(std::shared_ptr<FailingFileSystem> fs)
      : StorageWrapper(std::make_shared<LocalStorage>(fs)), fs_(std::move(fs)) {}

  void fail(Op op, int nth, int error_number) { fs_->fail(op, nth, error_number); }
  void fail_every(Op op, int error_number) { fs_->fail_every(op, error_number); }
  void disarm() { fs_->disarm(); }
  int count(Op op) { return fs_->count(op); }
  std::vector<std::string> journal() { return fs_->journal(); }
  FailingFileSystem& file_system() const noexcept { return *fs_; }

 private:
  std::shared_ptr<FailingFileSystem> fs_;
};

}  // namespace ckpt::test
