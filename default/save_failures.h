#pragma once
// on_save_failure: what a failed save does to training. Under "continue" a failure is counted and
// logged and training goes on, until too many in a row or too long without a durable checkpoint;
// under "stop" every failure is thrown.

#include <ckpt/checkpoint_error.h>
#include <ckpt/save_health.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>

namespace ckpt::detail {

/// Thread safety: every member may be called from several threads (the checkpointer's and its
/// background writer's).
class SaveFailures {
 public:
  /// `keep_going`: on_save_failure is "continue". `max_in_a_row` (>= 1) and `max_unsaved_seconds`
  /// (0: no limit) bound it. The clock of `max_unsaved_seconds` starts now.
  SaveFailures(bool keep_going, int64_t max_in_a_row, double max_unsaved_seconds);

  /// A save landed; `resumable` when it is a checkpoint a resume can use, which becomes the last
  /// durable one and restarts the unsaved clock.
  void landed(const std::filesystem::path& path, bool resumable);
  /// Counts the failure of `what` (e.g. "saving checkpoint model_3.pt") and logs it as an error
  /// naming the reason and the last durable checkpoint, or, when training must stop (policy
  /// "stop", `max_in_a_row` failures in a row, or `max_unsaved_seconds` without a durable
  /// checkpoint), throws a CheckpointError that says so and names the last durable checkpoint,
  /// with `error`'s path and errno.
  void failed(const std::string& what, const CheckpointError& error);
  /// True while the latest save failed: retention must then delete nothing.
  bool failing() const;
  SaveHealth health() const;

 private:
  using Clock = std::chrono::steady_clock;
  std::string last_durable_text() const;  // mutex_ held

  const bool keep_going_;
  const int64_t max_in_a_row_;
  const double max_unsaved_seconds_;
  mutable std::mutex mutex_;
  SaveHealth health_;
  Clock::time_point durable_since_ = Clock::now();  // the last durable save, or construction
};

}  // namespace ckpt::detail
