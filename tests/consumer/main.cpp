// Saves and resumes a checkpoint through the installed headers and libraries.
#include <ckpt/default_checkpointer.h>
#include <ckpt/module_state.h>

#include <torch/nn/modules/linear.h>

#include <iostream>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  ckpt::DefaultCheckpointerArguments args;
  args.save_dir = argv[1];
  args.load_dir = argv[1];
  torch::nn::Linear model(2, 2);
  {
    ckpt::DefaultCheckpointer checkpointer(args);
    if (!checkpointer.load().empty()) return 1;
    ckpt::Checkpoint checkpoint;
    checkpoint.module_interface_state = ckpt::module_state(*model);
    checkpoint.trainer_state.insert_or_assign("last_epoch", int64_t{0});
    checkpointer.save(checkpoint, 0);
  }
  ckpt::DefaultCheckpointer resumed(args);
  const ckpt::Checkpoint checkpoint = resumed.load();
  torch::nn::Linear fresh(2, 2);
  ckpt::load_module_state(*fresh, checkpoint.module_interface_state);
  const bool same = torch::equal(fresh->weight, model->weight) &&
                    checkpoint.trainer_state.at("last_epoch").toInt() == 0;
  std::cout << (same ? "consumer: resumed OK" : "consumer: MISMATCH") << std::endl;
  return same ? 0 : 1;
}
