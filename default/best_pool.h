#pragma once
// save_top_k: the K best checkpoints by a monitored metric, kept as `{prefix}_best_{index}` files,
// a pool apart from the resumable checkpoints.

#include "file_names.h"
#include "preflight.h"

#include <ckpt/checkpoint.h>
#include <ckpt/default_checkpointer.h>
#include <ckpt/default_checkpointer_arguments.h>
#include <ckpt/storage.h>

#include <cstdint>
#include <filesystem>
#include <vector>

namespace ckpt::detail {

class BestPool {
 public:
  using Entry = DefaultCheckpointer::Best;

  BestPool(Storage& storage, const DefaultCheckpointerArguments& args, const FileNames& names,
           Preflight& preflight)
      : storage_(storage), args_(args), names_(names), preflight_(preflight) {}

  /// Rebuilds the pool from the best files in `save_dir` ranked by the current monitor and mode
  /// (others are left alone), deleting the worst if save_top_k was lowered.
  void load();
  /// Writes `written` (the checkpoint as a save writes it) as a best file if its score
  /// (`checkpoint.metadata["metrics"][monitor]`) ranks among the best K (strictly better than the
  /// K-th: ties go to the earlier), and evicts what falls out. Throws CheckpointError naming the
  /// monitor if the metric is missing; a NaN score is a warning.
  void consider(const Checkpoint& checkpoint, const Checkpoint& written, int64_t index);

  /// Best first (ties: the earlier index first).
  const std::vector<Entry>& entries() const noexcept { return entries_; }

 private:
  bool better(double a, double b) const;
  bool ranks_before(const Entry& a, const Entry& b) const;

  Storage& storage_;
  const DefaultCheckpointerArguments& args_;
  const FileNames& names_;
  Preflight& preflight_;
  std::vector<Entry> entries_;
};

}  // namespace ckpt::detail
