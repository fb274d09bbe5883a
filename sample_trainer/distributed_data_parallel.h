#pragma once

#include <sample_trainer/trainer_backend.h>

#include <c10/util/intrusive_ptr.h>

#include <cstdint>

namespace c10d {
class ProcessGroup;
}  // namespace c10d

namespace sample_trainer {

/// Data-parallel training over a c10d process group (Gloo on the CPU), as PyTorch's
/// DistributedDataParallel: every rank holds a replica of the module, trains on its own share of
/// each step's examples, and the gradients are averaged with one allreduce per step, so all ranks
/// take the same optimizer step and hold identical parameters.
///
/// - Data: epoch `e` visits the training set in SingleProcess::epoch_order (the same on every
///   rank). Each step consumes the next `batch_size * world_size` examples of that order; rank r
///   trains on the r-th `batch_size` of them (the last, short step splits what is left as evenly
///   as it can). The position in an epoch is counted in examples, so it means the same for any
///   world size.
/// - Gradients are weighted by each rank's examples, so a step's gradient is the mean over all of
///   its examples, whatever the split.
/// - init() broadcasts rank 0's parameters and buffers. Rank 0's random generator is left as the
///   program seeded it; rank r > 0 reseeds it with mix_seed(seed, r), so dropout differs per rank.
/// - After every epoch the ranks compare a digest of their parameters (state_digest) and throw if
///   any differ.
/// - State: SingleProcess's keys (the counters, this rank's `rng_state`, `shuffle_seed`,
///   `epoch_in_progress`, `batch_in_epoch` (steps), `epoch_loss_sum` (over all ranks)), plus
///   `examples_in_epoch`, `rank` and `world_size`. Each rank's state differs only in `rng_state`
///   and `rank`. With ckpt::DistributedCheckpointer each rank gets back its own; a state carrying
///   `ckpt_saved_world_size` (resumed with a different world size) is rank 0's: the data position
///   is re-derived from `examples_in_epoch`, rank 0 keeps its generator and the others reseed with
///   mix_seed(mix_seed(seed, rank), global step), with a warning.
///
/// Every member that trains, validates or communicates is a collective: all ranks call it in the
/// same order. Collectives fail after the process group's timeout instead of hanging.
///
/// Thread safety: one thread at a time.
class DistributedDataParallel final : public TrainerBackend {
 public:
  /// Throws std::invalid_argument for a null group.
  explicit DistributedDataParallel(c10::intrusive_ptr<c10d::ProcessGroup> group);
  ~DistributedDataParallel() override;

  void init(TrainerBackendArguments args) override;
  std::optional<double> train_epoch(int64_t epoch, const StepCallback& after_step) override;
  int64_t batches_per_epoch() const override;
  int64_t global_step() const override { return global_step_completed_; }
  /// Every rank validates on the whole validation set (the replicas are identical, so are the
  /// results).
  ValResult validate() override;
  ckpt::StateDict get_state() const override;
  void update_state(const ckpt::StateDict& state) override;

  /// Collective: true on every rank if `local` is true on any (e.g. a stop signal that reached
  /// only some ranks).
  bool any_rank(bool local);

  int rank() const noexcept { return rank_; }
  int world_size() const noexcept { return world_size_; }

 private:
  void average_gradients(int64_t examples_here, int64_t examples_in_step);
  double sum_over_ranks(double value);
  void check_parameters_agree(int64_t epoch);

  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  int rank_ = 0;
  int world_size_ = 1;
  TrainerBackendArguments args_;
  int64_t global_step_completed_ = 0;
  int64_t batches_completed_ = 0;
  int64_t epoch_in_progress_ = -1;
  int64_t batch_in_epoch_ = 0;
  int64_t examples_in_epoch_ = 0;
  double epoch_loss_sum_ = 0;
};

/// FNV-1a over every tensor's name, shape, dtype and bytes, in order: equal digests mean
/// (barring a collision) bitwise-equal states. Used to check that the replicas agree.
uint64_t state_digest(const ckpt::StateDict& state);

}  // namespace sample_trainer
