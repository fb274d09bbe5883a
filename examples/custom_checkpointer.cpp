// An AbstractCheckpointer of your own: this one keeps the latest checkpoint in memory (say, for a
// job that only needs to survive an in-process restart), and a second, file-based one saves every
// fifth epoch. A trainer written against AbstractCheckpointer takes either.
//   custom_checkpointer DIR
#include <ckpt/abstract_checkpointer.h>
#include <ckpt/checkpoint.h>
#include <ckpt/checkpoint_names.h>
#include <ckpt/serialization.h>

#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace {

// [readme]
class MemoryCheckpointer final : public ckpt::AbstractCheckpointer {
 public:
  std::optional<std::filesystem::path> save(const ckpt::Checkpoint& checkpoint, int64_t /*index*/,
                                            bool /*force*/) override {
    // The states share tensors with the live model and optimizer: keep a copy that does not.
    latest_ = ckpt::deep_copy(checkpoint);  // all six fields, every tensor cloned
    return std::nullopt;                    // nothing was written to a file
  }
  ckpt::Checkpoint load() override { return latest_; }  // empty at first: a fresh start

 private:
  ckpt::Checkpoint latest_;
};

class EveryFifth final : public ckpt::AbstractCheckpointer {
 public:
  explicit EveryFifth(std::filesystem::path dir) : dir_(std::move(dir)) {}
  std::optional<std::filesystem::path> save(const ckpt::Checkpoint& c, int64_t index,
                                            bool force) override {
    if (index % 5 != 0 && !force) return std::nullopt;
    auto path = dir_ / ("ckpt_" + std::to_string(index) + ".pt");
    ckpt::save_checkpoint_file(c, path);       // atomic, checksummed, torch.load-compatible
    return path;
  }
  ckpt::Checkpoint load() override {
    auto latest = ckpt::get_latest_file(dir_, "ckpt", "pt");
    return latest.empty() ? ckpt::Checkpoint{} : ckpt::load_checkpoint_file(latest);
  }

 private:
  std::filesystem::path dir_;
};
// [/readme]

void require(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("custom_checkpointer: " + what);
}

ckpt::Checkpoint checkpoint_at(int64_t epoch, const at::Tensor& weight) {
  ckpt::Checkpoint checkpoint;
  checkpoint.module_interface_state.insert_or_assign("fc.weight", weight);
  checkpoint.trainer_state.insert_or_assign("last_epoch", epoch);
  ckpt::set_metrics(checkpoint, {{"val_loss", 1.0 / static_cast<double>(epoch + 1)}});
  checkpoint.hyperparameters.insert_or_assign("trainer.epochs", int64_t{12});
  return checkpoint;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: custom_checkpointer DIR\n");
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  try {
    std::filesystem::create_directories(dir);
    auto weight = torch::zeros({4, 4});
    MemoryCheckpointer memory;
    EveryFifth files(dir);
    require(memory.load().empty() && files.load().empty(), "not a fresh start");
    for (int64_t epoch = 0; epoch < 12; ++epoch) {
      weight.add_(1);  // training changes the live tensor in place
      const ckpt::Checkpoint checkpoint = checkpoint_at(epoch, weight);
      ckpt::AbstractCheckpointer* checkpointers[] = {&memory, &files};
      for (auto* checkpointer : checkpointers) checkpointer->save(checkpoint, epoch, epoch == 11);
    }
    const ckpt::Checkpoint kept = memory.load();
    require(kept.module_interface_state.at("fc.weight").toTensor().equal(torch::full({4, 4}, 12.0)),
            "the in-memory copy followed the live tensor");
    require(ckpt::metrics(kept).at(0).second == 1.0 / 12.0, "the metrics were lost");
    require(!kept.hyperparameters.empty(), "the hyperparameters were lost");
    require(files.load().trainer_state.at("last_epoch").toInt() == 11, "not the forced save");
    require(std::filesystem::exists(dir / "ckpt_5.pt") && !std::filesystem::exists(dir / "ckpt_6.pt"),
            "EveryFifth saved the wrong epochs");
    std::printf("custom_checkpointer: both checkpointers kept what they should\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
