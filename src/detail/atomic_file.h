#pragma once

#include <ckpt/storage.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

namespace ckpt::detail {

/// The marker in the names of ckpt's temporaries: `.<final name>.ckpt-tmp-XXXXXX`.
inline constexpr const char* kTempMarker = ".ckpt-tmp-";

/// If `filename` is one of ckpt's temporaries, the final name it was being written for.
std::string temp_target_name(const std::string& filename);

/// A file written under a temporary name in the destination's directory and renamed over the
/// destination by commit(): readers see the old file or the complete new one, never a torn one.
/// Destroying it uncommitted, or any failure, removes the temporary.
class AtomicFile {
 public:
  AtomicFile(Storage& storage, std::filesystem::path destination);
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile();

  /// Appends bytes (small writes are buffered). Throws CheckpointError naming the destination.
  void write(const void* data, std::size_t size);
  /// Flushes, fsyncs, closes, renames over the destination and fsyncs the directory.
  void commit();

  uint64_t bytes_written() const noexcept { return bytes_; }

 private:
  void flush_buffer();
  template <class F>
  void guarded(F&& step);
  void discard() noexcept;

  Storage& storage_;
  std::filesystem::path destination_;
  std::filesystem::path temp_path_;
  std::unique_ptr<WritableFile> file_;
  bool committed_ = false;
  uint64_t bytes_ = 0;
  std::string buffer_;
};

}  // namespace ckpt::detail
