#pragma once

#include <ckpt/storage.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace ckpt {

/// A resumable checkpoint's place in the run, parsed from its file name:
/// `{prefix}_{index}.{ext}` (after epoch `index`) or `{prefix}_{index}_step_{step}.{ext}` (in
/// epoch `index`, after global step `step`). Ordered oldest first: within an index, step
/// checkpoints come before the epoch's own.
struct CheckpointName {
  int64_t index = 0;
  std::optional<int64_t> step;

  bool operator<(const CheckpointName& other) const noexcept;
  bool operator==(const CheckpointName& other) const noexcept {
    return index == other.index && step == other.step;
  }
  /// The file name for `prefix` and `ext`.
  std::string file_name(const std::string& prefix, const std::string& ext) const;
  /// The name's place, if `file_name` is exactly one of the two forms (N, S non-negative).
  static std::optional<CheckpointName> parse(const std::string& file_name,
                                             const std::string& prefix, const std::string& ext);
};

/// The newest checkpoint under `load_dir` (searched recursively): the file whose name is a
/// CheckpointName with the largest place; ties (same name in several folders) go to the
/// lexicographically smallest path. Empty path if there is none or `load_dir` does not exist.
/// Temporaries of unfinished writes and best checkpoints are never candidates.
std::filesystem::path get_latest_file(const std::filesystem::path& load_dir,
                                      const std::string& file_prefix = "model",
                                      const std::string& file_ext = "pt",
                                      Storage& storage = *Storage::by_location());

/// Every checkpoint under `load_dir` (recursively) whose name is a CheckpointName, newest first:
/// by place descending, ties by path ascending. get_latest_file is its first element.
std::vector<std::filesystem::path> list_checkpoints(const std::filesystem::path& load_dir,
                                                    const std::string& file_prefix = "model",
                                                    const std::string& file_ext = "pt",
                                                    Storage& storage = *Storage::by_location());

/// Creates `path` and its parents if missing. Throws CheckpointError if it exists and is not a
/// directory, or cannot be created.
void check_mk_dir(const std::filesystem::path& path, Storage& storage = *Storage::by_location());

}  // namespace ckpt
