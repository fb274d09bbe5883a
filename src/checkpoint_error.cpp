#include <ckpt/checkpoint_error.h>

#include <utility>

namespace ckpt {

CheckpointError::CheckpointError(const std::string& message, std::filesystem::path path,
                                 int error_number)
    : std::runtime_error(message), path_(std::move(path)), error_number_(error_number) {}

}  // namespace ckpt
