// DefaultCheckpointer's lifecycle: construction, the save paths, load and check. The policies it
// composes live in files of their own: file_names (what is ours), retention, preflight, best_pool,
// latest_pointer and background_writer.
#include <ckpt/default_checkpointer.h>

#include <ckpt/checkpoint_error.h>
#include <ckpt/device.h>
#include <ckpt/logger.h>
#include <ckpt/safetensors.h>
#include <ckpt/serialization.h>

#include "background_writer.h"
#include "best_pool.h"
#include "file_names.h"
#include "latest_pointer.h"
#include "preflight.h"
#include "retention_policy.h"
#include "save_failures.h"
#include "verified_files.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <thread>

namespace ckpt {
namespace {

using Clock = std::chrono::steady_clock;

double elapsed_ms(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double megabytes(uint64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

// What a save writes of `checkpoint`: all of it, or with save_weights_only the module state (and
// the hyperparameters and metadata that describe it) alone.
Checkpoint as_written(const Checkpoint& checkpoint, const DefaultCheckpointerArguments& args) {
  Checkpoint written = checkpoint;
  if (args.save_weights_only) {
    written.trainer_state = {};
    written.trainer_backend_state = {};
    written.registered_state = {};
  }
  return written;
}

}  // namespace

// The policies, each given only what it needs; declared in the order they depend on each other.
struct DefaultCheckpointer::Policies {
  Policies(const DefaultCheckpointerArguments& args, Storage& storage)
      : names(args.file_prefix, args.file_ext, args.model_format),
        verified(storage),
        retention(storage, args.save_dir, names, verified),
        preflight(storage, args, retention),
        best(storage, args, names, preflight),
        pointer(storage, names),
        failures(args.on_save_failure == "continue", args.max_save_failures,
                 args.max_unsaved_seconds) {}

  detail::FileNames names;
  detail::VerifiedFiles verified;  // used by write_resumable only (the background thread's)
  detail::Retention retention;
  detail::Preflight preflight;
  detail::BestPool best;
  detail::LatestPointer pointer;
  detail::SaveFailures failures;  // shared with the background thread (it locks)
};

DefaultCheckpointer::DefaultCheckpointer(DefaultCheckpointerArguments args,
                                         std::shared_ptr<Storage> storage)
    : args_(std::move(args)), storage_(std::move(storage)) {
  if (!storage_) storage_ = storage_by_location(args_.s3_options());
  args_.validate(*storage_);
  map_location_ = existing_device(args_.map_location, "invalid map_location");
  policies_ = std::make_unique<Policies>(args_, *storage_);
  const auto& names = policies_->names;
  std::vector<std::filesystem::path> dirs{args_.save_dir};
  const auto model_dir = args_.model_weights_dir();
  if (!model_dir.empty() && model_dir != args_.save_dir) dirs.push_back(model_dir);
  for (const auto& dir : dirs) {
    // Leftovers of interrupted saves: never complete, never candidates.
    for (const auto& path : storage_->remove_unfinished_writes(
             dir, [&](const std::string& name) { return names.is_own(name); })) {
      logger()->info(
          "removed leftover temporary {} of an interrupted save (on S3: aborted its "
          "unfinished upload)",
          path.string());
    }
    if (!args_.delete_existing_checkpoints) continue;
    for (const auto& file : storage_->list(dir, /*recursive=*/false)) {
      if (!names.is_own(file.path.filename().string())) continue;
      storage_->remove(file.path);
      logger()->info("deleted existing checkpoint {}", file.path.string());
    }
  }
  if (args_.checkpoint && args_.save_top_k > 0) policies_->best.load();
  if (args_.async) {
    background_ = std::make_unique<detail::BackgroundWriter>(
        [this](const Checkpoint& snapshot, const CheckpointName& name, bool must_land) {
          write_under_policy(snapshot, name, must_land);
        });
  }
}

DefaultCheckpointer::~DefaultCheckpointer() {
  if (!background_) return;
  try {
    background_->wait_idle();
    const std::string failure = background_->pending_failure();
    if (!failure.empty()) {
      logger()->error("a background save failed and nobody called wait() or save() again: {}",
                      failure);
    }
    background_.reset();
  } catch (...) {
    // Logging failed too; a destructor must not throw.
  }
}

const std::vector<DefaultCheckpointer::Best>& DefaultCheckpointer::best_checkpoints()
    const noexcept {
  return policies_->best.entries();
}

std::optional<std::filesystem::path> DefaultCheckpointer::save(const Checkpoint& checkpoint,
                                                               int64_t index, bool force) {
  if (index < 0) {
    throw CheckpointError("invalid checkpoint index " + std::to_string(index) + ": must be >= 0");
  }
  if (background_) background_->rethrow_failure();  // a finished failure, without waiting
  const bool must_land = force && !trigger_due_;  // forced, and not by step_due: final or stop
  trigger_due_ = false;
  if (!args_.checkpoint) return std::nullopt;
  std::optional<std::filesystem::path> path;
  if (index % args_.period == 0 || force) {
    path = write_or_submit(checkpoint, CheckpointName{index, std::nullopt}, must_land);
  }
  if (args_.save_top_k > 0) {
    try {
      policies_->best.consider(checkpoint, as_written(checkpoint, args_), index);
    } catch (const CheckpointError& e) {
      // The best pool is a copy beside the resumable checkpoints, which the policy guards: a
      // failure to add to it is reported, and counts toward no limit.
      if (e.error_number() == 0 || args_.on_save_failure != "continue") throw;
      logger()->error("could not add checkpoint {} to the best pool; training goes on: {}", index,
                      e.what());
    }
  }
  return path;
}

std::optional<std::filesystem::path> DefaultCheckpointer::under_policy(
    const std::string& what, bool must_land, bool resumable,
    const std::function<std::filesystem::path()>& write) {
  for (;;) {
    try {
      const std::filesystem::path path = write();
      policies_->failures.landed(path, resumable);
      return path;
    } catch (const CheckpointError& e) {
      // errno 0: the checkpoint itself cannot be written (an unsupported value, a missing
      // metric), which no retry and no later save can change.
      if (e.error_number() == 0) throw;
      policies_->failures.failed(what, e);  // throws when training must stop
      if (!must_land) return std::nullopt;
      logger()->warn("{} must land (it is forced, or the final weights): trying again in {} s",
                     what, kMustLandPauseSeconds);
      std::this_thread::sleep_for(std::chrono::seconds(kMustLandPauseSeconds));
    }
  }
}

std::optional<std::filesystem::path> DefaultCheckpointer::write_under_policy(
    const Checkpoint& checkpoint, const CheckpointName& name, bool must_land) {
  const auto path = args_.save_dir / policies_->names.resumable(name);
  return under_policy("saving checkpoint " + path.string(), must_land, /*resumable=*/true,
                      [&] { return write_resumable(checkpoint, name); });
}

std::optional<std::filesystem::path> DefaultCheckpointer::write_or_submit(
    const Checkpoint& checkpoint, const CheckpointName& name, bool must_land) {
  last_save_seconds_ = last_seen_seconds_;  // the time trigger counts from here
  if (!background_) return write_under_policy(checkpoint, name, must_land);
  wait();  // one save in flight: the staging memory is free once it is done
  const auto start = Clock::now();
  background_->submit(checkpoint, name, args_.stage_in_background, must_land);
  const std::string file_name = policies_->names.resumable(name);
  if (!args_.stage_in_background) {
    logger()->debug("copied checkpoint {} for a background save ({:.2f} MB in {:.1f} ms)",
                    file_name, megabytes(background_->staging_bytes()), elapsed_ms(start));
  }
  return args_.save_dir / file_name;
}

void DefaultCheckpointer::wait() {
  if (!background_) return;
  background_->wait_idle();
  background_->rethrow_failure();
}

void DefaultCheckpointer::wait_staged() {
  if (!background_) return;
  background_->wait_staged();
  background_->rethrow_failure();
}

uint64_t DefaultCheckpointer::staging_bytes() const noexcept {
  return background_ ? background_->staging_bytes() : 0;
}

bool DefaultCheckpointer::step_due(const TrainingProgress& progress) {
  last_seen_seconds_ = progress.train_seconds;
  const int64_t n = args_.every_n_train_steps;
  const double interval = args_.train_time_interval;
  trigger_due_ = args_.checkpoint &&
                 ((n > 0 && progress.global_step > 0 && progress.global_step % n == 0) ||
                  (interval > 0 && progress.train_seconds - last_save_seconds_ >= interval));
  return trigger_due_;
}

std::optional<SaveHealth> DefaultCheckpointer::save_health() const {
  return policies_->failures.health();
}

std::optional<std::filesystem::path> DefaultCheckpointer::save_step(
    const Checkpoint& checkpoint, const TrainingProgress& progress, bool force) {
  if (progress.epoch < 0 || progress.global_step < 0) {
    throw CheckpointError("invalid step checkpoint: epoch " + std::to_string(progress.epoch) +
                          ", global step " + std::to_string(progress.global_step) +
                          ": must be >= 0");
  }
  if (background_) background_->rethrow_failure();  // a finished failure, without waiting
  const bool must_land = force && !trigger_due_;  // forced, and not by step_due: a stop
  trigger_due_ = false;
  if (!args_.checkpoint || !(force || step_due(progress))) return std::nullopt;
  trigger_due_ = false;
  return write_or_submit(checkpoint, CheckpointName{progress.epoch, progress.global_step},
                         must_land);
}

std::filesystem::path DefaultCheckpointer::write_resumable(const Checkpoint& checkpoint,
                                                           const CheckpointName& name) {
  const bool failing = policies_->failures.failing();
  if (failing) {
    // The failed save may have left an unfinished upload (its abort failed too, in the same
    // outage): abort it now rather than at the next start.
    try {
      for (const auto& leftover : storage_->remove_unfinished_writes(
               args_.save_dir,
               [&](const std::string& file) { return policies_->names.is_own(file); })) {
        logger()->info("removed leftover temporary {} of the failed save", leftover.string());
      }
    } catch (const CheckpointError& e) {
      logger()->warn("could not remove what the failed save left in {}: {}",
                     args_.save_dir.string(), e.what());
    }
  }
  check_mk_dir(args_.save_dir, *storage_);
  Checkpoint written = as_written(checkpoint, args_);
  const auto path = args_.save_dir / policies_->names.resumable(name);
  // While saves fail, retention deletes nothing: a pre-flight prune would not help a save that
  // fails anyway, and what it deletes may be the last that can be resumed.
  policies_->preflight.check(written, path, /*may_prune=*/!failing);
  const auto start = Clock::now();
  const uint64_t bytes = save_checkpoint_file(written, path, *storage_);
  policies_->verified.record(path);  // we computed its checksums while writing it
  if (name.step) {
    logger()->info("saved checkpoint index={} step={} to {} ({:.2f} MB in {:.1f} ms)", name.index,
                   *name.step, path.string(), megabytes(bytes), elapsed_ms(start));
  } else {
    logger()->info("saved checkpoint index={} to {} ({:.2f} MB in {:.1f} ms)", name.index,
                   path.string(), megabytes(bytes), elapsed_ms(start));
  }
  // The checkpoint is durable now; what follows only tidies up, and a failure there must not turn
  // a good save into an error: the next save tries again, from what is stored.
  if (args_.latest_pointer) {
    try {
      policies_->pointer.update(args_.save_dir);
    } catch (const CheckpointError& e) {
      logger()->warn("could not update the latest pointer in {}: {}", args_.save_dir.string(),
                     e.what());
    }
  }
  if (args_.keep_last_n > 0) {
    try {
      policies_->retention.apply(args_.keep_last_n);
    } catch (const CheckpointError& e) {
      logger()->warn("could not delete old checkpoints in {} (retried at the next save): {}",
                     args_.save_dir.string(), e.what());
    }
  }
  return path;
}

std::optional<std::filesystem::path> DefaultCheckpointer::save_model(const StateDict& model_state,
                                                                     int64_t index) {
  wait();
  const auto model_dir = args_.model_weights_dir();
  if (!args_.checkpoint || model_dir.empty()) return std::nullopt;
  if (index < 0) {
    throw CheckpointError("invalid model index " + std::to_string(index) + ": must be >= 0");
  }
  const auto path = model_dir / policies_->names.model(index);
  // The final weights must land: tried again until they do or the policy stops training.
  return under_policy("saving the model weights " + path.string(), /*must_land=*/true,
                      /*resumable=*/false, [&] {
                        check_mk_dir(model_dir, *storage_);
                        const auto start = Clock::now();
                        const uint64_t bytes =
                            args_.model_format == detail::kSafetensorsExt
                                ? save_safetensors_file(model_state, path, *storage_)
                                : save_state_file(model_state, path, *storage_);
                        logger()->info("saved model index={} to {} ({:.2f} MB in {:.1f} ms)",
                                       index, path.string(), megabytes(bytes), elapsed_ms(start));
                        return path;
                      });
}

template <class Accept>
std::filesystem::path DefaultCheckpointer::choose(Accept&& accept) {
  if (!args_.load_dir || args_.load_dir->empty()) {
    logger()->info("no load_dir set: starting fresh");
    return {};
  }
  const std::filesystem::path& dir = *args_.load_dir;
  if (args_.load_filename) {
    const auto path = dir / *args_.load_filename;
    if (!storage_->stat(path)) {
      throw CheckpointError("load_filename " + path.string() + " does not exist", path, ENOENT);
    }
    accept(path);  // the user named it: a failure is theirs to see, never substituted
    return path;
  }
  const auto info = storage_->stat(dir);
  if (!info) {
    logger()->warn("load_dir {} does not exist: no checkpoint found, starting fresh", dir.string());
    return {};
  }
  if (!info->is_directory) {
    throw CheckpointError("load_dir " + dir.string() + " is not a directory", dir, ENOTDIR);
  }
  const auto candidates = list_checkpoints(dir, args_.file_prefix, args_.file_ext, *storage_);
  if (candidates.empty()) {
    logger()->warn("no checkpoint {}_<N>.{} found in {}: starting fresh", args_.file_prefix,
                   args_.file_ext, dir.string());
    return {};
  }
  auto ordered = candidates;
  if (const auto pointed = policies_->pointer.pointed(dir, candidates.front())) {
    // Valid pointer: it names the newest; try it first (it is normally candidates.front()).
    ordered.erase(std::remove(ordered.begin(), ordered.end(), *pointed), ordered.end());
    ordered.insert(ordered.begin(), *pointed);
  }
  std::string reasons;
  for (const auto& path : ordered) {
    try {
      accept(path);
      return path;
    } catch (const CheckpointError& e) {
      logger()->warn("skipping checkpoint {}: {}", path.string(), e.what());
      reasons += "\n  " + std::string(e.what());
    }
  }
  throw CheckpointError("none of the " + std::to_string(candidates.size()) + " checkpoints in " +
                            dir.string() + " can be loaded:" + reasons,
                        dir);
}

Checkpoint DefaultCheckpointer::load() {
  loaded_path_.reset();
  wait();
  Checkpoint checkpoint;
  const auto start = Clock::now();
  const auto path = choose([&](const std::filesystem::path& candidate) {
    checkpoint = load_checkpoint_file(candidate, *storage_, map_location_);
  });
  if (path.empty()) return {};
  loaded_path_ = path;
  const auto info = storage_->stat(path);
  logger()->info("loaded checkpoint {} ({:.2f} MB in {:.1f} ms)", path.string(),
                 megabytes(info ? info->size : 0), elapsed_ms(start));
  return checkpoint;
}

std::filesystem::path DefaultCheckpointer::check() {
  wait();
  const auto path =
      choose([this](const std::filesystem::path& candidate) { verify_file(candidate, *storage_); });
  if (!path.empty()) logger()->info("verified checkpoint {}", path.string());
  return path;
}

}  // namespace ckpt
