#pragma once

#include <sample_trainer/lr_scheduler.h>
#include <sample_trainer/module_interface.h>
#include <sample_trainer/trainer_backend.h>

#include <ckpt/abstract_checkpointer.h>
#include <ckpt/checkpoint.h>
#include <ckpt/default_checkpointer.h>
#include <ckpt/state_dict.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace boost {
namespace program_options {
class options_description;
}  // namespace program_options
}  // namespace boost

namespace sample_trainer {

/// Options of Trainer: PyMarlin's `TrainerArguments`, reduced to what the sample uses.
struct TrainerArguments {
  /// Epochs to train in total, counted from the first run: a resumed run trains epochs
  /// `last_epoch + 1 .. epochs - 1`. Must be >= 1. Default: 10.
  int64_t epochs = 10;
  /// Seed of the data order (and, in the sample program, of the weights and dropout through
  /// `at::manual_seed`). Must be >= 0. Default: 42.
  int64_t seed = 42;
  /// Examples per batch. Must be >= 1. Default: 32.
  int64_t batch_size = 32;
  /// Initial learning rate of the module's optimizers. Must be > 0. Default: 0.003.
  double lr = 0.003;
  /// On resume, build fresh optimizers and schedulers for the remaining epochs instead of loading
  /// their checkpointed state. Default: false.
  bool reset_optimizers_schedulers = false;
  /// Where the model, its optimizer state and the batches live: "cpu", "cuda", "cuda:1", or any
  /// device LibTorch has registered. It must exist. A checkpoint written on one device resumes on
  /// another. Default: "cpu".
  std::string device = "cpu";
  /// The DefaultCheckpointer's options, used when the trainer is given no checkpointer.
  ckpt::DefaultCheckpointerArguments checkpointer_args;

