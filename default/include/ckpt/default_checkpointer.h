#pragma once

#include <ckpt/abstract_checkpointer.h>
#include <ckpt/checkpoint.h>
#include <ckpt/checkpoint_names.h>
#include <ckpt/default_checkpointer_arguments.h>
#include <ckpt/retention.h>
#include <ckpt/state_dict.h>
#include <ckpt/storage.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <optional>
#include <vector>

namespace ckpt {
namespace detail {
class BackgroundWriter;
}  // namespace detail

/// The file-based checkpointer: PyMarlin's `DefaultCheckpointer`, with its surprises fixed (see
/// docs/pymarlin-differences.md).
///
///   ckpt::DefaultCheckpointerArguments args;
///   args.save_dir = "runs/a";
///   args.load_dir = "runs/a";
///   ckpt::DefaultCheckpointer checkpointer(args);
///   ckpt::Checkpoint resumed = checkpointer.load();     // empty on a fresh start
///   ...
///   checkpointer.save(checkpoint, epoch);                // runs/a/model_<epoch>.pt
///
/// With `args.async`, save() returns once the state is copied, and training may change the
/// parameters right away; call wait() before relying on the file:
///
///   args.async = true;
///   ckpt::DefaultCheckpointer checkpointer(args);
///   checkpointer.save(checkpoint, epoch);                // blocks only for the copy
///   optimizer.step();                                    // does not leak into the file
///   checkpointer.wait();                                 // durable; rethrows a failure
///
/// With `args.stage_in_background` as well, save() does not block for the copy either; the copy
/// overlaps what the caller does next, until it must change the tensors:
///
///   checkpointer.save(checkpoint, epoch);                // returns at once
///   forward_and_backward();                              // overlaps the copy
///   checkpointer.wait_staged();                          // the copy is done
///   optimizer.step();                                    // does not leak into the file
///
/// Thread safety: one thread at a time calls its members. With `async`, its own background thread
/// writes the files (through the Storage, concurrently with nothing else of this checkpointer).
class DefaultCheckpointer final : public AbstractCheckpointer {
 public:
  /// Validates `args` (CheckpointError naming the bad field), removes temporaries that an
  /// interrupted save of this checkpointer left in `save_dir` and `model_state_save_dir`
  /// (Storage::remove_unfinished_writes; locally `.<name>.ckpt-tmp-XXXXXX` where `<name>` is one
  /// of its own file names), and, with
  /// `delete_existing_checkpoints`, deletes this checkpointer's own files, logging each. Every
  /// read, listing, write and removal goes through `storage` (see ckpt/storage.h: the local
  /// filesystem, MemoryStorage, S3Storage, or a backend of your own). Without one (null), the
  /// storage follows the locations: local paths on the local filesystem, `s3://` URLs on S3 with
  /// the `s3_*` options (ckpt::storage_by_location).
  explicit DefaultCheckpointer(DefaultCheckpointerArguments args,
                               std::shared_ptr<Storage> storage = nullptr);

  /// Waits for a save in flight. A background failure that was never thrown is logged as an error
  /// on ckpt's logger (a destructor must not throw); call wait() first to handle it.
  ~DefaultCheckpointer() override;

  /// Writes `{save_dir}/{file_prefix}_{index}.{file_ext}` when
  /// `checkpoint && (index % period == 0 || force)` and returns its path; otherwise returns
  /// nothing. A negative index is an error. The same index again replaces the file atomically.
  ///
  /// Every write: disk pre-flight (see `disk_margin_mb`; may apply retention first, never
  /// deleting the newest resumable checkpoint), the atomic durable write, the latest pointer, then
  /// retention (`keep_last_n`). With `save_top_k`, the score `checkpoint.metadata["metrics"]
  /// [monitor]` is also considered for the best pool, whether or not the epoch is due (best files
  /// are written synchronously); a missing metric is a CheckpointError naming it and the metrics
  /// present.
  ///
  /// A write the storage refuses (full disk, I/O error, S3 past its retries) follows
  /// `on_save_failure`: by default ("continue") it is logged, counted (save_health()) and returns
  /// nothing, and training goes on, until `max_save_failures` in a row or `max_unsaved_seconds`
  /// without a durable checkpoint throw a CheckpointError naming the last durable one. A save
  /// forced with `force` (the end of training, a stop), unless step_due() asked for it, must land:
  /// it is tried again until it does or that limit throws. A checkpoint that cannot be written at
  /// all (an unsupported value) is thrown at once. With "stop", every failure is thrown.
  ///
  /// With `async`: first throws the failure of an earlier background save not yet reported (and
  /// then saves nothing); if it saves, waits for the save in flight, copies every tensor of
  /// `checkpoint` into the staging memory (a true snapshot: later changes to the tensors do not
  /// reach the file), queues the write (pre-flight, write, pointer and retention then run in the
  /// background) and returns the path the file will have once durable. With `stage_in_background`
  /// too, the copy is made in the background as well: do not change a tensor of `checkpoint`
  /// before wait_staged() returns.
  std::optional<std::filesystem::path> save(const Checkpoint& checkpoint, int64_t index,
                                            bool force = false) override;

  /// True when `every_n_train_steps` divides the global step or `train_time_interval` seconds of
  /// training have passed since the last save.
  bool step_due(const TrainingProgress& progress) override;

  /// Writes `{save_dir}/{file_prefix}_{epoch}_step_{global_step}.{file_ext}` when checkpointing
  /// is on and `force || step_due(progress)`, with the same pre-flight, pointer and retention as
  /// save(), and in the background with `async` like save().
  std::optional<std::filesystem::path> save_step(const Checkpoint& checkpoint,
                                                 const TrainingProgress& progress,
                                                 bool force = false) override;

