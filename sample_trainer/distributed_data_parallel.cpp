#include <sample_trainer/distributed_data_parallel.h>

#include <sample_trainer/single_process.h>

#include <ckpt/checkpoint_error.h>

#include <ATen/ATen.h>
#include <spdlog/spdlog.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/utils.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

namespace sample_trainer {
namespace {

[[noreturn]] void bad(const std::string& key, const std::string& what) {
  throw ckpt::CheckpointError("trainer_backend_state: '" + key + "' " + what);
}

int64_t int_at(const ckpt::StateDict& state, const std::string& key, int64_t minimum) {
  if (!state.contains(key)) bad(key, "is missing");
  const c10::IValue& v = state.at(key);
  if (!v.isInt()) bad(key, std::string("must be an int, got ") + v.tagKind());
  if (v.toInt() < minimum) {
    bad(key, "must be >= " + std::to_string(minimum) + ", got " + std::to_string(v.toInt()));
  }
  return v.toInt();
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Runs a collective to completion; a failure or a timeout names what was being done.
void run(const c10::intrusive_ptr<c10d::Work>& work, int rank, const std::string& what) {
  try {
    work->wait();
  } catch (const std::exception& e) {
    std::string reason = e.what();
    if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
      reason = c10_error->what_without_backtrace();
    }
    const auto newline = reason.find('\n');
    if (newline != std::string::npos) reason.resize(newline);
    throw std::runtime_error("rank " + std::to_string(rank) + ": " + what +
                             " failed (another rank failed, or none answered within "
                             "--dist.timeout): " +
                             reason);
  }
}

}  // namespace

uint64_t state_digest(const ckpt::StateDict& state) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  const auto add = [&hash](const void* data, size_t size) {
    const auto* bytes = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < size; ++i) {
      hash ^= bytes[i];
      hash *= 0x100000001b3ULL;
    }
  };
  for (const auto& [name, value] : state) {
    add(name.data(), name.size());
    if (!value.isTensor()) continue;
    const at::Tensor tensor = value.toTensor().contiguous();
    const auto type = static_cast<int>(tensor.scalar_type());
    add(&type, sizeof(type));
    for (int64_t d : tensor.sizes()) add(&d, sizeof(d));
    add(tensor.data_ptr(), tensor.nbytes());
  }
  return hash;
}

DistributedDataParallel::DistributedDataParallel(c10::intrusive_ptr<c10d::ProcessGroup> group)
    : group_(std::move(group)) {
  if (!group_) throw std::invalid_argument("DistributedDataParallel: no process group");
  rank_ = group_->getRank();
  world_size_ = group_->getSize();
}

DistributedDataParallel::~DistributedDataParallel() = default;

void DistributedDataParallel::init(TrainerBackendArguments args) {
  if (!args.module) throw std::invalid_argument("DistributedDataParallel::init: no module");
  if (args.batch_size < 1) {
    throw std::invalid_argument("DistributedDataParallel::init: invalid batch_size " +
                                std::to_string(args.batch_size) + ": must be >= 1");
  }
  if (args.module->train_size() < 1) {
    throw std::invalid_argument(
        "DistributedDataParallel::init: the module has no training examples");
  }
  args_ = std::move(args);
  // Rank 0's replica is everyone's starting point.
  std::vector<at::Tensor> tensors;
  for (const auto& p : args_.module->model().parameters()) tensors.push_back(p);
  for (const auto& b : args_.module->model().buffers()) tensors.push_back(b);
  if (!tensors.empty() && world_size_ > 1) {
    std::vector<at::Tensor> flat;
    for (const auto& t : tensors) flat.push_back(t.detach().reshape(-1).to(at::kFloat));
    std::vector<at::Tensor> buffer{at::cat(flat)};
    run(group_->broadcast(buffer), rank_, "broadcasting rank 0's parameters");
    torch::NoGradGuard no_grad;
    int64_t offset = 0;
    for (auto& t : tensors) {
      const int64_t n = t.numel();
      t.copy_(buffer[0].slice(0, offset, offset + n).view(t.sizes()));
      offset += n;
    }
  }
  if (rank_ > 0) at::manual_seed(mix_seed(args_.seed, rank_));
}

int64_t DistributedDataParallel::batches_per_epoch() const {
  if (!args_.module)
    throw std::logic_error("DistributedDataParallel::batches_per_epoch before init");
  return ceil_div(args_.module->train_size(), args_.batch_size * world_size_);
}

