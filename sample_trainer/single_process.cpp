#include <sample_trainer/single_process.h>

#include <ckpt/checkpoint_error.h>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <spdlog/spdlog.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/utils.h>

#include <algorithm>
#include <mutex>
#include <stdexcept>
#include <string>

namespace sample_trainer {
namespace {

// splitmix64's finaliser: nearby (seed, epoch) pairs give unrelated generator seeds.
uint64_t mix(uint64_t seed, int64_t epoch) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (static_cast<uint64_t>(epoch) + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

at::Tensor cpu_rng_state() {
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get_state();
}

[[noreturn]] void bad(const std::string& key, const std::string& what) {
  throw ckpt::CheckpointError("trainer_backend_state: '" + key + "' " + what);
}

int64_t count_at(const ckpt::StateDict& state, const std::string& key) {
  if (!state.contains(key)) bad(key, "is missing");
  const c10::IValue& v = state.at(key);
  if (!v.isInt()) bad(key, std::string("must be an int, got ") + v.tagKind());
  if (v.toInt() < 0) bad(key, "must be >= 0, got " + std::to_string(v.toInt()));
  return v.toInt();
}

}  // namespace

void SingleProcess::init(TrainerBackendArguments args) {
  if (!args.module) throw std::invalid_argument("SingleProcess::init: no module");
  if (args.batch_size < 1) {
    throw std::invalid_argument("SingleProcess::init: invalid batch_size " +
                                std::to_string(args.batch_size) + ": must be >= 1");
  }
  if (args.module->train_size() < 1) {
    throw std::invalid_argument("SingleProcess::init: the module has no training examples");
  }
  args_ = std::move(args);
}

at::Tensor SingleProcess::epoch_order(int64_t size, uint64_t shuffle_seed, int64_t epoch) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(mix(shuffle_seed, epoch));
  return at::randperm(size, generator, at::kLong);
}

double SingleProcess::train_epoch(int64_t epoch, const ProgressCallback& progress) {
  if (!args_.module) throw std::logic_error("SingleProcess::train_epoch before init");
  ModuleInterface& module = *args_.module;
  module.model().train();
  const int64_t size = module.train_size();
  const int64_t batch_size = args_.batch_size;
  const int64_t batches = (size + batch_size - 1) / batch_size;
  const at::Tensor order = epoch_order(size, args_.seed, epoch);

  double loss_sum = 0;
  for (int64_t b = 0; b < batches; ++b) {
    const at::Tensor indices = order.slice(0, b * batch_size, std::min(size, (b + 1) * batch_size));
    const Batch batch = module.get_train_batch(indices);
    for (auto& optimizer : args_.optimizers) optimizer->zero_grad();
    at::Tensor loss = module.train_step(batch);
    loss.backward();
    for (auto& optimizer : args_.optimizers) optimizer->step();
    for (auto& scheduler : args_.schedulers) scheduler->step();
    ++batches_completed_;
    ++global_step_completed_;
    const double batch_loss = loss.item<double>();
    loss_sum += batch_loss * static_cast<double>(indices.size(0));
    if (progress) progress(b + 1, batches, batch_loss);
  }
  return loss_sum / static_cast<double>(size);
}

ValResult SingleProcess::validate() {
  if (!args_.module) throw std::logic_error("SingleProcess::validate before init");
  ModuleInterface& module = *args_.module;
  torch::NoGradGuard no_grad;
  module.model().eval();
  const int64_t size = module.val_size();
  ValResult result;
  double loss_sum = 0;
  for (int64_t begin = 0; begin < size; begin += args_.batch_size) {
    const at::Tensor indices =
        at::arange(begin, std::min(size, begin + args_.batch_size), at::kLong);
    const ValOutput out = module.val_step(module.get_val_batch(indices));
    loss_sum += out.loss_sum;
    result.correct += out.correct;
    result.examples += out.examples;
  }
  module.model().train();
  if (result.examples > 0) {
    result.loss = loss_sum / static_cast<double>(result.examples);
    result.accuracy = static_cast<double>(result.correct) / static_cast<double>(result.examples);
  }
  return result;
}

ckpt::StateDict SingleProcess::get_state() const {
  ckpt::StateDict state;
  state.insert_or_assign("global_step_completed", global_step_completed_);
  state.insert_or_assign("batches_completed", batches_completed_);
  state.insert_or_assign("rng_state", cpu_rng_state());
  state.insert_or_assign("shuffle_seed", static_cast<int64_t>(args_.seed));
  return state;
}

void SingleProcess::update_state(const ckpt::StateDict& state) {
  if (state.empty()) return;
  // Check everything before changing anything.
  const int64_t global_step_completed = count_at(state, "global_step_completed");
  const int64_t batches_completed = count_at(state, "batches_completed");
  const int64_t shuffle_seed = count_at(state, "shuffle_seed");
  if (!state.contains("rng_state")) bad("rng_state", "is missing");
  const c10::IValue& rng = state.at("rng_state");
  if (!rng.isTensor()) bad("rng_state", std::string("must be a tensor, got ") + rng.tagKind());
  const at::Tensor rng_state = rng.toTensor();
  const at::Tensor current = cpu_rng_state();
  if (rng_state.scalar_type() != at::kByte || rng_state.dim() != 1 ||
      rng_state.numel() != current.numel()) {
    bad("rng_state", "must be a uint8 tensor of shape [" + std::to_string(current.numel()) +
                         "], got " + std::string(c10::toString(rng_state.scalar_type())) + " " +
                         c10::str(rng_state.sizes()));
  }

  if (static_cast<uint64_t>(shuffle_seed) != args_.seed) {
    spdlog::warn("resuming with the checkpoint's data-order seed {} instead of --trainer.seed {}",
                 shuffle_seed, args_.seed);
  }
  {
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(generator.mutex());
    try {
      generator.set_state(rng_state.contiguous());
    } catch (const c10::Error& e) {
      bad("rng_state", std::string("is not a CPU generator state: ") + e.what_without_backtrace());
    }
  }
  global_step_completed_ = global_step_completed;
  batches_completed_ = batches_completed;
  args_.seed = static_cast<uint64_t>(shuffle_seed);
}

}  // namespace sample_trainer
