#pragma once

#include <sample_trainer/lr_scheduler.h>

#include <ckpt/state_dict.h>

#include <ATen/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace torch {
namespace nn {
class Module;
}  // namespace nn
namespace optim {
class Optimizer;
}  // namespace optim
}  // namespace torch

namespace sample_trainer {

/// One mini-batch, as the module's steps take it.
struct Batch {
  at::Tensor inputs;
  at::Tensor targets;
};

/// What val_step returns for one batch. Sums, so the backend can total them over batches.
struct ValOutput {
  double loss_sum = 0;   ///< Sum of the per-example losses.
  int64_t correct = 0;   ///< Examples predicted right.
  int64_t examples = 0;  ///< Examples in the batch.
};

/// What the trainer tells the module when asking for optimizers and schedulers.
struct OptimizerPlan {
  double lr = 0;                ///< Learning rate (`--trainer.lr`).
  int64_t epochs = 0;           ///< Epochs they will serve: all, or the rest after a reset.
  int64_t steps_per_epoch = 0;  ///< Optimizer steps per epoch.
};

/// The optimizers and schedulers a module trains with. The trainer checkpoints them by position.
struct OptimizersSchedulers {
  std::vector<std::shared_ptr<torch::optim::Optimizer>> optimizers;
  std::vector<std::shared_ptr<LrScheduler>> schedulers;
};

/// The model side of training, as PyMarlin's `ModuleInterface`: the network, its data, one training
/// and one validation step, the optimizers it wants, and its checkpointable state.
///
///   class MyModule final : public ModuleInterface {
///    public:
///     torch::nn::Module& model() override { return *net_; }
///     const torch::nn::Module& model() const override { return *net_; }
///     at::Tensor train_step(const Batch& b) override {
///       return torch::nn::functional::cross_entropy(net_->forward(b.inputs), b.targets);
///     }
///     ...
///   };
///
/// Thread safety: one thread at a time; the trainer and its backend call it from one thread.
class ModuleInterface {
 public:
  ModuleInterface() = default;
  ModuleInterface(const ModuleInterface&) = delete;
  ModuleInterface& operator=(const ModuleInterface&) = delete;
  virtual ~ModuleInterface() = default;

  /// The network whose parameters are trained and checkpointed.
  virtual torch::nn::Module& model() = 0;
  virtual const torch::nn::Module& model() const = 0;

  /// Number of training examples. The backend draws batches of indices in [0, train_size()).
  virtual int64_t train_size() const = 0;
  /// The training examples at `indices` (a 1-D int64 tensor).
  virtual Batch get_train_batch(const at::Tensor& indices) const = 0;
  /// Number of validation examples.
  virtual int64_t val_size() const = 0;
  /// The validation examples at `indices` (a 1-D int64 tensor).
  virtual Batch get_val_batch(const at::Tensor& indices) const = 0;

  /// Forward pass on a training batch (the backend has put model() in training mode). Returns the
  /// scalar loss to differentiate; the backend calls backward() and steps the optimizers.
  virtual at::Tensor train_step(const Batch& batch) = 0;
  /// Forward pass on a validation batch, called in eval mode without gradients.
  virtual ValOutput val_step(const Batch& batch) = 0;

  /// Moves model() and the data the batches come from to `device` (the trainer does, once,
  /// before it builds optimizers or loads a checkpoint); get_*_batch then return tensors there.
  /// The default moves model() only.
  virtual void to(c10::Device device);
  /// Where model() is: the CPU until to() moves it.
  virtual c10::Device device() const;

  /// Builds fresh optimizers over model()'s parameters, and their schedulers. Called once by the
  /// trainer after update_state, and again when a resumed run resets them.
  virtual OptimizersSchedulers get_optimizers_schedulers(const OptimizerPlan& plan) = 0;

  /// The module's state dict: model()'s parameters and buffers under PyTorch's dotted names. The
  /// tensors share memory with the model (see ckpt::module_state). Const and side-effect free.
  virtual ckpt::StateDict get_state() const;
  /// Loads a state produced by get_state into model() (strictly: every key, every shape). An empty
  /// state is a no-op (nothing to resume). Throws ckpt::CheckpointError naming every mismatched key
  /// before anything is copied.
  virtual void update_state(const ckpt::StateDict& state);
};

}  // namespace sample_trainer
