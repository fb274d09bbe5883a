#pragma once

#include <ckpt/state_dict.h>

namespace ckpt {

/// What one checkpoint holds: the three states PyMarlin's trainer collects. Each may be empty
/// (PyMarlin's None). `load()` returns an all-empty Checkpoint when there is nothing to resume.
struct Checkpoint {
  StateDict module_interface_state;  ///< The model's state dict (dotted parameter names).
  StateDict trainer_state;           ///< e.g. {last_epoch, optimizers: [...], schedulers: [...]}.
  StateDict trainer_backend_state;   ///< e.g. {global_step_completed, batches_completed, rng}.

  /// True when all three states are empty.
  bool empty() const noexcept {
    return module_interface_state.empty() && trainer_state.empty() &&
           trainer_backend_state.empty();
  }
};

bool operator==(const Checkpoint& a, const Checkpoint& b);
inline bool operator!=(const Checkpoint& a, const Checkpoint& b) { return !(a == b); }

}  // namespace ckpt
