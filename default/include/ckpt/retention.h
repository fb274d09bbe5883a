#pragma once

#include <ckpt/storage.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace ckpt {

/// What retention (`keep_last_n`) deletes in `dir`, oldest last: this prefix's resumable
/// checkpoints directly in `dir` (CheckpointName), newest first, skipping the newest
/// `keep_last_n` that verify (`verifies`, default: verify_file; a file that does not verify is
/// neither counted nor returned), and files ckpt did not write (is_ckpt_file). Deletes nothing.
/// Throws CheckpointError if `keep_last_n` < 1 or `dir` cannot be listed.
std::vector<std::filesystem::path> retention_victims(
    const std::filesystem::path& dir, int64_t keep_last_n, const std::string& file_prefix = "model",
    const std::string& file_ext = "pt",
    const std::function<bool(const std::filesystem::path&)>& verifies = {},
    Storage& storage = *Storage::by_location());

}  // namespace ckpt
