#pragma once

#include <sample_trainer/trainer_backend.h>

#include <cstdint>
#include <string>

namespace sample_trainer {

/// Evaluates `module` on its whole validation set in batches of `batch_size`, in eval mode and
/// without gradients, and leaves it in training mode. Consumes no randomness.
ValResult validate_module(ModuleInterface& module, int64_t batch_size);

/// splitmix64's finaliser of (seed, n): nearby pairs give unrelated generator seeds.
uint64_t mix_seed(uint64_t seed, int64_t n);

/// The global CPU generator's state (a uint8 tensor), and its inverse, which first checks that
/// `state` (from checkpoint key `key`) is a CPU generator state and throws ckpt::CheckpointError
/// naming the key otherwise, leaving the generator unchanged.
at::Tensor cpu_rng_state();
void set_cpu_rng_state(const c10::IValue& state, const std::string& key);

/// The backend for one process on the CPU, as PyMarlin's `SingleProcess`: one optimizer step per
/// batch, the schedulers stepped after every optimizer step.
///
/// Its state, beyond PyMarlin's two counters, holds what PyMarlin forgot and an exact resume needs:
///   - `global_step_completed`: optimizer steps taken;
///   - `batches_completed`: training batches run (equal to the steps: no gradient accumulation);
///   - `rng_state`: the global CPU generator's state (uint8 tensor of
///     `at::detail::getDefaultCPUGenerator().get_state()`), which drives e.g. dropout;
///   - `shuffle_seed`: the seed of the data order. Epoch `e` visits the training set in the order
///     `randperm(train_size, generator seeded with mix(shuffle_seed, e))`, so the order of any
///     epoch is known without replaying the ones before it;
///   - `epoch_in_progress`, `batch_in_epoch`, `epoch_loss_sum`: where a stopped epoch stands
///     (-1, 0, 0.0 between epochs). A resumed epoch skips the batches already run by slicing the
///     epoch's order, so it repeats or skips no data and draws no extra random numbers.
///
/// Thread safety: one thread at a time.
class SingleProcess final : public TrainerBackend {
 public:
  void init(TrainerBackendArguments args) override;
  std::optional<double> train_epoch(int64_t epoch, const StepCallback& after_step) override;
  int64_t batches_per_epoch() const override;
  int64_t global_step() const override { return global_step_completed_; }
  ValResult validate() override;
  ckpt::StateDict get_state() const override;
  void update_state(const ckpt::StateDict& state) override;

  int64_t global_step_completed() const noexcept { return global_step_completed_; }
  int64_t batches_completed() const noexcept { return batches_completed_; }

  /// The order in which epoch `epoch` visits training examples 0 .. `size - 1`.
  static at::Tensor epoch_order(int64_t size, uint64_t shuffle_seed, int64_t epoch);

 private:
  TrainerBackendArguments args_;
  int64_t global_step_completed_ = 0;
  int64_t batches_completed_ = 0;
  int64_t epoch_in_progress_ = -1;
  int64_t batch_in_epoch_ = 0;
  double epoch_loss_sum_ = 0;
};

}  // namespace sample_trainer
