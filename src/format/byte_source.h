#pragma once

#include <ckpt/storage.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace ckpt::detail {

/// A run of a file's bytes. `data` keeps them alive: it aliases a whole file in memory (a mapping
/// or a buffer) or owns bytes read for this run. The pointer is congruent to the file offset
/// modulo 64, so a record aligned in the file (PyTorch aligns tensor data to 64 bytes) is aligned
/// in memory for any tensor type.
struct Bytes {
  std::shared_ptr<char> data;
  std::size_t size = 0;
  const char* begin() const noexcept { return data.get(); }
};

/// A whole file in memory, aligned for any tensor type (safetensors reads files this way).
struct FileBuffer {
  std::shared_ptr<char> data;
  std::size_t size = 0;
};

/// Reads the whole of `file` into an aligned buffer (`name` names it in errors).
std::shared_ptr<FileBuffer> read_file_buffer(const RandomAccessFile& file, const std::string& name);

/// Where a reader gets a file's bytes, so that one zip reader serves a file mapped or read whole
/// (every view aliases memory, nothing is read per view) and a file read range by range for what
/// is asked (an object store's ranged GETs). Thread safety: view() may be called concurrently.
class ByteSource {
 public:
  ByteSource(uint64_t size, std::string name) : size_(size), name_(std::move(name)) {}
  ByteSource(const ByteSource&) = delete;
  ByteSource& operator=(const ByteSource&) = delete;
  virtual ~ByteSource() = default;

  uint64_t size() const noexcept { return size_; }
  const std::string& name() const noexcept { return name_; }
  /// True if every view aliases memory that already holds the whole file.
  virtual bool in_memory() const noexcept = 0;
  /// `size` bytes at `offset`. Throws CheckpointError naming the file if the range ends past the
  /// file (a truncated or damaged file) or the read fails.
  Bytes view(uint64_t offset, uint64_t size) const;
  /// The bytes of the file view() has handed out so far, each byte counted once however many
  /// views cover it (a zip reader views its directory, then parts of it again): for a ranged
  /// source what it read, for a mapping what was asked for (the kernel reads those pages as they
  /// are touched). Never more than size().
  uint64_t bytes_viewed() const noexcept { return viewed_.load(); }

 protected:
  virtual Bytes do_view(uint64_t offset, uint64_t size) const = 0;

 private:
  uint64_t size_;
  std::string name_;
  mutable std::atomic<uint64_t> viewed_{0};
  mutable std::mutex viewed_mutex_;
  mutable std::map<uint64_t, uint64_t> viewed_ranges_;  // begin -> end, disjoint, not touching
};

/// A source over bytes already in memory (views alias them).
std::unique_ptr<ByteSource> memory_source(std::shared_ptr<char> data, uint64_t size,
                                          std::string name);
/// The whole of `file` in memory: its mapping where the storage maps files (a page is read when
/// touched), otherwise read into an aligned buffer now.
std::unique_ptr<ByteSource> whole_file_source(std::unique_ptr<RandomAccessFile> file,
                                              std::string name);
/// `file` read lazily: its mapping where the storage maps files, otherwise each view is a read of
/// just that range (the file's last bytes, where a zip keeps its directory, are read once and
/// kept).
std::unique_ptr<ByteSource> lazy_file_source(std::unique_ptr<RandomAccessFile> file,
                                             std::string name);

}  // namespace ckpt::detail