  /// Throws std::invalid_argument naming the field and the value if a trainer field is out of
  /// range, e.g. "invalid epochs 0: must be >= 1". Does not check `checkpointer_args`.
  void validate() const;
};

/// The resolved trainer options as a flat dict keyed by flag name (`<prefix>.epochs`, ...), as
/// stored in a checkpoint's hyperparameters.
ckpt::StateDict trainer_options_state(const TrainerArguments& args,
                                      const std::string& prefix = "trainer");

/// Binds every TrainerArguments field but `checkpointer_args` to `--<prefix>.<field>`, writing
/// parsed values into `args` on `boost::program_options::notify`. In a config file the same names
/// come from a `[<prefix>]` section. `args` must outlive the parse.
boost::program_options::options_description trainer_options(TrainerArguments& args,
                                                            const std::string& prefix = "trainer");

/// The metrics of one epoch.
struct EpochMetrics {
  int64_t epoch = 0;
  double train_loss = 0;
  ValResult val;
  double seconds = 0;
};

/// What Trainer::train did.
struct TrainResult {
  /// The epochs trained by this call, in order (empty if the checkpoint was already complete).
  std::vector<EpochMetrics> epochs;
  /// The last completed epoch, i.e. the index of the final checkpoint and weights.
  int64_t last_epoch = -1;
  /// Validation metrics of the final weights.
  ValResult final_val;
  /// The newest checkpoint the checkpointer wrote (or, if the final forced save was skipped as a
  /// duplicate, the one it already was), and where the weights went, if it saved them.
  std::optional<std::filesystem::path> checkpoint_path;
  std::optional<std::filesystem::path> model_path;
  /// True when train() returned early because `stop_requested` said so: the position is in the
  /// last checkpoint, and no final weights were exported.
  bool stopped = false;
  /// Optimizer steps completed since the first run began.
  int64_t global_step = 0;
  /// Wall-clock seconds of this train() call, and those of them training waited for the
  /// checkpointer: in save(), save_step(), save_model(), wait() and wait_staged() (CheckFreq's
  /// checkpoint stall).
  double seconds = 0;
  double checkpoint_blocked_seconds = 0;
  /// Of checkpoint_blocked_seconds, the final wait() for the last save to be durable.
  double checkpoint_final_wait_seconds = 0;
  /// What the checkpointer reports of its saves (AbstractCheckpointer::save_health): failed saves
  /// that training rode out, the longest stretch without a durable checkpoint, the newest durable
  /// one. Nothing when the checkpointer does not track them.
  std::optional<ckpt::SaveHealth> save_health;
};

/// An object whose state travels with the checkpoint: Trainer::register_for_checkpointing wraps
/// anything with `ckpt::StateDict get_state() const` and `void update_state(const StateDict&)`.
class Stateful {
 public:
  virtual ~Stateful() = default;
  virtual ckpt::StateDict get_state() const = 0;
  virtual void update_state(const ckpt::StateDict& state) = 0;
};

/// Installs SIGTERM and SIGINT handlers that ask a running Trainer::train to stop after the
/// current step: it saves the position (AbstractCheckpointer::save_step with force) and returns
/// with `stopped`. A second signal restores the default action and re-raises it. Returns what to
/// pass to train() as `stop_requested`. stop_signal() says which signal arrived (0: none).
std::function<bool()> install_stop_signal_handlers();
int stop_signal() noexcept;

/// Drives training with PyMarlin's lifecycle and checkpoints every epoch (and wherever the
/// checkpointer's step_due asks, and when asked to stop).
///
/// The constructor, in this order: takes `checkpointer` or constructs a DefaultCheckpointer from
/// `args.checkpointer_args` (which deletes old checkpoints if asked) -> `load()` -> module
/// `update_state` -> module `get_optimizers_schedulers` -> trainer `update_state` -> backend
/// `init` -> backend `update_state`. train() runs epochs `last_epoch + 1 .. epochs - 1`; after each
/// it sets `last_epoch` and calls `save(checkpoint, last_epoch)`; at the end it calls
/// `save(checkpoint, last_epoch, /*force=*/true)`, `wait()` (a background save, `--chkp.async`, is
/// durable, or has thrown, before the weights are exported), `save_model(module state,
/// last_epoch)` and `wait()` again. Before every optimizer step the backend calls the checkpointer's `wait_staged()`, so a
/// save that copies the state in the background (`--chkp.stage_in_background`) overlaps the next
/// forward and backward passes but never the step that changes the parameters. At the end it logs
/// the share of training time spent waiting for the checkpointer.
///
///   auto module = std::make_shared<DigitsModule>(load_digits(path));
///   Trainer trainer(std::make_shared<SingleProcess>(), module, args);
///   TrainResult result = trainer.train();
///
/// The checkpoint's states share memory with the live model and optimizers (ckpt::module_state,
/// ckpt::optimizer_state with StateTensors::shared): a checkpointer that keeps them in memory must
/// copy the tensors, and one that reads them after save() returns must do so before the next
/// optimizer step (wait_staged()).
///
/// Thread safety: one thread at a time.
class Trainer {
 public:
  /// Runs the lifecycle above. Throws std::invalid_argument for bad `args` (before constructing
  /// anything), and whatever the checkpointer, the module or the backend throw, e.g.
  /// ckpt::CheckpointError for an unreadable or mismatched checkpoint.
  Trainer(std::shared_ptr<TrainerBackend> backend, std::shared_ptr<ModuleInterface> module,
          TrainerArguments args,
          std::shared_ptr<ckpt::AbstractCheckpointer> checkpointer = nullptr);
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  /// Trains the remaining epochs, logging each one's metrics, and checkpoints as described above.
  /// `progress`, if set, is called after every batch. After every step the checkpointer's
  /// step_due decides whether to save mid-epoch (save_step); at an epoch's end a due step makes
  /// the epoch's save() forced. Each epoch's checkpoint carries `metadata.metrics`
  /// (train_loss, val_loss, val_acc: see metric_names). If `stop_requested` returns true, training
  /// stops after the current step with a forced save of the position, and train() returns with
  /// `stopped`. The final forced save is skipped when the last save (or the resumed checkpoint) is
  /// already at the final step: it would be a duplicate.
  TrainResult train(const ProgressCallback& progress = {},
                    const std::function<bool()>& stop_requested = {});

