#pragma once

// The one place that knows LibTorch's API differs between the versions ckpt builds against
// (Debian's 1.13 and the 2.x wheels). The CKPT_TORCH_* macros come from the compile probes in
// cmake/ckptTorchCompat.cmake, run against the LibTorch found; the rest of the code reads as if
// there were one LibTorch. Private to the build: for ckpt's sources, the sample trainer and tests.

#include <ATen/core/Tensor.h>

#include <string>

namespace ckpt::compat {

/// The key of `p`'s entry in torch::optim::Optimizer::state(): its TensorImpl*, or in 1.13 that
/// address printed to a string.
#if CKPT_TORCH_OPTIMIZER_STATE_KEYED_BY_POINTER
using OptimizerStateKey = void*;
inline OptimizerStateKey optimizer_state_key(const at::Tensor& p) {
  return p.unsafeGetTensorImpl();
}
#else
using OptimizerStateKey = std::string;
inline OptimizerStateKey optimizer_state_key(const at::Tensor& p) {
  return c10::guts::to_string(p.unsafeGetTensorImpl());
}
#endif

}  // namespace ckpt::compat
