#pragma once
// The names of every file a DefaultCheckpointer writes, and how to recognise them.

#include <ckpt/checkpoint_names.h>

#include <cstdint>
#include <optional>
#include <string>

namespace ckpt::detail {

inline constexpr const char* kSafetensorsExt = "safetensors";

/// N if `text` is a non-negative decimal integer of at most 18 digits.
std::optional<int64_t> parse_count(const std::string& text);

/// The names one checkpointer's options give its files.
class FileNames {
 public:
  FileNames(std::string prefix, std::string ext, std::string model_format)
      : prefix_(std::move(prefix)), ext_(std::move(ext)), model_format_(std::move(model_format)) {}

  const std::string& prefix() const noexcept { return prefix_; }
  const std::string& ext() const noexcept { return ext_; }

  /// `{prefix}_{index}.{ext}` or `{prefix}_{index}_step_{step}.{ext}`.
  std::string resumable(const CheckpointName& name) const { return name.file_name(prefix_, ext_); }
  std::optional<CheckpointName> parse_resumable(const std::string& name) const {
    return CheckpointName::parse(name, prefix_, ext_);
  }
  /// `{prefix}_model_{index}.{ext}` (`.safetensors` in that format).
  std::string model(int64_t index) const;
  /// `{prefix}_best_{index}.{ext}`.
  std::string best(int64_t index) const;
  std::optional<int64_t> best_index(const std::string& name) const;
  /// `{prefix}_latest`.
  std::string pointer() const { return prefix_ + "_latest"; }
  /// Any of the above: the files this checkpointer may delete.
  bool is_own(const std::string& name) const;

 private:
  std::string prefix_;
  std::string ext_;
  std::string model_format_;
};

}  // namespace ckpt::detail
