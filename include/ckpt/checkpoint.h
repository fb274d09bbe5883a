#pragma once

#include <ckpt/state_dict.h>

#include <string>
#include <utility>
#include <vector>

namespace ckpt {

/// What one checkpoint holds: the three states PyMarlin's trainer collects, plus three optional
/// parts of ckpt's own. Each may be empty (PyMarlin's None). `load()` returns an all-empty
/// Checkpoint when there is nothing to resume. The optional parts are written to the file only when
/// not empty, so a checkpoint without them has exactly PyMarlin's three keys.
///
/// The six fields, with their key in the file (a dict; Python's `torch.load` returns it):
///
/// | field                  | file key               | what goes in it                            |
/// |------------------------|------------------------|--------------------------------------------|
/// | module_interface_state | module_interface_state | the model's state dict (`fc1.weight`)      |
/// | trainer_state          | trainer_state          | `{last_epoch, optimizers: [...],           |
/// |                        |                        |   schedulers: [...]}` (trainer_state())    |
/// | trainer_backend_state  | trainer_backend_state  | `{global_step_completed, batches_completed,|
/// |                        |                        |   rng_state, ...}`                         |
/// | registered_state       | registered_state       | objects registered with the trainer, by    |
/// |                        |                        |   name (optional)                          |
/// | hyperparameters        | hyperparameters        | the run's resolved options by flag name    |
/// |                        |                        |   (`chkp.period`; optional)                |
/// | metadata               | ckpt_metadata          | `metrics` (set_metrics(), read by the best |
/// |                        |                        |   pool) and `best` (optional)              |
///
///   ckpt::Checkpoint checkpoint{ckpt::module_state(model),
///                               ckpt::trainer_state(epoch, {optimizer}, {scheduler})};
///   ckpt::set_metrics(checkpoint, {{"val_loss", 0.31}, {"val_acc", 0.93}});
///   checkpointer.save(checkpoint, epoch);
///
/// The states of a Checkpoint built this way share tensors with the live model and optimizer (no
/// copy is made); deep_copy() makes a Checkpoint that does not.
struct Checkpoint {
  StateDict module_interface_state;  ///< The model's state dict (dotted parameter names).
  StateDict trainer_state;           ///< e.g. {last_epoch, optimizers: [...], schedulers: [...]}.
  StateDict trainer_backend_state;   ///< e.g. {global_step_completed, batches_completed, rng}.
  /// States of objects registered with the trainer, by the name they were registered under.
  StateDict registered_state;
  /// The resolved options of the run that wrote it, by flag name (`trainer.epochs`, `chkp.period`).
  StateDict hyperparameters;
  /// What the checkpointer records about the file itself, e.g. the monitored score of a best
  /// checkpoint (`{monitor, mode, score, index}`).
  StateDict metadata;

  /// True when all parts are empty.
  bool empty() const noexcept {
    return module_interface_state.empty() && trainer_state.empty() &&
           trainer_backend_state.empty() && registered_state.empty() && hyperparameters.empty() &&
           metadata.empty();
  }
};

/// A copy of all six fields that shares no tensor with `checkpoint` (every tensor cloned, every
/// list and dict new), e.g. to keep a checkpoint in memory while training goes on.
Checkpoint deep_copy(const Checkpoint& checkpoint);

/// Sets `checkpoint.metadata["metrics"]` (the file's `ckpt_metadata.metrics`) to the given
/// name -> value pairs, replacing any earlier ones. DefaultCheckpointer's best pool reads its
/// `monitor` there; `ckpt list` shows them.
void set_metrics(Checkpoint& checkpoint,
                 const std::vector<std::pair<std::string, double>>& metrics);
/// The metrics set_metrics() stored (ints read as doubles), in their order; empty if there are
/// none. Throws CheckpointError naming the metric if one is not a number.
std::vector<std::pair<std::string, double>> metrics(const Checkpoint& checkpoint);

bool operator==(const Checkpoint& a, const Checkpoint& b);
inline bool operator!=(const Checkpoint& a, const Checkpoint& b) { return !(a == b); }

}  // namespace ckpt
