#pragma once

#include <ckpt/checkpoint.h>
#include <ckpt/save_health.h>
#include <ckpt/state_dict.h>

#include <cstdint>
#include <filesystem>
#include <optional>

namespace ckpt {

/// Where training stands when the trainer asks whether to checkpoint (see
/// AbstractCheckpointer::step_due and save_step).
struct TrainingProgress {
  int64_t epoch = 0;              ///< The epoch in progress, 0-based.
  int64_t batch = 0;              ///< Batches of `epoch` completed so far.
  int64_t batches_per_epoch = 0;  ///< Batches in one epoch.
  int64_t global_step = 0;        ///< Optimizer steps completed since the first run began.
  double train_seconds = 0;       ///< Seconds spent training in this process (saves excluded).
};

/// The interface a trainer checkpoints through, as PyMarlin's `AbstractCheckpointer`. Implement it
/// for your own storage or policy; `DefaultCheckpointer` is the file-based implementation.
///
///   class EveryFifth final : public ckpt::AbstractCheckpointer {
///    public:
///     std::optional<std::filesystem::path> save(const ckpt::Checkpoint& c, int64_t index,
///                                               bool force) override {
///       if (index % 5 != 0 && !force) return std::nullopt;
///       auto path = dir_ / ("ckpt_" + std::to_string(index) + ".pt");
///       ckpt::save_checkpoint_file(c, path);
///       return path;
///     }
///     ckpt::Checkpoint load() override { ... }
///   };
///
/// Thread safety: implementations need not be safe to call from several threads at once; the
/// trainer calls them from one thread.
class AbstractCheckpointer {
 public:
  AbstractCheckpointer() = default;
  AbstractCheckpointer(const AbstractCheckpointer&) = delete;
  AbstractCheckpointer& operator=(const AbstractCheckpointer&) = delete;
  virtual ~AbstractCheckpointer() = default;

  /// Called by the trainer after every epoch with the epoch as `index`, and once more after
  /// training with `force = true`. Decides whether, where and how to persist `checkpoint`. `force`
  /// asks to save regardless of the implementation's own schedule (but an implementation may still
  /// be switched off entirely). Returns the path written, or nothing if it chose not to save. On
  /// failure throws CheckpointError and leaves any earlier checkpoint intact.
  virtual std::optional<std::filesystem::path> save(const Checkpoint& checkpoint, int64_t index,
                                                    bool force = false) = 0;

  /// Called by the trainer at the end of training with the module's state dict, to persist the
  /// weights alone. The default does nothing and returns nothing.
  virtual std::optional<std::filesystem::path> save_model(const StateDict& model_state,
                                                          int64_t index);

  /// Asked by the trainer after every optimizer step (including the last one of an epoch, just
  /// before that epoch's save()): should a checkpoint be taken now, e.g. every N steps or every T
  /// seconds? Mid-epoch, true makes the trainer call save_step; at an epoch's end it makes the
  /// trainer pass `force = true` to save(). Cheap: no checkpoint is built unless it returns true.
  /// The default never asks for one.
  virtual bool step_due(const TrainingProgress& progress);

  /// Called in the middle of an epoch when step_due returned true, or with `force = true` when
  /// training is being stopped (SIGTERM/SIGINT) and its position must not be lost. `checkpoint`
  /// holds the position within the epoch, so a resume continues with the next batch. Returns the
  /// path written, or nothing. The default writes nothing and returns nothing (with `force`, it
  /// logs a warning: a mid-epoch stop then resumes from the last epoch's checkpoint).
  virtual std::optional<std::filesystem::path> save_step(const Checkpoint& checkpoint,
                                                         const TrainingProgress& progress,
                                                         bool force = false);

  /// Called once when the trainer is constructed, before any training. Returns the checkpoint to
  /// resume from, or an empty Checkpoint when there is nothing to resume (a fresh start is normal,
  /// not an error). Throws CheckpointError when a checkpoint exists but cannot be read.
  virtual Checkpoint load() = 0;

  /// Called by the trainer after its last save, before it exports or exits: returns once every
  /// save this checkpointer accepted is durable. An implementation that saves in the background
  /// (DefaultCheckpointer with `async`) throws here the CheckpointError of a background save that
  /// failed and was not reported yet. The default does nothing: its saves are durable on return.
  virtual void wait();

  /// Called by the trainer before it next changes a tensor it passed to save() or save_step() (the
  /// sample trainer: before every optimizer step): returns once the last save no longer reads
  /// those tensors. A save that copies ("stages") the state in the background returns before the
  /// copy is done, so the copy overlaps the next forward and backward passes; this is where the
  /// trainer waits for it. Modules whose forward pass changes saved buffers (BatchNorm's running
  /// statistics) must have it called before the forward pass instead. It may throw the
  /// CheckpointError of a background save that already failed. The default does nothing: its
  /// saves hold no reference to the tensors once they return.
  virtual void wait_staged();

  /// What became of the saves so far, for the trainer's end-of-run report and to tell whether
  /// the last save landed: a checkpointer that rides out storage failures (DefaultCheckpointer
  /// with `on_save_failure` continue) returns nothing from a save() that failed, and counts it
  /// here. Accurate after wait(). The default returns nothing: this checkpointer does not track
  /// its saves (each failure is thrown).
  virtual std::optional<SaveHealth> save_health() const;
};

}  // namespace ckpt