void DistributedDataParallel::average_gradients(int64_t examples_here, int64_t examples_in_step) {
  std::vector<at::Tensor> parameters = args_.module->model().parameters();
  std::vector<at::Tensor> grads;
  for (const auto& p : parameters) {
    grads.push_back(p.grad().defined() ? p.grad().reshape(-1)
                                       : at::zeros({p.numel()}, p.options()));
  }
  // Each rank's gradient is the mean over its own examples: weight it by their number, so the sum
  // over ranks divided by the step's examples is the mean over all of them.
  std::vector<at::Tensor> flat{at::cat(grads).mul_(static_cast<double>(examples_here))};
  if (world_size_ > 1) run(group_->allreduce(flat), rank_, "averaging gradients");
  flat[0].div_(static_cast<double>(examples_in_step));
  int64_t offset = 0;
  for (auto& p : parameters) {
    const int64_t n = p.numel();
    p.mutable_grad() = flat[0].slice(0, offset, offset + n).view(p.sizes()).clone();
    offset += n;
  }
}

double DistributedDataParallel::sum_over_ranks(double value) {
  if (world_size_ == 1) return value;
  std::vector<at::Tensor> t{at::full({1}, value, at::kDouble)};
  run(group_->allreduce(t), rank_, "summing the loss");
  return t[0].item<double>();
}

bool DistributedDataParallel::any_rank(bool local) {
  if (world_size_ == 1) return local;
  std::vector<at::Tensor> t{at::full({1}, local ? 1 : 0, at::kLong)};
  c10d::AllreduceOptions options;
  options.reduceOp = c10d::ReduceOp::MAX;
  run(group_->allreduce(t, options), rank_, "agreeing on a stop");
  return t[0].item<int64_t>() != 0;
}

void DistributedDataParallel::check_parameters_agree(int64_t epoch) {
  const uint64_t mine = state_digest(args_.module->get_state());
  if (world_size_ > 1) {
    std::vector<at::Tensor> in{at::full({1}, static_cast<int64_t>(mine), at::kLong)};
    std::vector<std::vector<at::Tensor>> out(1);
    for (int r = 0; r < world_size_; ++r) out[0].push_back(at::empty({1}, at::kLong));
    run(group_->allgather(out, in), rank_, "comparing parameters");
    for (int r = 0; r < world_size_; ++r) {
      const auto theirs = static_cast<uint64_t>(out[0][r].item<int64_t>());
      if (theirs != mine) {
        throw std::runtime_error(fmt::format(
            "rank {}: after epoch {} the parameters of rank {} (digest {:016x}) differ from "
            "this rank's ({:016x}): the replicas diverged",
            rank_, epoch, r, theirs, mine));
      }
    }
  }
  spdlog::info("rank {}: parameter digest after epoch {}: {:016x} (equal on all {} ranks)", rank_,
               epoch, mine, world_size_);
}

std::optional<double> DistributedDataParallel::train_epoch(int64_t epoch,
                                                           const StepCallback& after_step) {
  if (!args_.module) throw std::logic_error("DistributedDataParallel::train_epoch before init");
  ModuleInterface& module = *args_.module;
  module.model().train();
  const int64_t size = module.train_size();
  const int64_t per_step = args_.batch_size * world_size_;
  const at::Tensor order = SingleProcess::epoch_order(size, args_.seed, epoch);

  int64_t offset = 0;  // examples of this epoch consumed by all ranks
  int64_t step = 0;
  double loss_sum = 0;
  if (epoch_in_progress_ == epoch) {
    offset = examples_in_epoch_;
    step = batch_in_epoch_;
    loss_sum = epoch_loss_sum_;
    spdlog::info("continuing epoch {} at example {} of {}", epoch, offset, size);
  } else if (epoch_in_progress_ >= 0) {
    spdlog::warn("the checkpoint stopped in epoch {}, but epoch {} is next: starting it afresh",
                 epoch_in_progress_, epoch);
  }
  const int64_t steps = step + ceil_div(size - offset, per_step);
  epoch_in_progress_ = epoch;
  while (offset < size) {
    const int64_t in_step = std::min(per_step, size - offset);
    const int64_t share = ceil_div(in_step, world_size_);
    const int64_t begin = std::min(in_step, rank_ * share);
    const int64_t end = std::min(in_step, begin + share);
    for (auto& optimizer : args_.optimizers) optimizer->zero_grad();
    double local_loss = 0;
    if (end > begin) {
      const at::Tensor indices = order.slice(0, offset + begin, offset + end);
      at::Tensor loss = module.train_step(module.get_train_batch(indices));
      loss.backward();
      local_loss = loss.item<double>() * static_cast<double>(end - begin);
    }
    average_gradients(end - begin, in_step);
    const double step_loss_sum = sum_over_ranks(local_loss);
    if (args_.before_optimizer_step) args_.before_optimizer_step();
    for (auto& optimizer : args_.optimizers) optimizer->step();
    for (auto& scheduler : args_.schedulers) scheduler->step();
    ++batches_completed_;
    ++global_step_completed_;
    ++step;
    offset += in_step;
    loss_sum += step_loss_sum;
    batch_in_epoch_ = step;
    examples_in_epoch_ = offset;
    epoch_loss_sum_ = loss_sum;
    const bool stop =
        after_step && after_step(step, steps, step_loss_sum / static_cast<double>(in_step));
    if (stop && offset < size) return std::nullopt;
  }
  check_parameters_agree(epoch);
  epoch_in_progress_ = -1;
  batch_in_epoch_ = 0;
  examples_in_epoch_ = 0;
  epoch_loss_sum_ = 0;
  return loss_sum / static_cast<double>(size);
}

