// Saving and restoring live objects, as Lightning Fabric's fabric.save / fabric.load do: a model,
// its optimizer and a step counter in one file, restored in place.
//   fabric_style DIR
// [readme]
#include <ckpt/live_state.h>
// [/readme]
#include <ckpt/module_state.h>
#include <ckpt/state_dict.h>

#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("fabric_style: " + what);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fabric_style DIR\n");
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  try {
    std::filesystem::create_directories(dir);
    torch::manual_seed(0);
    // [readme]
    torch::nn::Sequential model(torch::nn::Linear(4, 8), torch::nn::ReLU(), torch::nn::Linear(8, 1));
    torch::optim::AdamW optimizer(model->parameters());
    int64_t iteration = 0;
    ckpt::LiveState state{{"model", model}, {"optimizer", optimizer}, {"iteration", iteration}};
    // [/readme]
    const auto train_step = [&] {
      optimizer.zero_grad();
      model->forward(torch::randn({16, 4})).sum().backward();
      optimizer.step();
      ++iteration;
    };
    for (int i = 0; i < 3; ++i) train_step();
    const ckpt::StateDict weights = ckpt::deep_copy(ckpt::module_state(*model));
    const std::filesystem::path path = dir / "state.pt";
    // [readme]

    ckpt::save(path, state);   // atomic, durable, checksummed; torch.load gives a dict

    ckpt::LoadResult result = ckpt::load(path, state);  // all three restored in place
    // result.remainder: the file's other top-level keys, loaded (Fabric's return value)

    ckpt::LoadOptions options;
    options.strict = false;              // report instead of refusing
    options.read_remainder = false;      // read only the records of the names asked for
    ckpt::load(path, {{"model", model}}, options);      // only the model, only its records

    ckpt::StateDict raw = ckpt::load(path);             // the raw dict
    // [/readme]
    require(result.ok() && result.remainder.empty(), "the load reported " + result.to_string());
    require(raw.contains("iteration") && raw.at("iteration").toInt() == 3, "no iteration 3");
    for (int i = 0; i < 2; ++i) train_step();  // train on, then go back to the saved state
    require(iteration == 5, "did not train on");
    ckpt::load(path, state);
    require(iteration == 3, "iteration not restored");
    require(ckpt::deep_equal(ckpt::module_state(*model), weights), "weights not restored");
    std::printf("fabric_style: model, optimizer and iteration restored in place\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
