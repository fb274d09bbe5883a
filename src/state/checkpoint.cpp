#include <ckpt/checkpoint.h>

namespace ckpt {

bool operator==(const Checkpoint& a, const Checkpoint& b) {
  return a.module_interface_state == b.module_interface_state &&
         a.trainer_state == b.trainer_state && a.trainer_backend_state == b.trainer_backend_state &&
         a.registered_state == b.registered_state && a.hyperparameters == b.hyperparameters &&
         a.metadata == b.metadata;
}

}  // namespace ckpt
