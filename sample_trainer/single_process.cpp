#include <sample_trainer/single_process.h>

#include <ckpt/checkpoint_error.h>

#include <ATen/Context.h>
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

uint64_t mix_seed(uint64_t seed, int64_t n) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (static_cast<uint64_t>(n) + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

at::Tensor cpu_rng_state() {
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  return generator.get_state();
}

void set_cpu_rng_state(const c10::IValue& rng, const std::string& key) {
  if (!rng.isTensor()) bad(key, std::string("must be a tensor, got ") + rng.tagKind());
  const at::Tensor rng_state = rng.toTensor();
  const at::Tensor current = cpu_rng_state();
  if (rng_state.scalar_type() != at::kByte || rng_state.dim() != 1 ||
      rng_state.numel() != current.numel()) {
    bad(key, "must be a uint8 tensor of shape [" + std::to_string(current.numel()) + "], got " +
                 std::string(c10::toString(rng_state.scalar_type())) + " " +
                 c10::str(rng_state.sizes()));
  }
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  try {
    generator.set_state(rng_state.contiguous());
  } catch (const c10::Error& e) {
    bad(key, std::string("is not a CPU generator state: ") + e.what_without_backtrace());
  }
}

// A CUDA device's generator (its dropout masks): saved next to the CPU's, so that a run on CUDA
// resumes exactly. Other devices in this sample draw from the CPU generator or have none.
at::Generator cuda_generator(c10::Device device) {
  return at::globalContext().defaultGenerator(device);
}

ValResult validate_module(ModuleInterface& module, int64_t batch_size) {
  torch::NoGradGuard no_grad;
  module.model().eval();
  const int64_t size = module.val_size();
  ValResult result;
  double loss_sum = 0;
  for (int64_t begin = 0; begin < size; begin += batch_size) {
    const at::Tensor indices = at::arange(begin, std::min(size, begin + batch_size), at::kLong);
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
  auto generator = at::make_generator<at::CPUGeneratorImpl>(mix_seed(shuffle_seed, epoch));
  return at::randperm(size, generator, at::kLong);
}

int64_t SingleProcess::batches_per_epoch() const {
  if (!args_.module) throw std::logic_error("SingleProcess::batches_per_epoch before init");
  return (args_.module->train_size() + args_.batch_size - 1) / args_.batch_size;
}

std::optional<double> SingleProcess::train_epoch(int64_t epoch, const StepCallback& after_step) {
  if (!args_.module) throw std::logic_error("SingleProcess::train_epoch before init");
  ModuleInterface& module = *args_.module;
  module.model().train();
  const int64_t size = module.train_size();
  const int64_t batch_size = args_.batch_size;
  const int64_t batches = batches_per_epoch();
  const at::Tensor order = epoch_order(size, args_.seed, epoch);

  int64_t first = 0;
  double loss_sum = 0;
  if (epoch_in_progress_ == epoch) {  // resumed in the middle of this epoch
    first = batch_in_epoch_;
    loss_sum = epoch_loss_sum_;
    spdlog::info("continuing epoch {} at batch {} of {}", epoch, first + 1, batches);
  } else if (epoch_in_progress_ >= 0) {
    spdlog::warn("the checkpoint stopped in epoch {}, but epoch {} is next: starting it afresh",
                 epoch_in_progress_, epoch);
  }
  epoch_in_progress_ = epoch;
  for (int64_t b = first; b < batches; ++b) {
    const at::Tensor indices = order.slice(0, b * batch_size, std::min(size, (b + 1) * batch_size));
    const Batch batch = module.get_train_batch(indices);
    for (auto& optimizer : args_.optimizers) optimizer->zero_grad();
    at::Tensor loss = module.train_step(batch);
    loss.backward();
    if (args_.before_optimizer_step) args_.before_optimizer_step();
    for (auto& optimizer : args_.optimizers) optimizer->step();
    for (auto& scheduler : args_.schedulers) scheduler->step();
    ++batches_completed_;
    ++global_step_completed_;
    const double batch_loss = loss.item<double>();
    loss_sum += batch_loss * static_cast<double>(indices.size(0));
    batch_in_epoch_ = b + 1;
    epoch_loss_sum_ = loss_sum;
    const bool stop = after_step && after_step(b + 1, batches, batch_loss);
    if (stop && b + 1 < batches) return std::nullopt;
  }
  epoch_in_progress_ = -1;
  batch_in_epoch_ = 0;
  epoch_loss_sum_ = 0;
  return loss_sum / static_cast<double>(size);
}

ValResult SingleProcess::validate() {
  if (!args_.module) throw std::logic_error("SingleProcess::validate before init");
  return validate_module(*args_.module, args_.batch_size);
}

ckpt::StateDict SingleProcess::get_state() const {
  ckpt::StateDict state;
  state.insert_or_assign("global_step_completed", global_step_completed_);
  state.insert_or_assign("batches_completed", batches_completed_);
  state.insert_or_assign("rng_state", cpu_rng_state());
  if (args_.module && args_.module->device().is_cuda()) {
    at::Generator generator = cuda_generator(args_.module->device());
    std::lock_guard<std::mutex> lock(generator.mutex());
    state.insert_or_assign("cuda_rng_state", generator.get_state());
  }
  state.insert_or_assign("shuffle_seed", static_cast<int64_t>(args_.seed));
  state.insert_or_assign("epoch_in_progress", epoch_in_progress_);
  state.insert_or_assign("batch_in_epoch", batch_in_epoch_);
  state.insert_or_assign("epoch_loss_sum", epoch_loss_sum_);
  return state;
}

void SingleProcess::update_state(const ckpt::StateDict& state) {
  if (state.empty()) return;
  // Check everything before changing anything.
  const int64_t global_step_completed = count_at(state, "global_step_completed");
  const int64_t batches_completed = count_at(state, "batches_completed");
  const int64_t shuffle_seed = count_at(state, "shuffle_seed");
  // The position within an epoch; absent in checkpoints taken between epochs by older versions.
  int64_t epoch_in_progress = -1;
  int64_t batch_in_epoch = 0;
  double epoch_loss_sum = 0;
  if (state.contains("epoch_in_progress")) {
    const c10::IValue& v = state.at("epoch_in_progress");
    if (!v.isInt() || v.toInt() < -1) bad("epoch_in_progress", "must be an int >= -1");
    epoch_in_progress = v.toInt();
    batch_in_epoch = count_at(state, "batch_in_epoch");
    if (!state.contains("epoch_loss_sum") || !state.at("epoch_loss_sum").isDouble()) {
      bad("epoch_loss_sum", "must be a float");
    }
    epoch_loss_sum = state.at("epoch_loss_sum").toDouble();
    if (state.contains("examples_in_epoch") && epoch_in_progress >= 0) {
      // Written by the data-parallel backend, whose steps take batch_size examples per rank: the
      // position in examples is what carries over to one process.
      const int64_t examples = count_at(state, "examples_in_epoch");
      if (examples % args_.batch_size != 0) {
        bad("examples_in_epoch",
            std::to_string(examples) + " is not a whole number of batches of " +
                std::to_string(args_.batch_size) + " (resume with --dist.nproc 1 instead)");
      }
      batch_in_epoch = examples / args_.batch_size;
    }
    if (args_.module && batch_in_epoch >= batches_per_epoch()) {
      bad("batch_in_epoch", std::to_string(batch_in_epoch) + " is not within an epoch of " +
                                std::to_string(batches_per_epoch()) +
                                " batches (was --trainer.batch_size changed?)");
    }
  }
  if (!state.contains("rng_state")) bad("rng_state", "is missing");
  set_cpu_rng_state(state.at("rng_state"), "rng_state");  // checks, then sets
  if (state.contains("cuda_rng_state") && args_.module && args_.module->device().is_cuda()) {
    const c10::IValue& rng = state.at("cuda_rng_state");
    if (!rng.isTensor()) bad("cuda_rng_state", "must be a tensor");
    at::Generator generator = cuda_generator(args_.module->device());
    std::lock_guard<std::mutex> lock(generator.mutex());
    try {
      generator.set_state(rng.toTensor().cpu().contiguous());
    } catch (const c10::Error& e) {
      bad("cuda_rng_state", std::string("is not a CUDA generator state: ") +
                                e.what_without_backtrace());
    }
  }
  if (static_cast<uint64_t>(shuffle_seed) != args_.seed) {
    spdlog::warn("resuming with the checkpoint's data-order seed {} instead of --trainer.seed {}",
                 shuffle_seed, args_.seed);
  }
  global_step_completed_ = global_step_completed;
  batches_completed_ = batches_completed;
  args_.seed = static_cast<uint64_t>(shuffle_seed);
  epoch_in_progress_ = epoch_in_progress;
  batch_in_epoch_ = batch_in_epoch;
  epoch_loss_sum_ = epoch_loss_sum;
}

}  // namespace sample_trainer
