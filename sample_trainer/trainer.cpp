#include <sample_trainer/trainer.h>

#include <ckpt/checkpoint_error.h>
#include <ckpt/device.h>
#include <ckpt/optimizer_state.h>
#include <ckpt/trainer_state.h>

#include <spdlog/spdlog.h>
#include <torch/optim/optimizer.h>
#include <boost/program_options.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <sstream>

#include <signal.h>
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

// A double as `--help` shows it: 0.003, not 0.0030000000000000001.
std::string shortest(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void on_stop_signal(int signal) {
  if (g_stop_signal != 0) {  // second signal: stop now
    std::signal(signal, SIG_DFL);
    std::raise(signal);
    return;
  }
  g_stop_signal = signal;
}

std::string describe(const c10::IValue& value) {
  if (value.isNone()) return "unset";
  if (value.isString()) return "'" + value.toStringRef() + "'";
  if (value.isDouble()) return fmt::format("{}", value.toDouble());  // shortest exact form
  if (value.isBool()) return value.toBool() ? "true" : "false";
  std::ostringstream out;
  out << value;
  return out.str();
}

}  // namespace

std::function<bool()> install_stop_signal_handlers() {
  g_stop_signal = 0;
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  for (int signal : {SIGTERM, SIGINT}) {
    if (sigaction(signal, &action, nullptr) != 0) {
      throw std::runtime_error(std::string("cannot install a handler for ") + strsignal(signal) +
                               ": " + std::strerror(errno));
    }
  }
  return [] { return g_stop_signal != 0; };
}

int stop_signal() noexcept { return g_stop_signal; }

ckpt::StateDict trainer_options_state(const TrainerArguments& args, const std::string& prefix) {
  const std::string p = prefix + ".";
  ckpt::StateDict state;
  state.insert_or_assign(p + "epochs", args.epochs);
  state.insert_or_assign(p + "seed", args.seed);
  state.insert_or_assign(p + "batch_size", args.batch_size);
  state.insert_or_assign(p + "lr", args.lr);
  state.insert_or_assign(p + "reset_optimizers_schedulers", args.reset_optimizers_schedulers);
  state.insert_or_assign(p + "device", args.device);
  return state;
}

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
  try {
    ckpt::existing_device(device, "invalid device '" + device + "'");
  } catch (const ckpt::CheckpointError& e) {
    throw std::invalid_argument(e.what());
  }
}

po::options_description trainer_options(TrainerArguments& args, const std::string& prefix) {
  const TrainerArguments defaults = args;  // a program's presets are the defaults
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
                            po::value<double>(&args.lr)->default_value(defaults.lr, shortest(defaults.lr)),
                            "initial learning rate (Adam; halved every 3 epochs)")(
      (p + "reset_optimizers_schedulers").c_str(),
      po::value<bool>(&args.reset_optimizers_schedulers)
          ->default_value(defaults.reset_optimizers_schedulers,
                         defaults.reset_optimizers_schedulers ? "true" : "false"),
      "on resume, start fresh optimizers and schedulers instead of loading theirs")(
      (p + "device").c_str(), po::value<std::string>(&args.device)->default_value(defaults.device),
      "where the model, optimizer state and batches live: cpu, cuda, cuda:1, ...");
  return desc;
}

