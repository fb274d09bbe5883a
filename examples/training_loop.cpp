// The minimal training loop with DefaultCheckpointer: a model, its optimizer, an LR schedule and
// the metrics saved every epoch, keeping the newest two; then a second run, as after a crash,
// that resumes from the newest checkpoint and continues where the first stopped.
//   training_loop DIR
// [readme]
#include <ckpt/default_checkpointer.h>
#include <ckpt/module_state.h>
#include <ckpt/trainer_state.h>
// [/readme]
#include <ckpt/state_dict.h>

#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace {

// An LR schedule with state: anything with get_state() and update_state() is saved as an object.
struct HalveEvery {
  torch::optim::Adam& optimizer;
  int64_t every = 2;
  int64_t epochs_done = 0;
  void step() {
    if (++epochs_done % every != 0) return;
    for (auto& group : optimizer.param_groups()) {
      auto& options = static_cast<torch::optim::AdamOptions&>(group.options());
      options.lr(options.lr() / 2);
    }
  }
  ckpt::StateDict get_state() const {
    ckpt::StateDict state;
    state.insert_or_assign("epochs_done", epochs_done);
    return state;
  }
  void update_state(const ckpt::StateDict& state) {
    epochs_done = state.at("epochs_done").toInt();
  }
};

void require(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("training_loop: " + what);
}

// Trains up to `epochs` epochs in all, resuming from `dir` if it holds a checkpoint; returns the
// final weights.
ckpt::StateDict run(const std::filesystem::path& dir, int64_t epochs) {
  torch::manual_seed(0);
  const auto inputs = torch::randn({64, 4});
  const auto targets = inputs.sum(1, /*keepdim=*/true);
  torch::nn::Linear model(4, 1);
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(0.1));
  HalveEvery scheduler{adam};

  // [readme]
  ckpt::DefaultCheckpointerArguments args;   // PyMarlin's fields and defaults
  args.save_dir = dir;
  args.load_dir = dir;                       // resume from the newest checkpoint there
  args.keep_last_n = 2;                      // older checkpoints are deleted once a new one lands
  ckpt::DefaultCheckpointer checkpointer(args);

  int64_t first_epoch = 0;
  ckpt::Checkpoint resumed = checkpointer.load();  // empty on a fresh start
  if (!resumed.empty()) {
    ckpt::load_module_state(*model, resumed.module_interface_state);  // strict by default
    first_epoch = ckpt::load_trainer_state(resumed.trainer_state, {adam}, {scheduler}) + 1;
    std::printf("resumed from %s\n", checkpointer.loaded_path()->c_str());
  }
  for (int64_t epoch = first_epoch; epoch < epochs; ++epoch) {
    adam.zero_grad();
    auto loss = torch::mse_loss(model(inputs), targets);
    loss.backward();
    adam.step();
    scheduler.step();

    ckpt::Checkpoint checkpoint;
    checkpoint.module_interface_state = ckpt::module_state(*model);
    checkpoint.trainer_state = ckpt::trainer_state(epoch, {adam}, {scheduler});
    ckpt::set_metrics(checkpoint, {{"train_loss", loss.item<double>()}});
    checkpointer.save(checkpoint, epoch);    // DIR/model_<epoch>.pt, atomically
  }
  checkpointer.save_model(ckpt::module_state(*model), epochs - 1);  // DIR/model_model_<N>.pt
  // [/readme]
  require(first_epoch == 0 || checkpointer.loaded_path().has_value(), "no loaded path");
  return ckpt::module_state(*model);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: training_loop DIR\n");
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  try {
    std::filesystem::remove_all(dir);
    const ckpt::StateDict straight = run(dir / "straight", 6);
    run(dir / "split", 3);                                     // stops after epoch 2
    const ckpt::StateDict resumed = run(dir / "split", 6);     // resumes at epoch 3
    require(ckpt::deep_equal(straight, resumed), "the resumed run's weights differ");
    require(!std::filesystem::exists(dir / "split" / "model_3.pt") &&
                std::filesystem::exists(dir / "split" / "model_5.pt"),
            "keep_last_n 2 did not keep exactly the newest two");
    std::printf("training_loop: resumed run equals the uninterrupted one\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
