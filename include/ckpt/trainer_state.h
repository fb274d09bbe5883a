#pragma once

#include <ckpt/live_state.h>
#include <ckpt/state_dict.h>

#include <cstdint>
#include <vector>

namespace ckpt {

/// A Checkpoint's `trainer_state` in the layout PyMarlin's trainer (and the sample trainer)
/// writes, from live optimizers and schedulers in one call:
///
///   {"last_epoch": 4,
///    "optimizers": [optimizer_state(opt0), ...],     // Python's Optimizer.state_dict() each
///    "schedulers": [scheduler0.get_state(), ...]}
///
///   checkpoint.trainer_state = ckpt::trainer_state(epoch, {adam}, {scheduler});
///   ...
///   int64_t last_epoch = ckpt::load_trainer_state(resumed.trainer_state, {adam}, {scheduler});
///
/// Optimizers and schedulers are LiveObjects: a `torch::optim::Optimizer` (its buffers shared, not
/// copied, as Python's `state_dict()`), or any object with `StateDict get_state() const` and
/// `void update_state(const StateDict&)` (an LR scheduler). live_objects() turns a container of
/// pointers (`std::vector<std::shared_ptr<torch::optim::Optimizer>>`) into them.
StateDict trainer_state(int64_t last_epoch, const std::vector<LiveObject>& optimizers,
                        const std::vector<LiveObject>& schedulers = {});

/// Restores what trainer_state() wrote into `optimizers` and `schedulers`, by position, and
/// returns `last_epoch`. Throws CheckpointError naming the key (`trainer_state.optimizers`) when
/// `last_epoch` is missing or not an int, or the counts differ, before anything is restored; an
/// optimizer or scheduler that refuses its state throws naming it
/// (`trainer_state.optimizers[1]`), the ones before it restored by then.
int64_t load_trainer_state(const StateDict& trainer_state,
                           const std::vector<LiveObject>& optimizers,
                           const std::vector<LiveObject>& schedulers = {});

/// One LiveObject per element of `pointers` (each `*pointer` an optimizer or a get_state /
/// update_state object), for trainer_state() and load_trainer_state().
template <class Range>
std::vector<LiveObject> live_objects(const Range& pointers) {
  std::vector<LiveObject> objects;
  for (const auto& pointer : pointers) objects.emplace_back(*pointer);
  return objects;
}

}  // namespace ckpt
