#include <ckpt/module_state.h>

#include <ckpt/checkpoint_error.h>

#include <torch/nn/module.h>
#include <torch/utils.h>

#include <sstream>
#include <unordered_set>

namespace ckpt {
namespace {

std::string shape_of(const c10::IValue& value) {
  if (!value.isTensor()) return std::string("a ") + value.tagKind() + " (no tensor)";
  return c10::str(value.toTensor().sizes());
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

}  // namespace

StateDict module_state(const torch::nn::Module& module) {
  StateDict state;
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    state.insert_or_assign(item.key(), item.value().detach());
  }
  for (const auto& item : module.named_buffers(/*recurse=*/true)) {
    state.insert_or_assign(item.key(), item.value().detach());
  }
  return state;
}

std::string ModuleLoadReport::to_string() const {
  std::ostringstream out;
  const char* separator = "";
  if (!missing_keys.empty()) {
    out << "missing keys: " << join(missing_keys);
    separator = "; ";
  }
  if (!unexpected_keys.empty()) {
    out << separator << "unexpected keys: " << join(unexpected_keys);
    separator = "; ";
  }
  if (!mismatched_keys.empty()) out << separator << "shape mismatches: " << join(mismatched_keys);
  return out.str();
}

namespace {

// The module's parameters and buffers that `state` fills (and how), and what does not match.
ModuleLoadReport match(const torch::nn::Module& module, const StateDict& state,
                       std::vector<std::pair<at::Tensor, at::Tensor>>* copies) {
  std::vector<std::pair<std::string, at::Tensor>> targets;
  for (const auto& item : module.named_parameters(true))
    targets.emplace_back(item.key(), item.value());
  for (const auto& item : module.named_buffers(true))
    targets.emplace_back(item.key(), item.value());

  ModuleLoadReport report;
  std::unordered_set<std::string> known;
  for (const auto& [name, target] : targets) {
    known.insert(name);
    if (!state.contains(name)) {
      report.missing_keys.push_back(name);
      continue;
    }
    const c10::IValue& value = state.at(name);
    if (!value.isTensor() || value.toTensor().sizes() != target.sizes()) {
      report.mismatched_keys.push_back(name + ": checkpoint shape " + shape_of(value) +
                                       " vs module shape " + c10::str(target.sizes()));
      continue;
    }
    if (copies != nullptr) copies->emplace_back(target, value.toTensor());
  }
  for (const auto& [key, value] : state) {
    if (known.count(key) == 0) report.unexpected_keys.push_back(key);
  }
  return report;
}

}  // namespace

ModuleLoadReport check_module_state(const torch::nn::Module& module, const StateDict& state) {
  return match(module, state, nullptr);
}

ModuleLoadReport load_module_state(torch::nn::Module& module, const StateDict& state, bool strict) {
  std::vector<std::pair<at::Tensor, at::Tensor>> copies;
  const ModuleLoadReport report = match(module, state, &copies);
  if (strict && !report.ok()) {
    throw CheckpointError("cannot load module state (strict): " + report.to_string());
  }
  torch::NoGradGuard no_grad;
  for (auto& [target, source] : copies) target.copy_(source);
  return report;
}

}  // namespace ckpt
