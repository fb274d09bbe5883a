#include <ckpt/retention.h>

#include <ckpt/checkpoint_error.h>
#include <ckpt/checkpoint_names.h>
#include <ckpt/logger.h>

#include <ckpt/serialization.h>
#include <spdlog/spdlog.h>

#include "retention_policy.h"

#include <algorithm>

namespace ckpt {

std::vector<std::filesystem::path> retention_victims(
    const std::filesystem::path& dir, int64_t keep_last_n, const std::string& file_prefix,
    const std::string& file_ext, const std::function<bool(const std::filesystem::path&)>& verifies,
    Storage& storage) {
  if (keep_last_n < 1) {
    throw CheckpointError("invalid keep_last_n " + std::to_string(keep_last_n) +
                          ": retention keeps at least one checkpoint");
  }
  std::vector<std::pair<CheckpointName, std::filesystem::path>> ours;
  for (const auto& file : storage.list(dir, /*recursive=*/false)) {
    if (const auto name =
            CheckpointName::parse(file.path.filename().string(), file_prefix, file_ext)) {
      ours.emplace_back(*name, file.path);
    }
  }
  std::sort(ours.begin(), ours.end(),
            [](const auto& a, const auto& b) { return b.first < a.first; });
  const auto check = [&](const std::filesystem::path& path) {
    if (verifies) return verifies(path);
    try {
      verify_file(path, storage);
      return true;
    } catch (const CheckpointError& e) {
      logger()->warn("checkpoint {} does not verify: {}", path.string(), e.what());
      return false;
    }
  };
  std::vector<std::filesystem::path> victims;
  int64_t kept = 0;
  for (const auto& [name, path] : ours) {
    if (kept < keep_last_n) {
      // Only checkpoints that verify count as resumable; one that does not is left for a human.
      if (check(path)) ++kept;
      continue;
    }
    if (!is_ckpt_file(path, storage)) {
      logger()->warn("retention: leaving {} alone: ckpt did not write it", path.string());
      continue;
    }
    victims.push_back(path);
  }
  return victims;
}

namespace detail {

std::vector<std::filesystem::path> Retention::victims(int64_t keep) {
  return retention_victims(
      dir_, keep, names_.prefix(), names_.ext(),
      [this](const std::filesystem::path& path) { return verified_.verifies(path); }, storage_);
}

void Retention::apply(int64_t keep) {
  for (const auto& path : victims(keep)) {
    storage_.remove(path);
    verified_.forget(path);
    logger()->info("retention (keep_last_n={}): deleted {}", keep, path.string());
  }
}

}  // namespace detail
}  // namespace ckpt
