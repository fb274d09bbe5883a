#include <sample_trainer/trainer.h>

#include <ckpt/checkpoint_error.h>
#include <ckpt/optimizer_state.h>

#include <spdlog/spdlog.h>
#include <torch/optim/optimizer.h>
#include <boost/program_options.hpp>

#include <chrono>
#include <sstream>
#include <stdexcept>

namespace po = boost::program_options;

namespace sample_trainer {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

const c10::IValue& list_at(const ckpt::StateDict& state, const std::string& key) {
  if (!state.contains(key)) {
    throw ckpt::CheckpointError("trainer_state: '" + key + "' is missing");
  }
  const c10::IValue& value = state.at(key);
  if (!value.isList()) {
    throw ckpt::CheckpointError("trainer_state: '" + key + "' must be a list, got " +
                                value.tagKind());
  }
  return value;
}

void check_count(const std::string& key, size_t in_checkpoint, size_t built) {
  if (in_checkpoint != built) {
    throw ckpt::CheckpointError("trainer_state: '" + key + "' has " +
                                std::to_string(in_checkpoint) + " entries but the module built " +
                                std::to_string(built) +
                                " (use --trainer.reset_optimizers_schedulers true to start them "
                                "afresh)");
  }
}

}  // namespace

void TrainerArguments::validate() const {
  if (epochs < 1) {
    throw std::invalid_argument("invalid epochs " + std::to_string(epochs) + ": must be >= 1");
  }
  if (seed < 0) {
    throw std::invalid_argument("invalid seed " + std::to_string(seed) + ": must be >= 0");
  }
  if (batch_size < 1) {
    throw std::invalid_argument("invalid batch_size " + std::to_string(batch_size) +
                                ": must be >= 1");
  }
  if (!(lr > 0)) {
    std::ostringstream message;
    message << "invalid lr " << lr << ": must be > 0";
    throw std::invalid_argument(message.str());
  }
}

po::options_description trainer_options(TrainerArguments& args, const std::string& prefix) {
  const TrainerArguments defaults;
  const std::string p = prefix + ".";
  po::options_description desc("Trainer options (" + prefix + ")");
  desc.add_options()((p + "epochs").c_str(),
                     po::value<int64_t>(&args.epochs)->default_value(defaults.epochs),
                     "epochs to train in total; a resumed run continues up to this")(
      (p + "seed").c_str(), po::value<int64_t>(&args.seed)->default_value(defaults.seed),
      "seed of the weights, dropout and data order")(
      (p + "batch_size").c_str(),
      po::value<int64_t>(&args.batch_size)->default_value(defaults.batch_size),
      "examples per batch")((p + "lr").c_str(),
                            po::value<double>(&args.lr)->default_value(defaults.lr, "0.003"),
                            "initial learning rate (Adam; halved every 3 epochs)")(
      (p + "reset_optimizers_schedulers").c_str(),
      po::value<bool>(&args.reset_optimizers_schedulers)
          ->default_value(defaults.reset_optimizers_schedulers, "false"),
      "on resume, start fresh optimizers and schedulers instead of loading theirs");
  return desc;
}

Trainer::Trainer(std::shared_ptr<TrainerBackend> backend, std::shared_ptr<ModuleInterface> module,
                 TrainerArguments args, std::shared_ptr<ckpt::AbstractCheckpointer> checkpointer)
    : args_(std::move(args)), backend_(std::move(backend)), module_(std::move(module)) {
  args_.validate();
  if (!backend_) throw std::invalid_argument("Trainer: no backend");
  if (!module_) throw std::invalid_argument("Trainer: no module");
  checkpointer_ = checkpointer
                      ? std::move(checkpointer)
                      : std::make_shared<ckpt::DefaultCheckpointer>(args_.checkpointer_args);
  const ckpt::Checkpoint loaded = checkpointer_->load();
  module_->update_state(loaded.module_interface_state);
  build_optimizers_schedulers(args_.epochs);
  update_state(loaded.trainer_state);
  backend_->init({module_, opt_.optimizers, opt_.schedulers, args_.batch_size,
                  static_cast<uint64_t>(args_.seed)});
  backend_->update_state(loaded.trainer_backend_state);
  if (loaded.trainer_state.empty()) {
    spdlog::info("starting fresh: epochs 0..{}", args_.epochs - 1);
  } else if (last_epoch_ + 1 < args_.epochs) {
    spdlog::info("resuming after epoch {}: epochs {}..{}", last_epoch_, last_epoch_ + 1,
                 args_.epochs - 1);
  } else {
    spdlog::info("checkpoint already at epoch {}: no epochs left to train (--trainer.epochs {})",
                 last_epoch_, args_.epochs);
  }
}

