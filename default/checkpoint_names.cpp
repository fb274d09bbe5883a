#include <ckpt/checkpoint_names.h>

#include <ckpt/checkpoint_error.h>

#include "file_names.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

namespace ckpt {
namespace detail {
namespace {

// The part of `name` between `prefix` and `.{ext}`, if it has both.
std::optional<std::string> middle_of(const std::string& name, const std::string& prefix,
                                     const std::string& ext) {
  const std::string suffix = "." + ext;
  if (name.size() <= prefix.size() + suffix.size()) return std::nullopt;
  if (name.compare(0, prefix.size(), prefix) != 0) return std::nullopt;
  if (name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) return std::nullopt;
  return name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
}

// N if `name` is exactly `{prefix}{N}.{ext}` with N a non-negative decimal integer.
std::optional<int64_t> index_in_name(const std::string& name, const std::string& prefix,
                                     const std::string& ext) {
  const auto middle = middle_of(name, prefix, ext);
  return middle ? parse_count(*middle) : std::nullopt;
}

}  // namespace

std::optional<int64_t> parse_count(const std::string& text) {
  if (text.empty() || text.size() > 18) return std::nullopt;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  return std::stoll(text);
}

std::string FileNames::model(int64_t index) const {
  const std::string ext = model_format_ == kSafetensorsExt ? kSafetensorsExt : ext_;
  return prefix_ + "_model_" + std::to_string(index) + "." + ext;
}

std::string FileNames::best(int64_t index) const {
  return prefix_ + "_best_" + std::to_string(index) + "." + ext_;
}

std::optional<int64_t> FileNames::best_index(const std::string& name) const {
  return index_in_name(name, prefix_ + "_best_", ext_);
}

bool FileNames::is_own(const std::string& name) const {
  return parse_resumable(name) || index_in_name(name, prefix_ + "_model_", ext_) ||
         (model_format_ == kSafetensorsExt &&
          index_in_name(name, prefix_ + "_model_", kSafetensorsExt)) ||
         best_index(name) || name == pointer();
}

}  // namespace detail

bool CheckpointName::operator<(const CheckpointName& other) const noexcept {
  if (index != other.index) return index < other.index;
  // Within an index, step checkpoints (mid-epoch) precede the epoch's own (step unset).
  const int64_t mine = step.value_or(std::numeric_limits<int64_t>::max());
  const int64_t theirs = other.step.value_or(std::numeric_limits<int64_t>::max());
  return mine < theirs;
}

std::string CheckpointName::file_name(const std::string& prefix, const std::string& ext) const {
  std::string name = prefix + "_" + std::to_string(index);
  if (step) name += "_step_" + std::to_string(*step);
  return name + "." + ext;
}

std::optional<CheckpointName> CheckpointName::parse(const std::string& file_name,
                                                    const std::string& prefix,
                                                    const std::string& ext) {
  const auto middle = detail::middle_of(file_name, prefix + "_", ext);
  if (!middle) return std::nullopt;
  const std::string marker = "_step_";
  const auto at = middle->find(marker);
  if (at == std::string::npos) {
    const auto index = detail::parse_count(*middle);
    if (!index) return std::nullopt;
    return CheckpointName{*index, std::nullopt};
  }
  const auto index = detail::parse_count(middle->substr(0, at));
  const auto step = detail::parse_count(middle->substr(at + marker.size()));
  if (!index || !step) return std::nullopt;
  return CheckpointName{*index, *step};
}

namespace {

// Calls `found(name, path)` for every file under `load_dir` (recursively) whose name is a
// CheckpointName.
template <class Found>
void for_each_checkpoint(Storage& storage, const std::filesystem::path& load_dir,
                         const std::string& file_prefix, const std::string& file_ext,
                         Found&& found) {
  std::vector<FileInfo> files;
  try {
    files = storage.list(load_dir, /*recursive=*/true);
  } catch (const CheckpointError& e) {
    throw CheckpointError("cannot search " + load_dir.string() + ": " + e.what(), load_dir,
                          e.error_number());
  }
  for (const auto& file : files) {
    const auto name = CheckpointName::parse(file.path.filename().string(), file_prefix, file_ext);
    if (name) found(*name, file.path);
  }
}

}  // namespace

std::vector<std::filesystem::path> list_checkpoints(const std::filesystem::path& load_dir,
                                                    const std::string& file_prefix,
                                                    const std::string& file_ext, Storage& storage) {
  std::vector<std::pair<CheckpointName, std::filesystem::path>> found;
  for_each_checkpoint(storage, load_dir, file_prefix, file_ext,
                      [&](const CheckpointName& name, const std::filesystem::path& path) {
                        found.emplace_back(name, path);
                      });
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) {
    return a.first == b.first ? a.second < b.second : b.first < a.first;
  });
  std::vector<std::filesystem::path> result;
  result.reserve(found.size());
  for (auto& entry : found) result.push_back(std::move(entry.second));
  return result;
}

std::filesystem::path get_latest_file(const std::filesystem::path& load_dir,
                                      const std::string& file_prefix, const std::string& file_ext,
                                      Storage& storage) {
  // One pass keeping the best so far: linear in the number of files, no sort.
  std::optional<CheckpointName> best_name;
  std::filesystem::path best;
  for_each_checkpoint(
      storage, load_dir, file_prefix, file_ext,
      [&](const CheckpointName& name, const std::filesystem::path& path) {
        if (!best_name || *best_name < name || (*best_name == name && path < best)) {
          best_name = name;
          best = path;
        }
      });
  return best;
}

void check_mk_dir(const std::filesystem::path& path, Storage& storage) {
  const auto info = storage.stat(path);
  if (info && !info->is_directory) {
    throw CheckpointError(
        "checkpoint directory " + path.string() + " exists and is not a directory", path, ENOTDIR);
  }
  if (info) return;
  try {
    storage.create_directories(path);
  } catch (const CheckpointError& e) {
    const std::string reason = e.error_number() != 0 ? std::strerror(e.error_number()) : e.what();
    throw CheckpointError("cannot create checkpoint directory " + path.string() + ": " + reason,
                          path, e.error_number());
  }
}

}  // namespace ckpt
