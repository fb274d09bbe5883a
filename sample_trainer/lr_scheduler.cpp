#include <sample_trainer/lr_scheduler.h>

#include <ckpt/checkpoint_error.h>

#include <torch/optim/optimizer.h>

#include <stdexcept>
#include <string>

namespace sample_trainer {
namespace {

[[noreturn]] void bad(const std::string& key, const std::string& what) {
  throw ckpt::CheckpointError("scheduler state: '" + key + "' " + what);
}

int64_t int_at(const ckpt::StateDict& state, const std::string& key) {
  if (!state.contains(key)) bad(key, "is missing");
  const c10::IValue& v = state.at(key);
  if (!v.isInt()) bad(key, std::string("must be an int, got ") + v.tagKind());
  return v.toInt();
}

double number(const c10::IValue& v, const std::string& key) {
  if (v.isDouble()) return v.toDouble();
  if (v.isInt()) return static_cast<double>(v.toInt());
  bad(key, std::string("must be a number, got ") + v.tagKind());
}

double double_at(const ckpt::StateDict& state, const std::string& key) {
  if (!state.contains(key)) bad(key, "is missing");
  return number(state.at(key), key);
}

std::vector<double> doubles_at(const ckpt::StateDict& state, const std::string& key,
                               size_t expected_size) {
  if (!state.contains(key)) bad(key, "is missing");
  const c10::IValue& v = state.at(key);
  if (!v.isList()) bad(key, std::string("must be a list, got ") + v.tagKind());
  std::vector<double> out;
  for (const c10::IValue& item : v.toListRef()) {
    out.push_back(number(item, key + "[" + std::to_string(out.size()) + "]"));
  }
  if (out.size() != expected_size) {
    bad(key, "has " + std::to_string(out.size()) + " entries but the optimizer has " +
                 std::to_string(expected_size) + " param groups");
  }
  return out;
}

c10::List<double> to_list(const std::vector<double>& values) {
  c10::List<double> list;
  for (double v : values) list.push_back(v);
  return list;
}

}  // namespace

StepLR::StepLR(std::shared_ptr<torch::optim::Optimizer> optimizer, int64_t step_size, double gamma)
    : optimizer_(std::move(optimizer)), step_size_(step_size), gamma_(gamma) {
  if (!optimizer_) throw std::invalid_argument("StepLR: optimizer must not be null");
  if (step_size < 1) {
    throw std::invalid_argument("StepLR: invalid step_size " + std::to_string(step_size) +
                                ": must be >= 1");
  }
  if (!(gamma > 0)) {
    throw std::invalid_argument("StepLR: invalid gamma " + std::to_string(gamma) + ": must be > 0");
  }
  for (const auto& group : optimizer_->param_groups()) {
    base_lrs_.push_back(group.options().get_lr());
  }
  last_lr_ = base_lrs_;
}

void StepLR::step() {
  ++step_count_;
  ++last_epoch_;
  // Python's chainable form: scale the current rate, so a resumed run multiplies the same numbers.
  last_lr_.clear();
  for (auto& group : optimizer_->param_groups()) {
    double lr = group.options().get_lr();
    if (last_epoch_ % step_size_ == 0) lr *= gamma_;
    group.options().set_lr(lr);
    last_lr_.push_back(lr);
  }
}

ckpt::StateDict StepLR::get_state() const {
  ckpt::StateDict state;
  state.insert_or_assign("step_size", step_size_);
  state.insert_or_assign("gamma", gamma_);
  state.insert_or_assign("base_lrs", to_list(base_lrs_));
  state.insert_or_assign("last_epoch", last_epoch_);
  state.insert_or_assign("verbose", false);
  state.insert_or_assign("_step_count", step_count_);
  state.insert_or_assign("_get_lr_called_within_step", false);
  state.insert_or_assign("_last_lr", to_list(last_lr_));
  return state;
}

void StepLR::update_state(const ckpt::StateDict& state) {
  const size_t groups = optimizer_->param_groups().size();
  // Read everything before assigning anything, so a bad state leaves the scheduler unchanged.
  const int64_t step_size = int_at(state, "step_size");
  if (step_size < 1) bad("step_size", "must be >= 1, got " + std::to_string(step_size));
  const double gamma = double_at(state, "gamma");
  std::vector<double> base_lrs = doubles_at(state, "base_lrs", groups);
  const int64_t last_epoch = int_at(state, "last_epoch");
  const int64_t step_count = int_at(state, "_step_count");
  std::vector<double> last_lr = doubles_at(state, "_last_lr", groups);

  step_size_ = step_size;
  gamma_ = gamma;
  base_lrs_ = std::move(base_lrs);
  last_epoch_ = last_epoch;
  step_count_ = step_count;
  last_lr_ = std::move(last_lr);
}

}  // namespace sample_trainer
