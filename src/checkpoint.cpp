#include <ckpt/checkpoint.h>

namespace ckpt {

bool operator==(const Checkpoint& a, const Checkpoint& b) {
  return a.module_interface_state == b.module_interface_state &&
         a.trainer_state == b.trainer_state && a.trainer_backend_state == b.trainer_backend_state;
}

}  // namespace ckpt
