#pragma once

// The one place that knows LibTorch's API differs between the versions ckpt builds against
// (Debian's 1.13 and the 2.x wheels). The CKPT_TORCH_* macros come from the compile probes in
// cmake/ckptTorchCompat.cmake, run against the LibTorch found; the rest of the code reads as if
// there were one LibTorch. Private to the build: for ckpt's sources, the sample trainer and tests.

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/core/Event.h>
#include <c10/util/intrusive_ptr.h>

#include <string>
#include <thread>

namespace c10d {
class ProcessGroup;
}  // namespace c10d

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

/// A c10d::ProcessGroup over the c10d::ProcessGroupGloo `gloo`, for all devices. A Gloo group is a
/// ProcessGroup itself in 1.13; in 2.x it is a Backend that a ProcessGroup dispatches to. (Group
/// is c10d::ProcessGroup, a parameter only so this header need not include c10d's.)
template <typename Group = c10d::ProcessGroup, typename Gloo, typename Store>
c10::intrusive_ptr<Group> gloo_process_group(const c10::intrusive_ptr<Store>& store, int rank,
                                             int size, c10::intrusive_ptr<Gloo> gloo) {
#if CKPT_TORCH_GLOO_IS_BACKEND
  auto group = c10::make_intrusive<Group>(store, rank, size);
  group->setBackend(c10::DeviceType::CPU, Group::BackendType::GLOO, gloo);
  group->setDefaultBackend(Group::BackendType::GLOO);
  return group;
#else
  (void)store, (void)rank, (void)size;
  return gloo;
#endif
}

/// Waits until `event` has completed on its device: c10::Event::synchronize(), or, in 1.13, which
/// lacks it, query() until it says so, yielding the CPU between polls.
inline void synchronize(const c10::Event& event) {
#if CKPT_TORCH_EVENT_HAS_SYNCHRONIZE
  event.synchronize();
#else
  while (!event.query()) std::this_thread::yield();
#endif
}

}  // namespace ckpt::compat

/// `const` where c10::Allocator::allocate() is (1.13), nothing where it is not (2.x): for
/// allocators that override it, `c10::DataPtr allocate(size_t n) CKPT_ALLOCATE_CONST override`.
#if CKPT_TORCH_ALLOCATE_IS_CONST
#define CKPT_ALLOCATE_CONST const
#else
#define CKPT_ALLOCATE_CONST
#endif
