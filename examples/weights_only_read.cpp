// Reading only the model's weights out of a full checkpoint: CheckpointReader opens it lazily and
// reads (and checks) only the records the weights are in, not the optimizer's.
//   weights_only_read DIR
#include <ckpt/checkpoint_reader.h>
#include <ckpt/module_state.h>
#include <ckpt/serialization.h>
#include <ckpt/state_dict.h>
#include <ckpt/trainer_state.h>

#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace {

void require(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("weights_only_read: " + what);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: weights_only_read DIR\n");
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  try {
    std::filesystem::create_directories(dir);
    torch::manual_seed(0);
    torch::nn::Linear trained(256, 256);
    torch::optim::Adam adam(trained->parameters());
    trained->forward(torch::randn({8, 256})).sum().backward();
    adam.step();  // Adam's two moments: twice the weights' bytes beside them in the file
    ckpt::Checkpoint full;
    full.module_interface_state = ckpt::module_state(*trained);
    full.trainer_state = ckpt::trainer_state(0, {adam});
    const std::filesystem::path path = dir / "model_7.pt";
    ckpt::save_checkpoint_file(full, path);

    torch::nn::Linear model(256, 256);
    // [readme]
    ckpt::CheckpointReader reader(path);            // reads the zip's directory and structure
    ckpt::StateDict weights = reader.load_state("module_interface_state");  // those records only
    ckpt::load_module_state(*model, weights);
    std::printf("read %llu of %llu bytes\n", static_cast<unsigned long long>(reader.bytes_read()),
                static_cast<unsigned long long>(reader.file_size()));
    // [/readme]
    require(ckpt::deep_equal(ckpt::module_state(*model), ckpt::module_state(*trained)),
            "the weights read differ from those saved");
    require(reader.bytes_read() * 2 < reader.file_size(),
            "more than half the file was read for a third of its tensors");
    std::printf("weights_only_read: the weights alone were read\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
