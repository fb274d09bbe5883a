#pragma once

#include <ckpt/state_dict.h>

#include <string>
#include <vector>

namespace torch {
namespace nn {
class Module;
}  // namespace nn
}  // namespace torch

namespace ckpt {

/// Every parameter and buffer of `module` (recursively) under PyTorch's dotted names
/// (`fc1.weight`), parameters first, each detached (it shares memory with the module: copy it if
/// the module keeps training and you need a snapshot). Same keys and order as Python's
/// `state_dict()` for the same module tree.
StateDict module_state(const torch::nn::Module& module);

/// What load_module_state found when the state and the module disagree.
struct ModuleLoadReport {
  std::vector<std::string> missing_keys;     ///< In the module, not in the state.
  std::vector<std::string> unexpected_keys;  ///< In the state, not in the module.
  /// "key: checkpoint shape [a, b] vs module shape [c, d]" (or a value that is no tensor).
  std::vector<std::string> mismatched_keys;

  bool ok() const noexcept {
    return missing_keys.empty() && unexpected_keys.empty() && mismatched_keys.empty();
  }
  /// One line listing every problem, e.g. for a log message.
  std::string to_string() const;
};

/// What load_module_state(module, state, false) would report, without copying anything.
ModuleLoadReport check_module_state(const torch::nn::Module& module, const StateDict& state);

/// Copies the tensors in `state` into the module's parameters and buffers (values converted to the
/// module's dtypes, without recording gradients). With `strict`, any missing or unexpected key or
/// shape mismatch throws CheckpointError naming every offending key and both shapes, before
/// anything is copied. Without `strict`, matching keys are copied and the rest reported.
ModuleLoadReport load_module_state(torch::nn::Module& module, const StateDict& state,
                                   bool strict = true);

}  // namespace ckpt
