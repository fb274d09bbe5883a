#pragma once

#include <ckpt/state_dict.h>

namespace torch {
namespace optim {
class Optimizer;
}  // namespace optim
}  // namespace torch

namespace ckpt {

/// The optimizer's state in the layout of Python's `Optimizer.state_dict()`:
///
///   {"state": {0: {"step": tensor(3.), "exp_avg": ..., ...}, 1: {...}},
///    "param_groups": [{"lr": 0.001, "betas": (0.9, 0.999), ..., "params": [0, 1]}]}
///
/// Parameters are numbered across groups in order, as Python does; a parameter the optimizer
/// has not touched yet has no entry in "state". Supported: torch::optim::SGD, Adam, AdamW,
/// RMSprop and Adagrad (the per-group hyperparameters Python's 1.13 optimizers carry that LibTorch
/// lacks, such as `maximize` or `foreach`, are written with Python's defaults). Python's
/// `torch.optim.<Same>(params).load_state_dict()` accepts the result. State tensors are copies,
/// or with StateTensors::shared the optimizer's buffers themselves, as Python's `state_dict()`
/// returns them: no copy of a state that is about to be written (and copied only if the
/// checkpointer stages it), but they change with the next optimizer step. Throws CheckpointError
/// for another optimizer type.
enum class StateTensors { copies, shared };
StateDict optimizer_state(const torch::optim::Optimizer& optimizer,
                          StateTensors tensors = StateTensors::copies);

/// Restores state produced by optimizer_state, or by Python's `state_dict()` for the same
/// optimizer type, into `optimizer`, whose parameters must already be in place (same groups, same
/// counts, same shapes): hyperparameters of each group and every per-parameter buffer and step
/// count are replaced, so training continues exactly as if it had never stopped. Throws
/// CheckpointError naming the key (e.g. `state.3.exp_avg`) and both values on any mismatch, with
/// the optimizer unchanged.
void load_optimizer_state(torch::optim::Optimizer& optimizer, const StateDict& state);

}  // namespace ckpt
