#pragma once

#include <ckpt/state_dict.h>

namespace ckpt {

/// What one checkpoint holds: the three states PyMarlin's trainer collects, plus three optional
/// parts of ckpt's own. Each may be empty (PyMarlin's None). `load()` returns an all-empty
/// Checkpoint when there is nothing to resume. The optional parts are written to the file only when
/// not empty, so a checkpoint without them has exactly PyMarlin's three keys.
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

bool operator==(const Checkpoint& a, const Checkpoint& b);
inline bool operator!=(const Checkpoint& a, const Checkpoint& b) { return !(a == b); }

}  // namespace ckpt
