// The process the kill test SIGKILLs: resumes from the newest checkpoint in DIR, then saves one
// checkpoint after every step, forever, keeping the last three. Checkpoint i holds tensors filled
// with i, so the test can check that every file's content belongs to its name.
// Usage: ckpt_kill_saver DIR
#include <ckpt/checkpoint_error.h>
#include <ckpt/default_checkpointer.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <iostream>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: ckpt_kill_saver DIR\n";
    return 2;
  }
  // One intra-op thread: the saver fills each tensor with at::full, and a LibTorch built with
  // OpenMP (the torch 2.11 wheel) wakes a team of threads for it that spin-wait afterwards.
  // Measured here with a build running beside it: 191 and 296 saves in 2 s with the team, 1111
  // with one thread (Debian's 1.13: 1132). The kill test counts saves between kills, not fills.
  at::set_num_threads(1);
  try {
    ckpt::DefaultCheckpointerArguments args;
    args.save_dir = argv[1];
    args.model_state_save_dir = argv[1];
    args.load_dir = argv[1];
    args.log_level = "warning";
    ckpt::DefaultCheckpointer checkpointer(args);
    const ckpt::Checkpoint resumed = checkpointer.load();
    int64_t step = resumed.empty() ? 0 : resumed.trainer_state.at("step").toInt() + 1;
    std::cout << "resumed at step " << step << std::endl;
    for (;; ++step) {
      ckpt::Checkpoint checkpoint;
      checkpoint.module_interface_state.insert_or_assign(
          "weight", at::full({256, 256}, static_cast<double>(step)));  // 256 KB
      checkpoint.module_interface_state.insert_or_assign("bias", at::full({256}, static_cast<double>(step)));
      checkpoint.trainer_state.insert_or_assign("step", step);
      checkpointer.save(checkpoint, step);
      if (step >= 3) std::filesystem::remove(args.save_dir / ("model_" + std::to_string(step - 3) + ".pt"));
    }
  } catch (const ckpt::CheckpointError& e) {
    std::cerr << "ckpt_kill_saver: " << e.what() << "\n";
    return 1;
  }
}
