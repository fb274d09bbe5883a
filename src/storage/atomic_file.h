#pragma once

#include <ckpt/storage.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

namespace ckpt::detail {

/// A file written through Storage::create: invisible until commit(), then whole and durable.
/// Small writes are gathered into 1 MiB appends; large ones go straight from the caller's memory.
/// Every failure is rethrown as "cannot save <destination>: <reason>", and destroying it
/// uncommitted discards the write.
class AtomicFile {
 public:
  AtomicFile(Storage& storage, std::filesystem::path destination);
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  /// Appends bytes. Throws CheckpointError naming the destination.
  void write(const void* data, std::size_t size);
  /// Flushes and commits (Storage's WritableFile::commit).
  void commit();

  uint64_t bytes_written() const noexcept { return bytes_; }

 private:
  void flush_buffer();
  template <class F>
  void guarded(F&& step);

  std::filesystem::path destination_;
  std::unique_ptr<WritableFile> file_;
  uint64_t bytes_ = 0;
  std::string buffer_;
};

}  // namespace ckpt::detail
