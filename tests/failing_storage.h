#pragma once
// A Storage that fails on demand: the n-th call of a chosen operation throws the CheckpointError
// the local filesystem would throw for a given errno. Counts every call, so a test can first
// record how many calls of each kind a save makes, then fail each of them in turn.

#include <ckpt/checkpoint_error.h>
#include <ckpt/storage.h>

#include <cerrno>
#include <cstring>
#include <map>
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

class FailingStorage final : public StorageWrapper {
 public:
  FailingStorage() : StorageWrapper(Storage::local()) {}

  /// Makes the `nth` (0-based, counted from now) call of `op` fail with `error_number`.
  void fail(Op op, int nth, int error_number) {
    std::lock_guard<std::mutex> lock(mutex_);
    fail_op_ = op;
    fail_at_ = counts_[op] + nth;
    errno_ = error_number;
    armed_ = true;
  }
  void disarm() { armed_ = false; }
  int count(Op op) {
    std::lock_guard<std::mutex> lock(mutex_);
    return counts_[op];
  }
  /// Every path created, renamed to or removed, in order ("create:<path>", ...).
  std::vector<std::string> journal() {
    std::lock_guard<std::mutex> lock(mutex_);
    return journal_;
  }

  std::unique_ptr<WritableFile> create_unique(const std::filesystem::path& directory,
                                              const std::string& name_prefix,
                                              std::filesystem::path* path) override {
    check(Op::create, directory);
    auto file = StorageWrapper::create_unique(directory, name_prefix, path);
    record("create:" + path->string());
    return std::make_unique<File>(*this, std::move(file), *path);
  }
  void rename(const std::filesystem::path& from, const std::filesystem::path& to) override {
    check(Op::rename, to);
    record("rename:" + to.string());
    StorageWrapper::rename(from, to);
  }
  void remove(const std::filesystem::path& path) override {
    check(Op::remove, path);
    record("remove:" + path.string());
    StorageWrapper::remove(path);
  }
  void sync_directory(const std::filesystem::path& directory) override {
    check(Op::sync_directory, directory);
    StorageWrapper::sync_directory(directory);
  }
  void create_directories(const std::filesystem::path& directory) override {
    check(Op::create_directories, directory);
    StorageWrapper::create_directories(directory);
  }

 private:
  class File final : public WritableFile {
   public:
    File(FailingStorage& owner, std::unique_ptr<WritableFile> inner, std::filesystem::path path)
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
    FailingStorage& owner_;
    std::unique_ptr<WritableFile> inner_;
    std::filesystem::path path_;
  };

  void check(Op op, const std::filesystem::path& path) {
    std::lock_guard<std::mutex> lock(mutex_);
    const int n = counts_[op]++;
    if (armed_ && op == fail_op_ && n == fail_at_) {
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
  Op fail_op_ = Op::append;
  int fail_at_ = 0;
  int errno_ = 0;
};

}  // namespace ckpt::test