ValResult DistributedDataParallel::validate() {
  if (!args_.module) throw std::logic_error("DistributedDataParallel::validate before init");
  return validate_module(*args_.module, args_.batch_size);
}

ckpt::StateDict DistributedDataParallel::get_state() const {
  ckpt::StateDict state;
  state.insert_or_assign("global_step_completed", global_step_completed_);
  state.insert_or_assign("batches_completed", batches_completed_);
  state.insert_or_assign("rng_state", cpu_rng_state());
  state.insert_or_assign("shuffle_seed", static_cast<int64_t>(args_.seed));
  state.insert_or_assign("epoch_in_progress", epoch_in_progress_);
  state.insert_or_assign("batch_in_epoch", batch_in_epoch_);
  state.insert_or_assign("epoch_loss_sum", epoch_loss_sum_);
  state.insert_or_assign("examples_in_epoch", examples_in_epoch_);
  state.insert_or_assign("rank", static_cast<int64_t>(rank_));
  state.insert_or_assign("world_size", static_cast<int64_t>(world_size_));
  return state;
}

void DistributedDataParallel::update_state(const ckpt::StateDict& state) {
  if (state.empty()) return;
  if (!args_.module) throw std::logic_error("DistributedDataParallel::update_state before init");
  // Check everything before changing anything.
  const int64_t global_step_completed = int_at(state, "global_step_completed", 0);
  const int64_t batches_completed = int_at(state, "batches_completed", 0);
  const int64_t shuffle_seed = int_at(state, "shuffle_seed", 0);
  const int64_t epoch_in_progress =
      state.contains("epoch_in_progress") ? int_at(state, "epoch_in_progress", -1) : -1;
  int64_t batch_in_epoch = 0;
  int64_t examples_in_epoch = 0;
  double epoch_loss_sum = 0;
  const int64_t size = args_.module->train_size();
  const int64_t per_step = args_.batch_size * world_size_;
  const bool resized = state.contains("ckpt_saved_world_size");
  if (!resized && state.contains("rank") && int_at(state, "rank", 0) != rank_) {
    bad("rank", "is " + std::to_string(state.at("rank").toInt()) + ", but this is rank " +
                    std::to_string(rank_) + " (each rank must get its own state)");
  }
  if (epoch_in_progress >= 0) {
    if (!state.contains("epoch_loss_sum") || !state.at("epoch_loss_sum").isDouble()) {
      bad("epoch_loss_sum", "must be a float");
    }
    epoch_loss_sum = state.at("epoch_loss_sum").toDouble();
    batch_in_epoch = int_at(state, "batch_in_epoch", 0);
    // A single process's checkpoint counts batches of batch_size; ours count examples.
    examples_in_epoch = state.contains("examples_in_epoch") ? int_at(state, "examples_in_epoch", 0)
                                                            : batch_in_epoch * args_.batch_size;
    if (examples_in_epoch >= size) {
      bad("examples_in_epoch", std::to_string(examples_in_epoch) + " is not within an epoch of " +
                                   std::to_string(size) +
                                   " examples (was --trainer.batch_size changed?)");
    }
    if (resized) batch_in_epoch = examples_in_epoch / per_step;
  }
  if (!state.contains("rng_state")) bad("rng_state", "is missing");
  const int64_t saved_world_size =
      resized ? int_at(state, "ckpt_saved_world_size", 1) : world_size_;

  set_cpu_rng_state(state.at("rng_state"), "rng_state");  // checks, then sets
  if (resized && rank_ > 0) {  // the state is rank 0's: this rank's generator is re-derived
    at::manual_seed(
        mix_seed(mix_seed(static_cast<uint64_t>(shuffle_seed), rank_), global_step_completed));
  }
  if (resized) {
    const std::string position = epoch_in_progress >= 0
                                     ? fmt::format("continuing at example {} of epoch {}",
                                                   examples_in_epoch, epoch_in_progress)
                                     : std::string("starting the next epoch");
    spdlog::warn("rank {}: the checkpoint was written by {} rank(s), this job has {}: {}, {}",
                 rank_, saved_world_size, world_size_, position,
                 rank_ > 0 ? "with this rank's random generator re-derived from the seed and step"
                           : "with rank 0's random generator");
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
  examples_in_epoch_ = examples_in_epoch;
  epoch_loss_sum_ = epoch_loss_sum;
}

}  // namespace sample_trainer