  /// Returns once the save in flight (if any) is durable or has failed, and throws its
  /// CheckpointError if `on_save_failure` stops training and that was not reported yet (each
  /// failure is thrown once); a failure that training rides out is in save_health() instead.
  /// Without `async`, nothing is ever in flight.
  void wait() override;

  /// Returns once the save in flight (if any) has copied the state (`stage_in_background`; without
  /// it a save returns staged) and throws the CheckpointError of an earlier background save that
  /// failed and was not reported yet, without waiting for the write.
  void wait_staged() override;

  /// Failed saves so far, the last durable checkpoint and the longest stretch without one. After
  /// wait(), it includes the save that was in flight.
  std::optional<SaveHealth> save_health() const override;

  /// The staging memory async saves copy into, in bytes: 0 before the first, then the size of
  /// the largest checkpoint saved (tensor bytes, each storage aligned to 64 bytes).
  uint64_t staging_bytes() const noexcept;

  /// Writes `{model_state_save_dir}/{file_prefix}_model_{index}.{file_ext}` (the raw module state
  /// dict; `.safetensors` in that format with `model_format` safetensors) when `checkpoint` is on
  /// and `model_state_save_dir` is not set empty (unset: into `save_dir`). No period rule. With `async`, waits for the save in
  /// flight first (as wait()) and then writes synchronously. The weights must land: a failed
  /// write is tried again until it does or `on_save_failure`'s limits throw.
  std::optional<std::filesystem::path> save_model(const StateDict& model_state,
                                                  int64_t index) override;

  /// Unset `load_dir`: empty Checkpoint. `load_dir` missing or without checkpoints: empty
  /// Checkpoint and a warning. `load_filename` set: exactly `{load_dir}/{load_filename}`, and a
  /// CheckpointError if that file does not exist or fails verification (no silent substitute).
  /// Otherwise the newest checkpoint (list_checkpoints) that verifies and loads: each newer file
  /// that does not is skipped with a warning saying why; if none loads, CheckpointError listing
  /// them. Every file is verified before use (see ckpt::verify_file). Tensors load onto the CPU.
  /// With `async`, waits for the save in flight first (as wait()).
  Checkpoint load() override;

  /// The file the latest load() restored (after it skipped any newer file that did not verify),
  /// or nothing when it started fresh, failed, or was never called:
  ///
  ///   ckpt::Checkpoint resumed = checkpointer.load();
  ///   if (auto from = checkpointer.loaded_path()) spdlog::info("resumed from {}", from->string());
  const std::optional<std::filesystem::path>& loaded_path() const noexcept { return loaded_path_; }

  /// load() without restoring: the same choice of file and the same verification (checksums,
  /// structure, format version), without unpickling. Returns the file load() would resume from,
  /// or an empty path where load() would start fresh. Throws where load() would. With `async`,
  /// waits for the save in flight first (as wait()).
  std::filesystem::path check();

  /// One checkpoint of the best pool.
  struct Best {
    std::filesystem::path path;
    int64_t index = 0;
    double score = 0;
  };
  /// The best pool, best first (ties: the earlier index first). Rebuilt at construction from the
  /// best files in `save_dir` whose recorded monitor and mode match the current ones.
  const std::vector<Best>& best_checkpoints() const noexcept;

  const DefaultCheckpointerArguments& args() const noexcept { return args_; }

 private:
  struct Policies;
  // The file to resume from (empty: start fresh), found by `accept`, which throws to reject.
  template <class Accept>
  std::filesystem::path choose(Accept&& accept);
  // Pre-flight, durable write, latest pointer, retention: every resumable save, in the
  // foreground or in the background thread, goes through it.
  std::filesystem::path write_resumable(const Checkpoint& checkpoint, const CheckpointName& name);
  // write_under_policy now, or (async) snapshot and queue it. Returns the final path, or nothing
  // when the save failed and training goes on.
  std::optional<std::filesystem::path> write_or_submit(const Checkpoint& checkpoint,
                                                       const CheckpointName& name,
                                                       bool must_land);
  // write_resumable under on_save_failure.
  std::optional<std::filesystem::path> write_under_policy(const Checkpoint& checkpoint,
                                                          const CheckpointName& name,
                                                          bool must_land);
  // Runs `write` under on_save_failure: its path, or nothing when it failed and training goes on.
  // One that `must_land` is tried again (after kMustLandPauseSeconds) until it lands or the
  // policy stops training.
  std::optional<std::filesystem::path> under_policy(
      const std::string& what, bool must_land, bool resumable,
      const std::function<std::filesystem::path()>& write);
  static constexpr int kMustLandPauseSeconds = 1;

  DefaultCheckpointerArguments args_;
  std::shared_ptr<Storage> storage_;
  double last_seen_seconds_ = 0;  // train_seconds of the latest step_due call
  double last_save_seconds_ = 0;  // train_seconds at the latest write
  bool trigger_due_ = false;      // the latest step_due said yes: its forced save need not land
  std::optional<std::filesystem::path> loaded_path_;  // what the latest load() restored
  c10::Device map_location_ = c10::Device(c10::kCPU);  // args_.map_location, parsed
  // Names, verification cache, retention, pre-flight, best pool, latest pointer (default/).
  std::unique_ptr<Policies> policies_;
  std::unique_ptr<detail::BackgroundWriter> background_;  // last: its thread uses the above
};

}  // namespace ckpt
