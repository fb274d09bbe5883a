#pragma once

#include <ckpt/state_dict.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace torch {
namespace optim {
class Optimizer;
}  // namespace optim
}  // namespace torch

namespace sample_trainer {

/// A learning-rate scheduler whose state can be checkpointed. LibTorch's schedulers have no
/// state_dict, so the sample brings its own. The backend calls step() after every optimizer step.
///
/// Thread safety: one thread at a time.
class LrScheduler {
 public:
  LrScheduler() = default;
  LrScheduler(const LrScheduler&) = delete;
  LrScheduler& operator=(const LrScheduler&) = delete;
  virtual ~LrScheduler() = default;

  /// Advances the schedule by one step and writes the new learning rates into the optimizer's
  /// param groups.
  virtual void step() = 0;

  /// The learning rate of every param group as last set by the scheduler (Python's
  /// `get_last_lr()`).
  virtual std::vector<double> get_last_lr() const = 0;

  /// The schedule's position and parameters under the keys of the matching Python scheduler's
  /// `state_dict()`. Const and side-effect free.
  virtual ckpt::StateDict get_state() const = 0;

  /// Restores a state produced by get_state. Like Python's `load_state_dict`, it does not touch the
  /// optimizer (whose own state carries the learning rates). Throws ckpt::CheckpointError naming
  /// the key and both values if a key is missing, has the wrong type or the number of param groups
  /// differs; the scheduler is then unchanged.
  virtual void update_state(const ckpt::StateDict& state) = 0;
};

/// Python's `torch.optim.lr_scheduler.StepLR`: every `step_size` steps, multiplies the learning
/// rate of each param group by `gamma`. Its state has Python's keys: `step_size`, `gamma`,
/// `base_lrs`, `last_epoch` (steps taken), `verbose`, `_step_count`,
/// `_get_lr_called_within_step`, `_last_lr`.
///
///   auto adam = std::make_shared<torch::optim::Adam>(model->parameters(), 1e-3);
///   auto scheduler = std::make_shared<StepLR>(adam, /*step_size=*/100, /*gamma=*/0.5);
///   ... adam->step(); scheduler->step(); ...
///   ckpt::StateDict saved = scheduler->get_state();
class StepLR final : public LrScheduler {
 public:
  /// Takes the optimizer's current learning rates as `base_lrs`. Throws std::invalid_argument if
  /// `step_size < 1` or `gamma <= 0`.
  StepLR(std::shared_ptr<torch::optim::Optimizer> optimizer, int64_t step_size, double gamma = 0.1);

  void step() override;
  std::vector<double> get_last_lr() const override { return last_lr_; }
  ckpt::StateDict get_state() const override;
  void update_state(const ckpt::StateDict& state) override;

  /// Steps taken so far (Python's `last_epoch`, which counts `step()` calls).
  int64_t last_epoch() const noexcept { return last_epoch_; }

 private:
  std::shared_ptr<torch::optim::Optimizer> optimizer_;
  int64_t step_size_;
  double gamma_;
  std::vector<double> base_lrs_;
  int64_t last_epoch_ = 0;
  int64_t step_count_ = 1;
  std::vector<double> last_lr_;
};

}  // namespace sample_trainer