  /// Saves `object`'s state (get_state) in every checkpoint under `name`, and restores it now
  /// from the resumed checkpoint, if any (Accelerate's `register_for_checkpointing`). A resumed
  /// checkpoint without `name` is a ckpt::CheckpointError with `strict_registered_state`, else a
  /// warning (the object keeps its state); names in the checkpoint that are still unregistered
  /// when train() starts are reported the same way. Throws std::invalid_argument for an empty or
  /// duplicate name.
  template <class T>
  void register_for_checkpointing(const std::string& name, std::shared_ptr<T> object) {
    struct Adapter final : Stateful {
      explicit Adapter(std::shared_ptr<T> o) : object(std::move(o)) {}
      ckpt::StateDict get_state() const override { return object->get_state(); }
      void update_state(const ckpt::StateDict& state) override { object->update_state(state); }
      std::shared_ptr<T> object;
    };
    if (!object) throw std::invalid_argument("register_for_checkpointing: '" + name + "' is null");
    register_stateful(name, std::make_shared<Adapter>(std::move(object)));
  }

  /// The metrics the trainer reports with each epoch's checkpoint, for `--chkp.monitor`.
  static const std::vector<std::string>& metric_names();

  /// The resolved options (trainer and checkpointer) stored in every checkpoint.
  ckpt::StateDict hyperparameters() const;

  /// `{last_epoch, optimizers: [...], schedulers: [...]}`, the optimizers' states in Python's
  /// layout (ckpt::optimizer_state, sharing the optimizers' buffers) and the schedulers'
  /// get_state, each a nested dict. Side-effect free.
  ckpt::StateDict get_state() const;

  /// Restores get_state's output; empty is a no-op. With `reset_optimizers_schedulers`, only
  /// `last_epoch` is taken and fresh optimizers and schedulers are built for the remaining epochs.
  /// Otherwise optimizers and schedulers are restored by position; a different count throws
  /// ckpt::CheckpointError naming both counts.
  void update_state(const ckpt::StateDict& state);

  /// The full checkpoint: module, trainer and backend states, registered states and
  /// hyperparameters.
  ckpt::Checkpoint checkpoint() const;

  int64_t last_epoch() const noexcept { return last_epoch_; }
  const TrainerArguments& args() const noexcept { return args_; }
  const OptimizersSchedulers& optimizers_schedulers() const noexcept { return opt_; }

 private:
  void build_optimizers_schedulers(int64_t epochs);
  ckpt::Checkpoint checkpoint_with_metrics(const EpochMetrics& metrics) const;
  void register_stateful(const std::string& name, std::shared_ptr<Stateful> object);
  void check_unclaimed_registered_state();
  void report_hyperparameter_drift(const ckpt::StateDict& saved) const;
  void registered_mismatch(const std::string& message) const;

  TrainerArguments args_;
  std::shared_ptr<TrainerBackend> backend_;
  std::shared_ptr<ModuleInterface> module_;
  std::shared_ptr<ckpt::AbstractCheckpointer> checkpointer_;
  OptimizersSchedulers opt_;
  int64_t last_epoch_ = -1;
  // Registered objects in registration order, and what the resumed checkpoint holds for them.
  std::vector<std::pair<std::string, std::shared_ptr<Stateful>>> registered_;
  ckpt::StateDict loaded_registered_;
  bool resumed_ = false;  // the loaded checkpoint holds a training position
  // The global step of the newest checkpoint saved or resumed from (-1: none).
  int64_t last_saved_step_ = -1;
  std::optional<std::filesystem::path> last_saved_path_;
  // Seconds the current train() call has spent waiting for the checkpointer.
  double checkpoint_blocked_seconds_ = 0;
};

}  // namespace sample_trainer
