#pragma once
// A power-loss crash simulator: a PosixFileSystem in memory that records every mutating call and
// models what a power loss keeps (LevelDB's fault_injection_test, RocksDB's FaultInjectionTestFS),
// for LocalStorage's real commit protocol to run on.
//
// The model, per file and per directory:
// - a file's bytes appended since its last fsync may be lost wholly or from any point on (what
//   survives is a prefix between the synced length and the full length: 0, 1/4, 1/2, 3/4 or all
//   of the unsynced bytes are tried);
// - a directory's entries created, renamed or removed since that directory's last fsync may
//   revert, any prefix of them, in order, surviving; a directory whose own entry reverts in its
//   parent is gone with everything in it.
// Limits: data is never reordered within a file or corrupted in place, a fsynced file or
// directory is durable (no lying disks), and metadata of a synced directory never reverts.

#include <ckpt/checkpoint_error.h>
#include <ckpt/local_storage.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace ckpt::test {

class SimulatedFileSystem final : public PosixFileSystem {
 public:
  /// One mutating call, in the order they happened.
  struct Op {
    enum Kind { mkdir, create, append, sync, rename, unlink, sync_directory } kind;
    std::string path;   // the file or directory
    std::string other;  // rename: the destination; append: the bytes
  };

  /// An empty filesystem holding only the (durable) directory `root`, e.g. "/sim".
  explicit SimulatedFileSystem(std::string root) : root_(std::move(root)) { dirs_[root_]; }

