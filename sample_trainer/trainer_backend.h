#pragma once

#include <sample_trainer/lr_scheduler.h>
#include <sample_trainer/module_interface.h>

#include <ckpt/state_dict.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

namespace torch {
namespace optim {
class Optimizer;
}  // namespace optim
}  // namespace torch

namespace sample_trainer {

/// What the trainer hands its backend in init(), as PyMarlin's `TrainerBackendArguments`.
struct TrainerBackendArguments {
  std::shared_ptr<ModuleInterface> module;
  std::vector<std::shared_ptr<torch::optim::Optimizer>> optimizers;
  std::vector<std::shared_ptr<LrScheduler>> schedulers;
  /// Examples per training and validation batch; >= 1.
  int64_t batch_size = 32;
  /// Seed of the per-epoch data order.
  uint64_t seed = 0;
  /// If set, called before every optimizer step, after the forward and backward passes: the
  /// trainer waits there for a background checkpoint copy (AbstractCheckpointer::wait_staged),
  /// which may overlap the passes but not the step that changes the parameters.
  std::function<void()> before_optimizer_step;
};

/// Validation metrics over the whole validation set.
struct ValResult {
  double loss = 0;      ///< Mean loss per example.
  double accuracy = 0;  ///< correct / examples.
  int64_t correct = 0;
  int64_t examples = 0;
};

/// Called after every training batch with the batches done so far in this epoch, the epoch's batch
/// count and the batch's loss (e.g. to draw a progress bar).
using ProgressCallback = std::function<void(int64_t batch, int64_t batches, double loss)>;

/// Called by the backend after every optimizer step, like ProgressCallback; returning true stops
/// the epoch after this step (its position is in get_state, so training can continue from it).
using StepCallback = std::function<bool(int64_t batch, int64_t batches, double loss)>;

/// Runs the steps: how batches are drawn, where the forward and backward passes run and when the
/// optimizers step. Owns the counters and the randomness a resumed run needs to continue exactly,
/// and checkpoints them through get_state/update_state (PyMarlin's `TrainerBackend`).
///
///   auto backend = std::make_shared<SingleProcess>();
///   backend->init({module, optimizers, schedulers, /*batch_size=*/32, /*seed=*/42});
///   backend->update_state(checkpoint.trainer_backend_state);
///   double loss = backend->train_epoch(epoch, {});
///
/// Thread safety: one thread at a time.
class TrainerBackend {
 public:
  TrainerBackend() = default;
  TrainerBackend(const TrainerBackend&) = delete;
  TrainerBackend& operator=(const TrainerBackend&) = delete;
  virtual ~TrainerBackend() = default;

  /// Takes the module, optimizers and schedulers to drive. Called once, before update_state and any
  /// training. Throws std::invalid_argument if an argument is unusable (no module, batch_size < 1).
  virtual void init(TrainerBackendArguments args) = 0;

  /// Trains epoch `epoch` (0-based; it selects the data order) and returns the mean training loss
  /// per example. If a restored state stopped in the middle of this epoch, continues with its next
  /// batch. Calls `after_step`, if set, after every step; if that returns true before the epoch's
  /// last batch, returns nothing, leaving the position within the epoch in get_state.
  virtual std::optional<double> train_epoch(int64_t epoch, const StepCallback& after_step) = 0;

  /// Batches in one training epoch.
  virtual int64_t batches_per_epoch() const = 0;

  /// Optimizer steps completed since the first run began (restored by update_state).
  virtual int64_t global_step() const = 0;

  /// Evaluates the module on its validation set. Consumes no randomness.
  virtual ValResult validate() = 0;

  /// The backend's counters and whatever else an exact resume needs. Const and side-effect free.
  virtual ckpt::StateDict get_state() const = 0;

  /// Restores a state produced by get_state; an empty state is a no-op (a fresh start). Throws
  /// ckpt::CheckpointError naming the key and the value on a malformed state, before changing
  /// anything.
  virtual void update_state(const ckpt::StateDict& state) = 0;
};

}  // namespace sample_trainer
