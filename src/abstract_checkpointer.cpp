#include <ckpt/abstract_checkpointer.h>

namespace ckpt {

std::optional<std::filesystem::path> AbstractCheckpointer::save_model(const StateDict&, int64_t) {
  return std::nullopt;
}

void AbstractCheckpointer::wait() {}

}  // namespace ckpt
