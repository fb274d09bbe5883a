#include <ckpt/checkpoint.h>

#include <ckpt/checkpoint_error.h>

namespace ckpt {

Checkpoint deep_copy(const Checkpoint& checkpoint) {
  return {deep_copy(checkpoint.module_interface_state), deep_copy(checkpoint.trainer_state),
          deep_copy(checkpoint.trainer_backend_state),  deep_copy(checkpoint.registered_state),
          deep_copy(checkpoint.hyperparameters),        deep_copy(checkpoint.metadata)};
}

void set_metrics(Checkpoint& checkpoint,
                 const std::vector<std::pair<std::string, double>>& metrics) {
  StateDict reported;
  for (const auto& [name, value] : metrics) reported.insert_or_assign(name, value);
  checkpoint.metadata.insert_or_assign("metrics", reported.to_ivalue());
}

std::vector<std::pair<std::string, double>> metrics(const Checkpoint& checkpoint) {
  std::vector<std::pair<std::string, double>> out;
  if (!checkpoint.metadata.contains("metrics")) return out;
  for (const auto& [name, value] :
       StateDict::from_ivalue(checkpoint.metadata.at("metrics"), "metadata.metrics")) {
    if (value.isDouble()) {
      out.emplace_back(name, value.toDouble());
    } else if (value.isInt()) {
      out.emplace_back(name, static_cast<double>(value.toInt()));
    } else {
      throw CheckpointError("metadata.metrics." + name + " is a " + value.tagKind() +
                            ", not a number");
    }
  }
  return out;
}

bool operator==(const Checkpoint& a, const Checkpoint& b) {
  return a.module_interface_state == b.module_interface_state &&
         a.trainer_state == b.trainer_state && a.trainer_backend_state == b.trainer_backend_state &&
         a.registered_state == b.registered_state && a.hyperparameters == b.hyperparameters &&
         a.metadata == b.metadata;
}

}  // namespace ckpt
