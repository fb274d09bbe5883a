#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace ckpt {

/// What became of a checkpointer's saves so far: the figures a trainer reports at the end of a
/// run, and what it needs to know whether its last save landed (see
/// AbstractCheckpointer::save_health and DefaultCheckpointerArguments::on_save_failure).
struct SaveHealth {
  /// Saves the storage refused, in all (each whole-save attempt counts once).
  int64_t failed_saves = 0;
  /// Of those, the ones since the last save that landed: 0 when the latest save is durable.
  int64_t failures_in_a_row = 0;
  /// The newest resumable checkpoint known to be durable; nothing before the first.
  std::optional<std::filesystem::path> last_durable;
  /// The longest stretch, in seconds, without a new durable checkpoint: between two durable
  /// saves, from the start (the checkpointer's construction) to the first, or from the last one to
  /// now, whichever is longest.
  double longest_unsaved_seconds = 0;
  /// Why the latest failed save failed; empty if none has.
  std::string last_failure;
};

}  // namespace ckpt
