#pragma once
// `{prefix}_latest`: one line naming the newest complete checkpoint, so that a resume need not
// trust a scan alone (and a scan can overrule a stale pointer).

#include "file_names.h"

#include <ckpt/storage.h>

#include <filesystem>
#include <optional>

namespace ckpt::detail {

class LatestPointer {
 public:
  LatestPointer(Storage& storage, const FileNames& names) : storage_(storage), names_(names) {}

  /// Rewrites `{dir}/{prefix}_latest` (atomically, durably) to name the newest resumable
  /// checkpoint directly in `dir`. Throws CheckpointError on failure.
  void update(const std::filesystem::path& dir);
  /// The checkpoint the pointer in `dir` names, if the pointer is valid, the file exists and it is
  /// not older than `newest` (what a scan found); otherwise nullopt, with a warning saying why.
  std::optional<std::filesystem::path> pointed(const std::filesystem::path& dir,
                                               const std::filesystem::path& newest);

 private:
  Storage& storage_;
  const FileNames& names_;
};

}  // namespace ckpt::detail