  /// Every mutating call so far.
  std::vector<Op> log() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return log_;
  }
  std::size_t ops() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return log_.size();
  }

  /// The filesystem as it was after the first `n` calls of `log`, started from `root`.
  static std::shared_ptr<SimulatedFileSystem> replay(const std::string& root,
                                                     const std::vector<Op>& log, std::size_t n) {
    auto fs = std::make_shared<SimulatedFileSystem>(root);
    for (std::size_t i = 0; i < n; ++i) fs->apply(log[i]);
    fs->log_.clear();
    return fs;
  }

  /// Calls `visit(state)` for every state a power loss now could leave (each a fresh, fully
  /// durable filesystem); returns how many.
  std::size_t for_each_crash_state(
      const std::function<void(std::shared_ptr<SimulatedFileSystem>)>& visit) const {
    std::lock_guard<std::mutex> lock(mutex_);
    // Which directories have entries that may revert, and how many of each.
    std::vector<std::string> pending_dirs;
    for (const auto& [path, dir] : dirs_) {
      if (!dir.pending.empty()) pending_dirs.push_back(path);
    }
    bool unsynced_data = false;
    for (const auto& [path, dir] : dirs_) {
      for (const auto& [name, entry] : dir.live) {
        if (entry.file && entry.file->synced < entry.file->data.size()) unsynced_data = true;
      }
      for (const auto& [name, entry] : dir.durable) {
        if (entry.file && entry.file->synced < entry.file->data.size()) unsynced_data = true;
      }
    }
    // Unsynced bytes: none, a quarter, half, three quarters or all of them kept (the same share
    // for every file at once).
    const std::vector<int> data_modes =
        unsynced_data ? std::vector<int>{0, 1, 2, 3, 4} : std::vector<int>{4};
    std::vector<std::size_t> prefix(pending_dirs.size(), 0);
    std::size_t states = 0;
    for (;;) {
      for (const int mode : data_modes) {
        visit(crashed(pending_dirs, prefix, mode));
        ++states;
      }
      std::size_t d = 0;
      while (d < prefix.size() && prefix[d] == dirs_.at(pending_dirs[d]).pending.size()) {
        prefix[d] = 0;
        ++d;
      }
      if (d == prefix.size()) break;
      ++prefix[d];
    }
    return states;
  }

  // ---------------------------------------------------------------- PosixFileSystem

  std::unique_ptr<File> create_unique(const std::filesystem::path& directory,
                                      const std::string& name_prefix,
                                      std::filesystem::path* path) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!exists_dir(directory.string())) fail("creating a file in", directory.string(), ENOENT);
    char suffix[8];
    std::snprintf(suffix, sizeof suffix, "%06u", ++unique_ % 1000000);
    *path = directory / (name_prefix + suffix);
    record({Op::create, path->string(), {}});
    return std::make_unique<SimFile>(*this, path->string());
  }
  void rename(const std::filesystem::path& from, const std::filesystem::path& to) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (from.parent_path() != to.parent_path())
      fail("cross-directory rename to", to.string(), EXDEV);
    if (!find_file(from.string())) fail("rename to", to.string(), ENOENT);
    record({Op::rename, from.string(), to.string()});
  }
  void remove(const std::filesystem::path& path) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!find_file(path.string())) return;
    record({Op::unlink, path.string(), {}});
  }
  void sync_directory(const std::filesystem::path& directory) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!exists_dir(directory.string())) fail("opening directory", directory.string(), ENOENT);
    record({Op::sync_directory, directory.string(), {}});
  }
  void create_directories(const std::filesystem::path& directory) override {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<std::string> missing;
    for (auto dir = directory; !exists_dir(dir.string()); dir = dir.parent_path()) {
      if (dir.string().size() <= root_.size()) fail("mkdir", directory.string(), ENOENT);
      if (find_file(dir.string())) fail("mkdir", dir.string(), ENOTDIR);
      missing.push_back(dir.string());
    }
    for (auto it = missing.rbegin(); it != missing.rend(); ++it) record({Op::mkdir, *it, {}});
  }
  std::optional<uint64_t> available_space(const std::filesystem::path&) override {
    return std::nullopt;  // the pre-flight is tested elsewhere
  }
  std::unique_ptr<RandomAccessFile> open(const std::filesystem::path& path) override {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto inode = find_file(path.string());
    if (!inode) {
      fail("cannot open", path.string(), exists_dir(path.string()) ? EISDIR : ENOENT);
    }
    return std::make_unique<SimReader>(std::make_shared<std::string>(inode->data), path.string());
  }
  std::optional<FileInfo> stat(const std::filesystem::path& path) override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (exists_dir(path.string())) return FileInfo{path, true, 0, 0};
    if (const auto inode = find_file(path.string())) {
      return FileInfo{path, false, inode->data.size(), inode->mtime};
    }
    return std::nullopt;
  }
  std::vector<FileInfo> list(const std::filesystem::path& directory, bool recursive) override {
    std::lock_guard<std::mutex> lock(mutex_);
    std::vector<FileInfo> files;
    collect(directory.string(), recursive, files);
    std::sort(files.begin(), files.end(),
              [](const FileInfo& a, const FileInfo& b) { return a.path < b.path; });
    return files;
  }

 private:
  struct Inode {
    std::string data;
    std::size_t synced = 0;
    int64_t mtime = 0;
  };
  struct Entry {
    std::shared_ptr<Inode> file;  // null: a directory
  };
  struct Dir {
    std::map<std::string, Entry> live;
    std::map<std::string, Entry> durable;
    std::vector<Op> pending;  // entry changes since the last fsync of this directory
  };

  class SimFile final : public File {
   public:
    SimFile(SimulatedFileSystem& fs, std::string path) : fs_(fs), path_(std::move(path)) {}
    void append(const void* data, std::size_t size) override {
      std::lock_guard<std::mutex> lock(fs_.mutex_);
      fs_.record({Op::append, path_, std::string(static_cast<const char*>(data), size)});
    }
    void sync() override {
      std::lock_guard<std::mutex> lock(fs_.mutex_);
      fs_.record({Op::sync, path_, {}});
    }
    void close() override {}

   private:
    SimulatedFileSystem& fs_;
    std::string path_;  // the name it was created under (it is renamed only after close)
  };

  class SimReader final : public RandomAccessFile {
   public:
    SimReader(std::shared_ptr<std::string> bytes, std::string path)
        : bytes_(std::move(bytes)), path_(std::move(path)) {}
    uint64_t size() const override { return bytes_->size(); }
    void read(uint64_t offset, std::size_t size, void* out) const override {
      if (offset > bytes_->size() || size > bytes_->size() - offset) {
        throw CheckpointError("cannot read " + path_ + ": past its end", path_);
      }
      std::memcpy(out, bytes_->data() + offset, size);
    }

   private:
    std::shared_ptr<std::string> bytes_;
    std::string path_;
  };

  [[noreturn]] static void fail(const std::string& what, const std::string& path, int error) {
    throw CheckpointError(what + " " + path + " failed: " + std::strerror(error), path, error);
  }
  static std::string parent_of(const std::string& path) {
    return std::filesystem::path(path).parent_path().string();
  }
  static std::string name_of(const std::string& path) {
    return std::filesystem::path(path).filename().string();
  }

  bool exists_dir(const std::string& path) const {
    if (path == root_) return true;
    const auto parent = dirs_.find(parent_of(path));
    if (parent == dirs_.end() || !exists_dir(parent_of(path))) return false;
    const auto entry = parent->second.live.find(name_of(path));
    return entry != parent->second.live.end() && !entry->second.file;
  }
  std::shared_ptr<Inode> find_file(const std::string& path) const {
    const auto parent = dirs_.find(parent_of(path));
    if (parent == dirs_.end() || !exists_dir(parent_of(path))) return nullptr;
    const auto entry = parent->second.live.find(name_of(path));
    return entry == parent->second.live.end() ? nullptr : entry->second.file;
  }
  void collect(const std::string& dir, bool recursive, std::vector<FileInfo>& files) const {
    if (!exists_dir(dir)) return;
    for (const auto& [name, entry] : dirs_.at(dir).live) {
      const std::string path = dir + "/" + name;
      if (entry.file) {
        files.push_back({path, false, entry.file->data.size(), entry.file->mtime});
      } else if (recursive) {
        collect(path, recursive, files);
      }
    }
  }

  void record(Op op) {
    apply(op);
    log_.push_back(std::move(op));
  }

  // Applies one call to the live state; entry changes also wait in their directory's pending list.
  void apply(const Op& op) {
    switch (op.kind) {
      case Op::mkdir: {
        Dir& parent = dirs_[parent_of(op.path)];
        parent.live[name_of(op.path)] = Entry{};
        parent.pending.push_back(op);
        dirs_[op.path];
        break;
      }
      case Op::create: {
        Dir& parent = dirs_[parent_of(op.path)];
        auto inode = std::make_shared<Inode>();
        inode->mtime = ++clock_;
        parent.live[name_of(op.path)] = Entry{inode};
        Op pending = op;
        pending_inodes_[op.path] = inode;
        parent.pending.push_back(pending);
        break;
      }
      case Op::append: {
        const auto inode = open_inodes(op.path);
        inode->data += op.other;
        inode->mtime = ++clock_;
        break;
      }
      case Op::sync:
        open_inodes(op.path)->synced = open_inodes(op.path)->data.size();
        break;
      case Op::rename: {
        Dir& parent = dirs_[parent_of(op.path)];
        parent.live[name_of(op.other)] = parent.live.at(name_of(op.path));
        parent.live.erase(name_of(op.path));
        parent.pending.push_back(op);
        break;
      }
      case Op::unlink: {
        Dir& parent = dirs_[parent_of(op.path)];
        parent.live.erase(name_of(op.path));
        parent.pending.push_back(op);
        break;
      }
      case Op::sync_directory: {
        Dir& dir = dirs_[op.path];
        dir.durable = dir.live;
        dir.pending.clear();
        break;
      }
    }
  }
  // The inode a file was created as (appends and syncs name the creation path).
  std::shared_ptr<Inode> open_inodes(const std::string& created_as) {
    return pending_inodes_.at(created_as);
  }

  // The state a crash leaves when directory pending_dirs[i] keeps prefix[i] of its pending
  // changes, and mode/4 of every file's unsynced bytes survive.
  std::shared_ptr<SimulatedFileSystem> crashed(const std::vector<std::string>& pending_dirs,
                                               const std::vector<std::size_t>& prefix,
                                               int mode) const {
    auto result = std::make_shared<SimulatedFileSystem>(root_);
    std::map<const Inode*, std::shared_ptr<Inode>> copies;
    const auto survivor = [&](const std::shared_ptr<Inode>& inode) {
      auto& copy = copies[inode.get()];
      if (!copy) {
        copy = std::make_shared<Inode>();
        const std::size_t unsynced = inode->data.size() - inode->synced;
        const std::size_t kept = unsynced * static_cast<std::size_t>(mode) / 4;
        copy->data = inode->data.substr(0, inode->synced + kept);
        copy->synced = copy->data.size();
        copy->mtime = inode->mtime;
      }
      return copy;
    };
    for (const auto& [path, dir] : dirs_) {
      std::map<std::string, Entry> entries = dir.durable;
      const auto at = std::find(pending_dirs.begin(), pending_dirs.end(), path);
      if (at != pending_dirs.end()) {
        const std::size_t keep = prefix[static_cast<std::size_t>(at - pending_dirs.begin())];
        for (std::size_t i = 0; i < keep; ++i) {
          const Op& op = dir.pending[i];
          switch (op.kind) {
            case Op::mkdir:
              entries[name_of(op.path)] = Entry{};
              break;
            case Op::create:
              entries[name_of(op.path)] = Entry{pending_inodes_.at(op.path)};
              break;
            case Op::rename:
              entries[name_of(op.other)] = entries.at(name_of(op.path));
              entries.erase(name_of(op.path));
              break;
            case Op::unlink:
              entries.erase(name_of(op.path));
              break;
            default:
              break;
          }
        }
      }
      Dir& copy = result->dirs_[path];
      for (const auto& [name, entry] : entries) {
        copy.live[name] = entry.file ? Entry{survivor(entry.file)} : Entry{};
      }
      copy.durable = copy.live;
    }
    // Directories whose own entry did not survive are unreachable (exists_dir): drop them.
    for (auto it = result->dirs_.begin(); it != result->dirs_.end();) {
      it = result->exists_dir(it->first) ? std::next(it) : result->dirs_.erase(it);
    }
    result->clock_ = clock_;
    result->unique_ = unique_;
    return result;
  }

  std::string root_;
  mutable std::mutex mutex_;
  std::map<std::string, Dir> dirs_;
  std::map<std::string, std::shared_ptr<Inode>> pending_inodes_;  // by creation path
  std::vector<Op> log_;
  int64_t clock_ = 0;
  unsigned unique_ = 0;
};

