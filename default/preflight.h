#pragma once
// The disk pre-flight: a save that cannot fit fails before it writes a byte, after retention has
// freed what it would free anyway.

#include "retention_policy.h"

#include <ckpt/checkpoint.h>
#include <ckpt/default_checkpointer_arguments.h>
#include <ckpt/storage.h>

#include <cstdint>
#include <filesystem>

namespace ckpt::detail {

/// The bytes save_checkpoint_file will write, roughly: every distinct tensor storage, plus the
/// pickle and the zip records' overhead.
uint64_t estimate_bytes(const Checkpoint& checkpoint);

class Preflight {
 public:
  Preflight(Storage& storage, const DefaultCheckpointerArguments& args, Retention& retention)
      : storage_(storage), args_(args), retention_(retention) {}

  /// Returns if `checkpoint` fits at `path` with `disk_margin_mb` to spare, or if the storage does
  /// not know its free space (nothing to check). With `may_prune`, first applies retention for one
  /// checkpoint fewer when that alone makes room (never deleting the newest). Otherwise throws
  /// CheckpointError (ENOSPC) saying nothing was written.
  void check(const Checkpoint& checkpoint, const std::filesystem::path& path, bool may_prune);

 private:
  Storage& storage_;
  const DefaultCheckpointerArguments& args_;
  Retention& retention_;
};

}  // namespace ckpt::detail
