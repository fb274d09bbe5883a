// Writes the fuzzer's seed corpus: real checkpoints of every value kind ckpt writes.
// Usage: ckpt_write_seeds DIR
#include <ckpt/module_state.h>
#include <ckpt/optimizer_state.h>
#include <ckpt/serialization.h>

#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/activation.h>
#include <torch/optim/adam.h>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);
  torch::nn::Sequential model(torch::nn::Linear(3, 2), torch::nn::ReLU(), torch::nn::Linear(2, 2));
  torch::optim::Adam adam(model->parameters());
  adam.zero_grad();
  model->forward(torch::ones({1, 3})).sum().backward();
  adam.step();
  ckpt::Checkpoint checkpoint;
  checkpoint.module_interface_state = ckpt::module_state(*model);
  c10::impl::GenericList optimizers(c10::AnyType::get());
  optimizers.push_back(ckpt::optimizer_state(adam).to_ivalue());
  checkpoint.trainer_state.insert_or_assign("last_epoch", int64_t{3});
  checkpoint.trainer_state.insert_or_assign("optimizers", optimizers);
  checkpoint.trainer_backend_state.insert_or_assign("rng", torch::arange(16, torch::kUInt8));
  ckpt::save_checkpoint_file(checkpoint, dir / "checkpoint.pt");
  ckpt::save_state_file(ckpt::module_state(*model), dir / "model.pt");
  ckpt::StateDict kinds{{"none", c10::IValue()}, {"bool", true}, {"float", 0.5},
                        {"big", int64_t{1} << 40}, {"neg", int64_t{-7}}, {"text", std::string("x")},
                        {"tuple", c10::ivalue::Tuple::create({int64_t{1}, 2.0})},
                        {"view", torch::arange(10.).slice(0, 2, 6)}, {"half", torch::ones({2}, torch::kHalf)}};
  ckpt::save_state_file(kinds, dir / "kinds.pt");
  return 0;
}
