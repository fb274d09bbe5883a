#include <ckpt/default_checkpointer_arguments.h>

#include <ckpt/checkpoint_error.h>
#include <ckpt/device.h>
#include <ckpt/logger.h>

#include "file_names.h"

#include <boost/program_options.hpp>

#include <cerrno>
#include <cmath>
#include <limits>
#include <sstream>
#include <variant>

namespace po = boost::program_options;

namespace ckpt {
namespace {

using Args = DefaultCheckpointerArguments;

// Every option once: its name (the flag after `--<prefix>.` and the key in a config file's
// `[<prefix>]` section and in the stored hyperparameters), the field, and its help text. The
// command-line binding and options_state are both generated from this table.
struct Option {
  const char* name;
  std::variant<bool Args::*, int64_t Args::*, double Args::*, std::string Args::*,
               std::filesystem::path Args::*, std::optional<std::filesystem::path> Args::*,
               std::optional<std::string> Args::*>
      field;
  const char* help;
};

const Option kOptions[] = {
    {"checkpoint", &Args::checkpoint,
     "save checkpoints at all (false: nothing is written, not even forced saves)"},
    {"delete_existing_checkpoints", &Args::delete_existing_checkpoints,
     "at start, delete this checkpointer's own files (<prefix>_<N>.<ext>, "
     "<prefix>_model_<N>.<ext>) from save_dir and model_state_save_dir"},
    {"period", &Args::period, "save when index (epoch) % period == 0; must be >= 1"},
    {"save_dir", &Args::save_dir, "directory for checkpoints (created if missing)"},
    {"model_state_save_dir", &Args::model_state_save_dir,
     "directory for the final model weights; unset: save_dir; empty disables them"},
    {"load_dir", &Args::load_dir,
     "directory to resume from (newest <prefix>_<N>.<ext>, searched recursively); "
     "unset: start fresh"},
    {"load_filename", &Args::load_filename,
     "file inside load_dir to resume from instead of the newest; must exist"},
    {"map_location", &Args::map_location,
     "device load() puts the tensors on, whatever device they were saved from: cpu, cuda, "
     "cuda:1, ...; must exist here"},
    {"file_prefix", &Args::file_prefix, "file name prefix"},
    {"file_ext", &Args::file_ext, "file extension, without the dot"},
    {"model_format", &Args::model_format,
     "format of the final model weights: pt, or safetensors (<prefix>_model_<N>.safetensors)"},
    {"log_level", &Args::log_level,
     "ckpt's log level: trace, debug, info, warning, error, critical, off"},
    {"every_n_train_steps", &Args::every_n_train_steps,
     "also save every N optimizer steps, mid-epoch as <prefix>_<epoch>_step_<step>.<ext>; "
     "0: off"},
    {"train_time_interval", &Args::train_time_interval,
     "also save after this many seconds of training since the last save; 0: off"},
    {"save_on_signal", &Args::save_on_signal,
     "on SIGTERM/SIGINT finish the step, save, and exit with code 3"},
    {"keep_last_n", &Args::keep_last_n,
     "keep only the newest N resumable checkpoints in save_dir; 0: keep all"},
    {"save_top_k", &Args::save_top_k,
     "also keep the K best checkpoints by monitor as <prefix>_best_<N>.<ext>, considering "
     "every epoch (period does not apply); 0: off"},
    {"monitor", &Args::monitor,
     "metric ranking the best checkpoints (sample trainer: val_loss, val_acc, train_loss)"},
    {"mode", &Args::mode, "min: lower monitor is better; max: higher is better"},
    {"latest_pointer", &Args::latest_pointer,
     "write <prefix>_latest naming the newest complete checkpoint"},
    {"save_weights_only", &Args::save_weights_only,
     "checkpoints hold the module state only (a resume from one restarts training)"},
    {"strict_registered_state", &Args::strict_registered_state,
     "registered states missing from or unknown to a checkpoint are an error (false: warning)"},
    {"disk_margin_mb", &Args::disk_margin_mb,
     "a save needs its expected size plus this many MiB free, or fails before writing"},
    {"async", &Args::async,
     "save in the background: save() blocks only while it copies the state; one save in "
     "flight, its failure thrown by the next call"},
    {"stage_in_background", &Args::stage_in_background,
     "with async: save() returns before copying the state too; the trainer calls wait_staged() "
     "before it next changes a saved tensor (the sample trainer: before each optimizer step)"},
    {"on_save_failure", &Args::on_save_failure,
     "when the storage refuses a save: continue (log it, train on, save again at the next "
     "trigger; stop after max_save_failures in a row or max_unsaved_seconds without a durable "
     "checkpoint; forced and final saves must still land) or stop (throw at once)"},
    {"max_save_failures", &Args::max_save_failures,
     "with on_save_failure continue: stop training after this many failed saves in a row"},
    {"max_unsaved_seconds", &Args::max_unsaved_seconds,
     "with on_save_failure continue: stop training at a failed save when no checkpoint has "
     "been durable for this many seconds; 0: no limit"},
    {"s3_part_size_mb", &Args::s3_part_size_mb,
     "S3: MiB per multipart part and per ranged GET (>= 5); a file up to one part is one PUT"},
    {"s3_concurrency", &Args::s3_concurrency,
     "S3: parts or ranges of one file in flight at once (a save holds about this many parts)"},
    {"s3_max_attempts", &Args::s3_max_attempts,
     "S3: caps the tries per request for transient failures (connection errors, timeouts, "
     "5xx, SlowDown); 0: no cap, s3_retry_seconds decides; 1: no retries"},
    {"s3_retry_seconds", &Args::s3_retry_seconds,
     "S3: retry budget per request: transient failures are retried with exponential backoff "
     "and full jitter (at most 20 s per wait) until this many seconds have passed since its "
     "first try"},
    {"s3_timeout_seconds", &Args::s3_timeout_seconds,
     "S3: a request moving no byte for this many seconds fails and is retried; also the "
     "connect timeout"},
    {"s3_addressing", &Args::s3_addressing,
     "S3 addressing: path, virtual, or auto (virtual on AWS, path on other endpoints)"},
};

std::string shortest(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

// The binding of one field of `args`, showing the default of `defaults`.
struct Binder {
  Args& args;
  const Args& defaults;

  po::value_semantic* operator()(bool Args::*field) const {
    return po::value<bool>(&(args.*field))
        ->default_value(defaults.*field, defaults.*field ? "true" : "false");
  }
  po::value_semantic* operator()(int64_t Args::*field) const {
    return po::value<int64_t>(&(args.*field))->default_value(defaults.*field);
  }
  po::value_semantic* operator()(double Args::*field) const {
    return po::value<double>(&(args.*field))
        ->default_value(defaults.*field, shortest(defaults.*field));
  }
  po::value_semantic* operator()(std::string Args::*field) const {
    return po::value<std::string>(&(args.*field))->default_value(defaults.*field);
  }
  po::value_semantic* operator()(std::filesystem::path Args::*field) const {
    Args* target = &args;
    return po::value<std::string>()
        ->default_value((defaults.*field).string())
        ->notifier([target, field](const std::string& v) { target->*field = v; });
  }
  template <class T>
  po::value_semantic* operator()(std::optional<T> Args::*field) const {
    Args* target = &args;
    // model_state_save_dir: unset follows save_dir, and an empty value disables the weights.
    // The others: an empty value leaves them unset.
    bool empty_is_a_value = false;
    if constexpr (std::is_same_v<T, std::filesystem::path>) {
      empty_is_a_value = field == &Args::model_state_save_dir;
    }
    auto* value =
        po::value<std::string>()->notifier([target, field, empty_is_a_value](const std::string& v) {
          if (!v.empty() || empty_is_a_value) target->*field = T(v);
        });
    if (const auto& preset = defaults.*field) {
      const std::string text = std::filesystem::path(*preset).string();
      value->default_value(text, text.empty() ? "\"\"" : text);
    }
    return value;
  }
};

// The stored form of one field: what Python's json or torch.load would show.
struct Stored {
  const Args& args;

  template <class T>
  c10::IValue operator()(T Args::*field) const {
    const T& value = args.*field;
    if constexpr (std::is_same_v<T, std::filesystem::path>) {
      return value.string();
    } else if constexpr (std::is_same_v<T, std::optional<std::filesystem::path>> ||
                         std::is_same_v<T, std::optional<std::string>>) {
      if (!value) return c10::IValue();
      return std::filesystem::path(*value).string();
    } else {
      return value;
    }
  }
};

// `dir` (the option `field`) must be a directory or nothing, in a location `storage` takes.
void require_directory_or_nothing(Storage& storage, const std::filesystem::path& dir,
                                  const char* field) {
  std::optional<FileInfo> info;
  try {
    info = storage.stat(dir);
  } catch (const CheckpointError& e) {
    throw CheckpointError(std::string("invalid ") + field + " " + dir.string() + ": " + e.what(),
                          dir, e.error_number());
  }
  if (info && !info->is_directory) {
    throw CheckpointError(
        std::string("invalid ") + field + " " + dir.string() + ": exists and is not a directory",
        dir, ENOTDIR);
  }
}

}  // namespace

S3Options DefaultCheckpointerArguments::s3_options() const {
  S3Options options;
  // Only what the conversion itself needs is checked here (a MiB count that would overflow the
  // shift, counts beyond int); every range is S3Options::validate's, in one place.
  if (s3_part_size_mb < 5 || s3_part_size_mb > 5 * 1024) {
    throw CheckpointError("invalid s3_part_size_mb " + std::to_string(s3_part_size_mb) +
                          ": must be between 5 and 5120 (S3's limits for a part, in MiB)");
  }
  options.part_size = static_cast<uint64_t>(s3_part_size_mb) << 20;
  const auto as_int = [](int64_t value, const char* name) {
    if (value < std::numeric_limits<int>::min() || value > std::numeric_limits<int>::max()) {
      throw CheckpointError("invalid " + std::string(name) + " " + std::to_string(value) +
                            ": out of range");
    }
    return static_cast<int>(value);
  };
  options.concurrency = as_int(s3_concurrency, "s3_concurrency");
  options.max_attempts = as_int(s3_max_attempts, "s3_max_attempts");
  options.retry_seconds = s3_retry_seconds;
  options.timeout_seconds = s3_timeout_seconds;
  options.addressing = s3_addressing;
  options.validate();
  return options;
}

void DefaultCheckpointerArguments::validate(Storage& storage) const {
  s3_options();  // throws naming the s3_* field that is out of range
  if (period < 1) {
    throw CheckpointError("invalid period " + std::to_string(period) + ": must be >= 1");
  }
  existing_device(map_location, "invalid map_location '" + map_location + "'");
  if (file_prefix.empty()) throw CheckpointError("invalid file_prefix '': must not be empty");
  if (file_prefix.find('/') != std::string::npos) {
    throw CheckpointError("invalid file_prefix '" + file_prefix + "': must not contain '/'");
  }
  if (file_ext.empty() || file_ext.find('/') != std::string::npos || file_ext.front() == '.') {
    throw CheckpointError("invalid file_ext '" + file_ext +
                          "': must be a non-empty extension without the dot");
  }
  if (model_format != "pt" && model_format != detail::kSafetensorsExt) {
    throw CheckpointError("invalid model_format '" + model_format +
                          "': expected pt or safetensors");
  }
  if (stage_in_background && !async) {
    throw CheckpointError(
        "invalid stage_in_background true: it changes how an async save copies the state, and "
        "async is false (set async too, or leave stage_in_background off)");
  }
  if (save_dir.empty()) throw CheckpointError("invalid save_dir '': must not be empty");
  require_directory_or_nothing(storage, save_dir, "save_dir");
  if (const auto model_dir = model_weights_dir(); !model_dir.empty()) {
    require_directory_or_nothing(storage, model_dir, "model_state_save_dir");
  }
  if (load_filename && load_filename->empty()) {
    throw CheckpointError("invalid load_filename '': leave it unset instead");
  }
  // Checked here, before construction deletes anything, so that a typo loses nothing.
  if (load_filename && (!load_dir || load_dir->empty())) {
    throw CheckpointError("invalid load_filename '" + *load_filename +
                          "': it names a file inside load_dir, which is unset");
  }
  if (load_dir && !load_dir->empty()) {
    try {
      storage.stat(*load_dir);  // a location the storage does not take is refused here, by name
    } catch (const CheckpointError& e) {
      throw CheckpointError("invalid load_dir " + load_dir->string() + ": " + e.what(), *load_dir,
                            e.error_number());
    }
  }
  if (load_filename && !storage.stat(*load_dir / *load_filename)) {
    const auto path = *load_dir / *load_filename;
    throw CheckpointError("invalid load_filename " + path.string() + ": does not exist", path,
                          ENOENT);
  }
  if (every_n_train_steps < 0) {
    throw CheckpointError("invalid every_n_train_steps " + std::to_string(every_n_train_steps) +
                          ": must be >= 0 (0: off)");
  }
  if (!(train_time_interval >= 0) || !std::isfinite(train_time_interval)) {
    throw CheckpointError("invalid train_time_interval " + std::to_string(train_time_interval) +
                          ": must be a number of seconds >= 0 (0: off)");
  }
  if (keep_last_n < 0) {
    throw CheckpointError("invalid keep_last_n " + std::to_string(keep_last_n) +
                          ": must be >= 0 (0: keep all)");
  }
  if (save_top_k < 0) {
    throw CheckpointError("invalid save_top_k " + std::to_string(save_top_k) +
                          ": must be >= 0 (0: off)");
  }
  if (save_top_k > 0 && monitor.empty()) {
    throw CheckpointError("invalid save_top_k " + std::to_string(save_top_k) +
                          ": needs monitor, the metric that ranks checkpoints (e.g. val_loss)");
  }
  if (mode != "min" && mode != "max") {
    throw CheckpointError("invalid mode '" + mode + "': must be min or max");
  }
  if (!(disk_margin_mb >= 0) || !std::isfinite(disk_margin_mb)) {
    throw CheckpointError("invalid disk_margin_mb " + std::to_string(disk_margin_mb) +
                          ": must be >= 0");
  }
  if (on_save_failure != "continue" && on_save_failure != "stop") {
    throw CheckpointError("invalid on_save_failure '" + on_save_failure +
                          "': expected continue or stop");
  }
  if (max_save_failures < 1) {
    throw CheckpointError("invalid max_save_failures " + std::to_string(max_save_failures) +
                          ": must be >= 1");
  }
  if (!(max_unsaved_seconds >= 0) || !std::isfinite(max_unsaved_seconds)) {
    throw CheckpointError("invalid max_unsaved_seconds " + shortest(max_unsaved_seconds) +
                          ": must be a finite number of seconds >= 0 (0: no limit)");
  }
  // Throws naming the level if unknown; applying it here also makes the level take effect.
  set_log_level(log_level);
}

po::options_description default_checkpointer_options(DefaultCheckpointerArguments& args,
                                                     const std::string& prefix) {
  // What `args` holds now is the default: a program's presets survive a parse that does not
  // set them, and --help shows them.
  const DefaultCheckpointerArguments defaults = args;
  po::options_description desc("Checkpointer options (" + prefix + ")");
  auto add = desc.add_options();
  for (const Option& option : kOptions) {
    add((prefix + "." + option.name).c_str(), std::visit(Binder{args, defaults}, option.field),
        option.help);
  }
  return desc;
}

StateDict options_state(const DefaultCheckpointerArguments& args, const std::string& prefix) {
  StateDict state;
  for (const Option& option : kOptions) {
    state.insert_or_assign(prefix + "." + option.name, std::visit(Stored{args}, option.field));
  }
  return state;
}

}  // namespace ckpt