void Trainer::build_optimizers_schedulers(int64_t epochs) {
  const int64_t steps_per_epoch = (module_->train_size() + args_.batch_size - 1) / args_.batch_size;
  opt_ = module_->get_optimizers_schedulers({args_.lr, epochs, steps_per_epoch});
}

ckpt::StateDict Trainer::get_state() const {
  c10::impl::GenericList optimizers(c10::AnyType::get());
  for (const auto& optimizer : opt_.optimizers) {
    optimizers.push_back(ckpt::optimizer_state(*optimizer).to_ivalue());
  }
  c10::impl::GenericList schedulers(c10::AnyType::get());
  for (const auto& scheduler : opt_.schedulers)
    schedulers.push_back(scheduler->get_state().to_ivalue());
  ckpt::StateDict state;
  state.insert_or_assign("last_epoch", last_epoch_);
  state.insert_or_assign("optimizers", optimizers);
  state.insert_or_assign("schedulers", schedulers);
  return state;
}

void Trainer::update_state(const ckpt::StateDict& state) {
  if (state.empty()) return;
  if (!state.contains("last_epoch") || !state.at("last_epoch").isInt()) {
    throw ckpt::CheckpointError("trainer_state: 'last_epoch' is missing or not an int");
  }
  const int64_t last_epoch = state.at("last_epoch").toInt();
  if (last_epoch < -1) {
    throw ckpt::CheckpointError("trainer_state: 'last_epoch' must be >= -1, got " +
                                std::to_string(last_epoch));
  }
  if (args_.reset_optimizers_schedulers) {
    const int64_t remaining = std::max<int64_t>(args_.epochs - (last_epoch + 1), 0);
    spdlog::warn("resetting optimizers and schedulers for the remaining {} epochs", remaining);
    last_epoch_ = last_epoch;
    build_optimizers_schedulers(remaining);
    return;
  }
  const auto optimizers = list_at(state, "optimizers").toListRef();
  const auto schedulers = list_at(state, "schedulers").toListRef();
  check_count("optimizers", optimizers.size(), opt_.optimizers.size());
  check_count("schedulers", schedulers.size(), opt_.schedulers.size());
  for (size_t i = 0; i < optimizers.size(); ++i) {
    const std::string what = "trainer_state.optimizers[" + std::to_string(i) + "]";
    ckpt::load_optimizer_state(*opt_.optimizers[i],
                               ckpt::StateDict::from_ivalue(optimizers[i], what));
  }
  for (size_t i = 0; i < schedulers.size(); ++i) {
    const std::string what = "trainer_state.schedulers[" + std::to_string(i) + "]";
    opt_.schedulers[i]->update_state(ckpt::StateDict::from_ivalue(schedulers[i], what));
  }
  last_epoch_ = last_epoch;
}

ckpt::Checkpoint Trainer::checkpoint() const {
  return {module_->get_state(), get_state(), backend_->get_state()};
}

TrainResult Trainer::train(const ProgressCallback& progress) {
  TrainResult result;
  const auto start = Clock::now();
  for (int64_t epoch = last_epoch_ + 1; epoch < args_.epochs; ++epoch) {
    const auto epoch_start = Clock::now();
    EpochMetrics metrics;
    metrics.epoch = epoch;
    metrics.train_loss = backend_->train_epoch(epoch, progress);
    metrics.val = backend_->validate();
    metrics.seconds = seconds_since(epoch_start);
    last_epoch_ = epoch;
    spdlog::info("epoch={} train_loss={:.6f} val_loss={:.6f} val_acc={:.4f} ({}/{}) time={:.2f}s",
                 epoch, metrics.train_loss, metrics.val.loss, metrics.val.accuracy,
                 metrics.val.correct, metrics.val.examples, metrics.seconds);
    result.epochs.push_back(metrics);
    checkpointer_->save(checkpoint(), last_epoch_);
  }
  result.last_epoch = last_epoch_;
  result.final_val = result.epochs.empty() ? backend_->validate() : result.epochs.back().val;
  result.checkpoint_path = checkpointer_->save(checkpoint(), last_epoch_, /*force=*/true);
  result.model_path = checkpointer_->save_model(module_->get_state(), last_epoch_);
  checkpointer_->wait();  // a background save is durable, or its failure thrown, before we report
  spdlog::info("done: {} epochs in {:.2f}s, last_epoch={} val_acc={:.4f} ({}/{})",
               result.epochs.size(), seconds_since(start), result.last_epoch,
               result.final_val.accuracy, result.final_val.correct, result.final_val.examples);
  if (result.model_path) {
    spdlog::info("final weights exported to {}", result.model_path->string());
  } else {
    spdlog::info("final weights not exported (the checkpointer saved no model)");
  }
  return result;
}

}  // namespace sample_trainer
