#include <ckpt/memory_storage.h>

#include <ckpt/checkpoint_error.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace ckpt {

// Gathers the bytes in memory; commit() hands them to the storage in one step.
class MemoryStorage::Writer final : public WritableFile {
 public:
  Writer(MemoryStorage& owner, std::string key) : owner_(owner), key_(std::move(key)) {}

  void append(const void* data, std::size_t size) override {
    if (done_) throw CheckpointError("write to " + key_ + " after commit", key_);
    bytes_.append(static_cast<const char*>(data), size);
  }
  void commit() override {
    if (done_) throw CheckpointError("commit of " + key_ + " after commit", key_);
    done_ = true;
    owner_.commit(key_, std::move(bytes_));
  }

 private:
  MemoryStorage& owner_;
  std::string key_;
  std::string bytes_;
  bool done_ = false;
};

// Reads a snapshot: a file replaced or removed after open() still reads as it was.
class MemoryStorage::Reader final : public RandomAccessFile {
 public:
  Reader(std::shared_ptr<const std::string> bytes, std::string key,
         std::shared_ptr<std::atomic<uint64_t>> counter)
      : bytes_(std::move(bytes)), key_(std::move(key)), counter_(std::move(counter)) {}

  uint64_t size() const override { return bytes_->size(); }
  void read(uint64_t offset, std::size_t size, void* out) const override {
    if (offset > bytes_->size() || size > bytes_->size() - offset) {
      throw CheckpointError("cannot read " + key_ + ": " + std::to_string(size) + " bytes at " +
                                std::to_string(offset) + " are past its end (" +
                                std::to_string(bytes_->size()) + " bytes)",
                            key_);
    }
    std::memcpy(out, bytes_->data() + offset, size);
    *counter_ += size;
  }

 private:
  std::shared_ptr<const std::string> bytes_;
  std::string key_;
  std::shared_ptr<std::atomic<uint64_t>> counter_;
};

MemoryStorage::MemoryStorage(std::optional<uint64_t> capacity) : capacity_(capacity) {}

std::string MemoryStorage::key_of(const std::filesystem::path& path) {
  std::string key = path.lexically_normal().string();
  while (key.size() > 1 && key.back() == '/') key.pop_back();
  return key.empty() ? "." : key;
}

bool MemoryStorage::is_directory_locked(const std::string& key) const {
  if (key == "." || key == "/" || directories_.count(key) != 0) return true;
  const std::string prefix = key + "/";
  const auto below = files_.lower_bound(prefix);
  return below != files_.end() && below->first.compare(0, prefix.size(), prefix) == 0;
}

std::unique_ptr<WritableFile> MemoryStorage::create(const std::filesystem::path& path) {
  const std::string key = key_of(path);
  std::lock_guard<std::mutex> lock(mutex_);
  if (is_directory_locked(key)) {
    throw CheckpointError("cannot create " + key + ": " + std::strerror(EISDIR), path, EISDIR);
  }
  for (auto parent = std::filesystem::path(key).parent_path(); !parent.empty();
       parent = parent.parent_path()) {
    if (files_.count(parent.string()) != 0) {
      throw CheckpointError("cannot create " + key + ": " + std::strerror(ENOTDIR), path, ENOTDIR);
    }
    if (parent == parent.parent_path()) break;
  }
  return std::make_unique<Writer>(*this, key);
}

void MemoryStorage::commit(const std::string& key, std::string bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto existing = files_.find(key);
  const uint64_t replaced = existing == files_.end() ? 0 : existing->second.bytes->size();
  if (capacity_ && used_ - replaced + bytes.size() > *capacity_) {
    throw CheckpointError("cannot commit " + key + ": " + std::to_string(bytes.size()) +
                              " bytes exceed the " + std::to_string(*capacity_ - used_) +
                              " left (" + std::strerror(ENOSPC) + ")",
                          key, ENOSPC);
  }
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  // Strictly increasing, so that a rewrite is always seen as a change.
  last_mtime_ns_ = std::max(now, last_mtime_ns_ + 1);
  used_ = used_ - replaced + bytes.size();
  files_[key] = Entry{std::make_shared<const std::string>(std::move(bytes)), last_mtime_ns_};
}

std::unique_ptr<RandomAccessFile> MemoryStorage::open(const std::filesystem::path& path) {
  const std::string key = key_of(path);
  std::lock_guard<std::mutex> lock(mutex_);
  const auto found = files_.find(key);
  if (found == files_.end()) {
    const int error = is_directory_locked(key) ? EISDIR : ENOENT;
    throw CheckpointError("cannot open " + key + ": " + std::strerror(error), path, error);
  }
  return std::make_unique<Reader>(found->second.bytes, key, bytes_read_);
}

std::optional<FileInfo> MemoryStorage::stat(const std::filesystem::path& path) {
  const std::string key = key_of(path);
  std::lock_guard<std::mutex> lock(mutex_);
  const auto found = files_.find(key);
  if (found != files_.end()) {
    return FileInfo{path, false, found->second.bytes->size(), found->second.mtime_ns};
  }
  if (is_directory_locked(key)) return FileInfo{path, true, 0, 0};
  return std::nullopt;
}

std::vector<FileInfo> MemoryStorage::list(const std::filesystem::path& directory, bool recursive) {
  const std::string key = key_of(directory);
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<FileInfo> result;
  const std::string prefix = key == "." ? "" : key == "/" ? "/" : key + "/";
  for (auto it = files_.lower_bound(prefix); it != files_.end(); ++it) {
    if (it->first.compare(0, prefix.size(), prefix) != 0) break;
    const std::string rest = it->first.substr(prefix.size());
    if (!recursive && rest.find('/') != std::string::npos) continue;
    if (key == "." && !rest.empty() && rest.front() == '/') continue;  // absolute keys
    result.push_back(FileInfo{std::filesystem::path(directory) / rest, false,
                              it->second.bytes->size(), it->second.mtime_ns});
  }
  return result;
}

void MemoryStorage::remove(const std::filesystem::path& path) {
  const std::string key = key_of(path);
  std::lock_guard<std::mutex> lock(mutex_);
  const auto found = files_.find(key);
  if (found == files_.end()) return;
  used_ -= found->second.bytes->size();
  files_.erase(found);
}

void MemoryStorage::create_directories(const std::filesystem::path& directory) {
  const std::string key = key_of(directory);
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto dir = std::filesystem::path(key); !dir.empty(); dir = dir.parent_path()) {
    if (files_.count(dir.string()) != 0) {
      throw CheckpointError("cannot create directory " + key + ": " + dir.string() +
                                " is a file (" + std::strerror(ENOTDIR) + ")",
                            directory, ENOTDIR);
    }
    if (dir == dir.parent_path()) break;
  }
  for (auto dir = std::filesystem::path(key); !dir.empty() && dir != dir.parent_path();
       dir = dir.parent_path()) {
    directories_.insert(dir.string());
  }
}

std::optional<uint64_t> MemoryStorage::available_space(const std::filesystem::path&) {
  if (!capacity_) return std::nullopt;
  std::lock_guard<std::mutex> lock(mutex_);
  return *capacity_ - used_;
}

uint64_t MemoryStorage::used_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return used_;
}

uint64_t MemoryStorage::bytes_read() const { return *bytes_read_; }

}  // namespace ckpt
