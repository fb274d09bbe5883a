#pragma once
// Which checkpoint files are known to verify, so that retention and the pre-flight, which run at
// every save, do not re-read every kept checkpoint each time.

#include <ckpt/storage.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <utility>

namespace ckpt::detail {

/// A cache of files that verified, keyed by path and valid while size and mtime are unchanged.
/// Not synchronised: one thread at a time (the background writer, when saves are async).
class VerifiedFiles {
 public:
  explicit VerifiedFiles(Storage& storage) : storage_(storage) {}

  /// Whether `path` verifies (ckpt::verify_file), from the cache when its size and mtime are
  /// those it had when it last verified. A file that does not verify is logged as a warning.
  bool verifies(const std::filesystem::path& path);
  /// Records `path` as verified as it is now (we computed its checksums while writing it).
  void record(const std::filesystem::path& path);
  void forget(const std::filesystem::path& path) { known_.erase(path); }

 private:
  Storage& storage_;
  std::map<std::filesystem::path, std::pair<uint64_t, int64_t>> known_;  // size, mtime
};

}  // namespace ckpt::detail
