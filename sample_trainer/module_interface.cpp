#include <sample_trainer/module_interface.h>

#include <ckpt/module_state.h>

namespace sample_trainer {

ckpt::StateDict ModuleInterface::get_state() const { return ckpt::module_state(model()); }

void ModuleInterface::update_state(const ckpt::StateDict& state) {
  if (state.empty()) return;
  ckpt::load_module_state(model(), state, /*strict=*/true);
}

void ModuleInterface::to(c10::Device device) { model().to(device); }

c10::Device ModuleInterface::device() const {
  const auto parameters = model().parameters();
  return parameters.empty() ? c10::Device(c10::kCPU) : parameters.front().device();
}

}  // namespace sample_trainer