/// A PosixFileSystem that drops the file fsyncs or the directory fsyncs it is asked for: the
/// buggy writers the crash checker must catch.
class SkippingFsync final : public PosixFileSystemWrapper {
 public:
  enum What { file_fsync, directory_fsync };
  SkippingFsync(std::shared_ptr<PosixFileSystem> target, What what)
      : PosixFileSystemWrapper(std::move(target)), what_(what) {}

  std::unique_ptr<File> create_unique(const std::filesystem::path& directory,
                                      const std::string& name_prefix,
                                      std::filesystem::path* path) override {
    auto file = PosixFileSystemWrapper::create_unique(directory, name_prefix, path);
    if (what_ != file_fsync) return file;
    return std::make_unique<NoSync>(std::move(file));
  }
  void sync_directory(const std::filesystem::path& directory) override {
    if (what_ != directory_fsync) PosixFileSystemWrapper::sync_directory(directory);
  }

 private:
  class NoSync final : public File {
   public:
    explicit NoSync(std::unique_ptr<File> inner) : inner_(std::move(inner)) {}
    void append(const void* data, std::size_t size) override { inner_->append(data, size); }
    void sync() override {}
    void close() override { inner_->close(); }

   private:
    std::unique_ptr<File> inner_;
  };
  What what_;
};

}  // namespace ckpt::test
