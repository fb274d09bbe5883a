#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

namespace ckpt::detail {

/// The marker in the names of ckpt's temporaries: `.<final name>.ckpt-tmp-XXXXXX`.
inline constexpr const char* kTempMarker = ".ckpt-tmp-";

/// True if `filename` is one of ckpt's temporaries.
bool is_temp_name(const std::string& filename);

/// A file written under a temporary name in the destination's directory and renamed over the
/// destination by commit(): readers see the old file or the complete new one, never a torn one.
/// Destroying it uncommitted removes the temporary.
class AtomicFile {
 public:
  explicit AtomicFile(std::filesystem::path destination);
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile();

  /// Appends bytes (small writes are buffered). Throws CheckpointError on a system error.
  void write(const void* data, std::size_t size);
  /// Flushes, fsyncs, closes, renames over the destination and fsyncs the directory.
  void commit();

  uint64_t bytes_written() const noexcept { return bytes_; }
  const std::filesystem::path& temp_path() const noexcept { return temp_path_; }

 private:
  void flush_buffer();
  void write_fully(const char* data, std::size_t size);
  [[noreturn]] void fail(const std::string& what, int error_number);

  std::filesystem::path destination_;
  std::filesystem::path temp_path_;
  int fd_ = -1;
  bool committed_ = false;
  uint64_t bytes_ = 0;
  std::string buffer_;
};

/// fsyncs a directory so that a rename inside it is durable.
void fsync_directory(const std::filesystem::path& directory);

}  // namespace ckpt::detail
