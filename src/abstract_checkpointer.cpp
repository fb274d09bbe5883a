#include <ckpt/abstract_checkpointer.h>

#include <ckpt/logger.h>

#include <spdlog/spdlog.h>

namespace ckpt {

std::optional<std::filesystem::path> AbstractCheckpointer::save_model(const StateDict&, int64_t) {
  return std::nullopt;
}

bool AbstractCheckpointer::step_due(const TrainingProgress&) { return false; }

std::optional<std::filesystem::path> AbstractCheckpointer::save_step(
    const Checkpoint&, const TrainingProgress& progress, bool force) {
  if (force) {
    logger()->warn(
        "this checkpointer keeps no mid-epoch checkpoints: the position at step {} of epoch {} "
        "is not saved",
        progress.global_step, progress.epoch);
  }
  return std::nullopt;
}

void AbstractCheckpointer::wait() {}

void AbstractCheckpointer::wait_staged() {}

std::optional<SaveHealth> AbstractCheckpointer::save_health() const { return std::nullopt; }

}  // namespace ckpt
