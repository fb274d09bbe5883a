#pragma once

// The C++ side of tests/python/interop.py's tiny model, step and optimizers, mirrored exactly, for
// the tests that compare C++ and Python training numbers (test_interop.cpp,
// test_python_corpus.cpp).
#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ckpt::test {

/// Parameter i gets arange(numel) * 0.25 + i (fill_deterministic in interop.py).
inline void fill_deterministic(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  int64_t i = 0;
  for (auto& p : module.parameters()) {
    p.copy_(torch::arange(p.numel(), p.options()).reshape(p.sizes()) * 0.25 + i++);
  }
}

inline torch::nn::Linear tiny_model() {
  torch::nn::Linear model(3, 2);
  fill_deterministic(*model);
  return model;
}

inline void tiny_step(torch::nn::Linear& model, torch::optim::Optimizer& optimizer) {
  auto x = torch::arange(6, torch::kFloat32).reshape({2, 3}) / 10;
  optimizer.zero_grad();
  model->forward(x).pow(2).sum().backward();
  optimizer.step();
}

/// interop.py's make_optimizer: its hyperparameters, with the learning rate `lr` instead of
/// Python's (0.01; Adagrad 0.1) when given.
inline std::unique_ptr<torch::optim::Optimizer> make_optimizer(
    const std::string& name, std::vector<torch::Tensor> params,
    std::optional<double> lr = std::nullopt) {
  using namespace torch::optim;
  if (name == "sgd") {
    return std::make_unique<SGD>(params, SGDOptions(lr.value_or(0.01)).momentum(0.9));
  }
  if (name == "adam") return std::make_unique<Adam>(params, AdamOptions(lr.value_or(0.01)));
  if (name == "adamw") {
    return std::make_unique<AdamW>(params, AdamWOptions(lr.value_or(0.01)).amsgrad(true));
  }
  if (name == "rmsprop") {
    return std::make_unique<RMSprop>(
        params, RMSpropOptions(lr.value_or(0.01)).momentum(0.5).centered(true));
  }
  return std::make_unique<Adagrad>(params, AdagradOptions(lr.value_or(0.1)));
}

}  // namespace ckpt::test