Trainer::Trainer(std::shared_ptr<TrainerBackend> backend, std::shared_ptr<ModuleInterface> module,
                 TrainerArguments args, std::shared_ptr<ckpt::AbstractCheckpointer> checkpointer)
    : args_(std::move(args)), backend_(std::move(backend)), module_(std::move(module)) {
  args_.validate();
  if (!backend_) throw std::invalid_argument("Trainer: no backend");
  if (!module_) throw std::invalid_argument("Trainer: no module");
  module_->to(ckpt::existing_device(args_.device));
  checkpointer_ = checkpointer
                      ? std::move(checkpointer)
                      : std::make_shared<ckpt::DefaultCheckpointer>(args_.checkpointer_args);
  const ckpt::Checkpoint loaded = checkpointer_->load();
  if (!loaded.hyperparameters.empty()) report_hyperparameter_drift(loaded.hyperparameters);
  module_->update_state(loaded.module_interface_state);
  build_optimizers_schedulers(args_.epochs);
  update_state(loaded.trainer_state);
  // The modules here change no saved tensor in their forward pass (no BatchNorm): waiting for a
  // background copy just before the optimizer step lets it overlap the forward and backward passes.
  backend_->init({module_, opt_.optimizers, opt_.schedulers, args_.batch_size,
                  static_cast<uint64_t>(args_.seed), [this] {
                    const auto start = Clock::now();
                    checkpointer_->wait_staged();
                    checkpoint_blocked_seconds_ += seconds_since(start);
                  }});
  backend_->update_state(loaded.trainer_backend_state);
  resumed_ = !loaded.trainer_state.empty();
  loaded_registered_ = loaded.registered_state;
  if (resumed_) last_saved_step_ = backend_->global_step();
  if (loaded.trainer_state.empty() && !loaded.module_interface_state.empty()) {
    spdlog::warn("the checkpoint holds weights only: training starts at epoch 0 from them");
  }
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
  // Optimizer buffers shared, like the module state: a checkpoint is written (or staged) before
  // the next step.
  return ckpt::trainer_state(last_epoch_, ckpt::live_objects(opt_.optimizers),
                             ckpt::live_objects(opt_.schedulers));
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
  ckpt::Checkpoint checkpoint;
  checkpoint.module_interface_state = module_->get_state();
  checkpoint.trainer_state = get_state();
  checkpoint.trainer_backend_state = backend_->get_state();
  for (const auto& [name, object] : registered_) {
    checkpoint.registered_state.insert_or_assign(name, object->get_state().to_ivalue());
  }
  checkpoint.hyperparameters = hyperparameters();
  return checkpoint;
}

ckpt::StateDict Trainer::hyperparameters() const {
  ckpt::StateDict options = trainer_options_state(args_);
  for (const auto& [key, value] : ckpt::options_state(args_.checkpointer_args)) {
    options.insert_or_assign(key, value);
  }
  return options;
}

const std::vector<std::string>& Trainer::metric_names() {
  static const std::vector<std::string> names{"train_loss", "val_loss", "val_acc"};
  return names;
}

void Trainer::report_hyperparameter_drift(const ckpt::StateDict& saved) const {
  const ckpt::StateDict now = hyperparameters();
  for (const auto& [key, value] : now) {
    if (!saved.contains(key)) {
      spdlog::warn("option {} is not in the checkpoint; now {}", key, describe(value));
    } else if (!(saved.at(key) == value)) {
      spdlog::warn("option {} differs from the checkpoint: {} there, {} now", key,
                   describe(saved.at(key)), describe(value));
    }
  }
  for (const auto& [key, value] : saved) {
    if (!now.contains(key)) {
      spdlog::warn("the checkpoint has option {} = {}, unknown to this trainer", key,
                   describe(value));
    }
  }
}

void Trainer::registered_mismatch(const std::string& message) const {
  if (args_.checkpointer_args.strict_registered_state) {
    throw ckpt::CheckpointError(message + " (--chkp.strict_registered_state false to continue)");
  }
  spdlog::warn("{}", message);
}

void Trainer::register_stateful(const std::string& name, std::shared_ptr<Stateful> object) {
  if (name.empty()) throw std::invalid_argument("register_for_checkpointing: empty name");
  for (const auto& entry : registered_) {
    if (entry.first == name) {
      throw std::invalid_argument("register_for_checkpointing: '" + name +
                                  "' is already registered");
    }
  }
  if (resumed_) {
    if (loaded_registered_.contains(name)) {
      object->update_state(
          ckpt::StateDict::from_ivalue(loaded_registered_.at(name), "registered_state." + name));
    } else {
      std::string present;
      for (const auto& entry : loaded_registered_) {
        present += (present.empty() ? "" : ", ") + entry.first;
      }
      registered_mismatch("the checkpoint has no registered state '" + name +
                          "' (it has: " + (present.empty() ? "none" : present) + ")");
    }
  }
  registered_.emplace_back(name, std::move(object));
}

void Trainer::check_unclaimed_registered_state() {
  if (!resumed_) return;
  for (const auto& entry : loaded_registered_) {
    const bool claimed = std::any_of(registered_.begin(), registered_.end(),
                                     [&](const auto& r) { return r.first == entry.first; });
    if (!claimed) {
      registered_mismatch("the checkpoint has registered state '" + entry.first +
                          "', but nothing is registered under that name");
    }
  }
  loaded_registered_ = {};  // checked once
}

