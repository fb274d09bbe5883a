#include "verified_files.h"

#include <ckpt/checkpoint_error.h>
#include <ckpt/logger.h>

#include <ckpt/serialization.h>
#include <spdlog/spdlog.h>

namespace ckpt::detail {

bool VerifiedFiles::verifies(const std::filesystem::path& path) {
  const auto info = storage_.stat(path);
  if (!info || info->is_directory) return false;
  const auto known = known_.find(path);
  if (known != known_.end() && known->second == std::make_pair(info->size, info->mtime_ns)) {
    return true;
  }
  try {
    verify_file(path, storage_);
  } catch (const CheckpointError& e) {
    logger()->warn("checkpoint {} does not verify: {}", path.string(), e.what());
    known_.erase(path);
    return false;
  }
  known_[path] = {info->size, info->mtime_ns};
  return true;
}

void VerifiedFiles::record(const std::filesystem::path& path) {
  if (const auto info = storage_.stat(path)) known_[path] = {info->size, info->mtime_ns};
}

}  // namespace ckpt::detail
