#include <sample_trainer/module_interface.h>

#include <ckpt/module_state.h>

namespace sample_trainer {

ckpt::StateDict ModuleInterface::get_state() const { return ckpt::module_state(model()); }

void ModuleInterface::update_state(const ckpt::StateDict& state) {
  if (state.empty()) return;
  ckpt::load_module_state(model(), state, /*strict=*/true);
}

}  // namespace sample_trainer