TrainResult Trainer::train(const ProgressCallback& progress,
                           const std::function<bool()>& stop_requested) {
  check_unclaimed_registered_state();
  TrainResult result;
  const auto start = Clock::now();
  checkpoint_blocked_seconds_ = 0;  // time spent waiting for the checkpointer, not training
  const auto train_seconds = [&] { return seconds_since(start) - checkpoint_blocked_seconds_; };
  const auto blocked = [&](auto&& call) {
    const auto call_start = Clock::now();
    call();
    checkpoint_blocked_seconds_ += seconds_since(call_start);
  };
  double final_wait_seconds = 0;  // of those, waiting at the end for the last save's durability
  const auto final_wait = [&] {
    const auto wait_start = Clock::now();
    blocked([&] { checkpointer_->wait(); });
    final_wait_seconds += seconds_since(wait_start);
  };
  const auto finish = [&] {
    result.seconds = seconds_since(start);
    result.checkpoint_blocked_seconds = checkpoint_blocked_seconds_;
    result.checkpoint_final_wait_seconds = final_wait_seconds;
    spdlog::info(
        "checkpointing blocked training for {:.3f}s of {:.3f}s ({:.1f}%), {:.3f}s of it waiting "
        "at the end for the last save to be durable",
        result.checkpoint_blocked_seconds, result.seconds,
        result.seconds > 0 ? 100.0 * result.checkpoint_blocked_seconds / result.seconds : 0.0,
        final_wait_seconds);
    result.save_health = checkpointer_->save_health();
    if (const auto& health = result.save_health) {
      const auto log = health->failed_saves > 0 ? spdlog::level::warn : spdlog::level::info;
      spdlog::log(log,
                  "saves: {} failed and ridden out; longest stretch without a durable checkpoint "
                  "{:.1f}s; newest durable checkpoint {}",
                  health->failed_saves, health->longest_unsaved_seconds,
                  health->last_durable ? health->last_durable->string() : std::string("none"));
    }
  };
  // The newest checkpoint known to be durable, for the errors below.
  const auto newest_durable = [&] {
    const auto health = checkpointer_->save_health();
    const auto& path = health ? health->last_durable : last_saved_path_;
    return path ? path->string() : std::string("none");
  };
  // Under on_save_failure continue a failed save is counted, not thrown: after wait(), this says
  // whether the latest one failed.
  const auto last_save_failed = [&] {
    const auto health = checkpointer_->save_health();
    return health && health->failures_in_a_row > 0;
  };

  const auto stopping = [&] { return stop_requested && stop_requested(); };
  const auto saved = [&](Clock::time_point save_start,
                         const std::optional<std::filesystem::path>& path) {
    checkpoint_blocked_seconds_ += seconds_since(save_start);
    if (path) {
      last_saved_step_ = backend_->global_step();
      last_saved_path_ = path;
    }
  };
  const int64_t batches = backend_->batches_per_epoch();

  for (int64_t epoch = last_epoch_ + 1; epoch < args_.epochs; ++epoch) {
    const auto epoch_start = Clock::now();
    const auto after_step = [&](int64_t batch, int64_t epoch_batches, double loss) {
      if (progress) progress(batch, epoch_batches, loss);
      if (batch == epoch_batches) return false;  // the epoch's end is handled below
      const bool stop = stopping();
      const ckpt::TrainingProgress now{epoch, batch, epoch_batches, backend_->global_step(),
                                       train_seconds()};
      if (stop || checkpointer_->step_due(now)) {
        const auto save_start = Clock::now();
        saved(save_start, checkpointer_->save_step(checkpoint(), now, /*force=*/stop));
      }
      if (stop) {
        spdlog::warn("stop requested: stopped after step {} (batch {} of {} in epoch {})",
                     now.global_step, batch, epoch_batches, epoch);
      }
      return stop;
    };
    const std::optional<double> train_loss = backend_->train_epoch(epoch, after_step);
    if (!train_loss) {
      result.stopped = true;
      break;
    }
    EpochMetrics metrics;
    metrics.epoch = epoch;
    metrics.train_loss = *train_loss;
    metrics.val = backend_->validate();
    metrics.seconds = seconds_since(epoch_start);
    last_epoch_ = epoch;
    spdlog::info("epoch={} train_loss={:.6f} val_loss={:.6f} val_acc={:.4f} ({}/{}) time={:.2f}s",
                 epoch, metrics.train_loss, metrics.val.loss, metrics.val.accuracy,
                 metrics.val.correct, metrics.val.examples, metrics.seconds);
    result.epochs.push_back(metrics);

    const bool stop = stopping();
    const ckpt::TrainingProgress now{epoch, batches, batches, backend_->global_step(),
                                     train_seconds()};
    const bool step_due = checkpointer_->step_due(now);
    const auto save_start = Clock::now();
    saved(save_start, checkpointer_->save(checkpoint_with_metrics(metrics), last_epoch_,
                                          /*force=*/stop || step_due));
    if (stop) {
      spdlog::warn("stop requested: stopped after epoch {} (step {})", epoch, now.global_step);
      result.stopped = true;
      break;
    }
  }
  result.last_epoch = last_epoch_;
  result.global_step = backend_->global_step();
  if (result.stopped) {
    final_wait();  // the position is durable before train() says so
    if (last_save_failed()) {
      throw ckpt::CheckpointError(
          "stopped at step " + std::to_string(result.global_step) +
          ", but the checkpoint of that position was not saved (" +
          checkpointer_->save_health()->last_failure +
          "); a resume continues from the newest durable checkpoint, " + newest_durable());
    }
    result.checkpoint_path = last_saved_path_;
    finish();
    spdlog::info("stopped: {} epochs completed in {:.2f}s, step {}; newest checkpoint {}",
                 result.epochs.size(), seconds_since(start), result.global_step,
                 last_saved_path_ ? last_saved_path_->string() : std::string("none"));
    return result;
  }
  result.final_val = result.epochs.empty() ? backend_->validate() : result.epochs.back().val;
  const std::string finished = "training finished at epoch " + std::to_string(last_epoch_) +
                               " (step " + std::to_string(result.global_step) + ")";
  try {
    // A save of this step was accepted: it is durable, or has failed, before deciding whether the
    // final state is saved (the wait shows as the final wait, not as a save).
    bool saved_already = last_saved_step_ == backend_->global_step();
    if (saved_already) {
      final_wait();
      saved_already = !last_save_failed();
    }
    if (saved_already) {
      spdlog::info("final checkpoint: step {} is already saved{}", last_saved_step_,
                   last_saved_path_ ? " as " + last_saved_path_->string() : std::string());
      result.checkpoint_path = last_saved_path_;
    } else {
      ckpt::Checkpoint final_checkpoint = checkpoint();
      if (!result.epochs.empty()) final_checkpoint = checkpoint_with_metrics(result.epochs.back());
      // Forced: it must land, and a failure is thrown whatever on_save_failure says.
      blocked([&] {
        result.checkpoint_path = checkpointer_->save(final_checkpoint, last_epoch_, /*force=*/true);
      });
      final_wait();
    }
  } catch (const ckpt::CheckpointError& e) {
    throw ckpt::CheckpointError(finished + ", but its final checkpoint was not saved and the "
                                "final weights were not exported (newest durable checkpoint: " +
                                    newest_durable() + "): " + e.what(),
                                e.path(), e.error_number());
  }
  try {
    // The last checkpoint is durable before the weights are exported: a failed run exports
    // nothing.
    blocked(
        [&] { result.model_path = checkpointer_->save_model(module_->get_state(), last_epoch_); });
    blocked([&] { checkpointer_->wait(); });  // and the weights too, for a checkpointer that defers
  } catch (const ckpt::CheckpointError& e) {
    throw ckpt::CheckpointError(finished + " and its final checkpoint " + newest_durable() +
                                    " is durable, but the final weights were not exported: " +
                                    e.what(),
                                e.path(), e.error_number());
  }
  finish();
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

ckpt::Checkpoint Trainer::checkpoint_with_metrics(const EpochMetrics& metrics) const {
  ckpt::Checkpoint result = checkpoint();
  ckpt::set_metrics(result, {{"train_loss", metrics.train_loss},
                             {"val_loss", metrics.val.loss},
                             {"val_acc", metrics.val.accuracy}});
  return result;
}

}  // namespace sample_trainer
