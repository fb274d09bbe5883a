#pragma once

#include <ckpt/state_dict.h>
#include <ckpt/s3_storage.h>
#include <ckpt/storage.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace boost {
namespace program_options {
class options_description;
}  // namespace program_options
}  // namespace boost

namespace ckpt {

/// Options of DefaultCheckpointer: PyMarlin's `DefaultCheckpointerArguments`, field for field.
struct DefaultCheckpointerArguments {
  /// Master switch: when false nothing is ever written, not even with `force`. Default: true.
  bool checkpoint = true;
  /// At construction, delete this checkpointer's own files (names `{file_prefix}_{N}.{file_ext}`
  /// and `{file_prefix}_model_{N}.{file_ext}`) from `save_dir` and `model_state_save_dir`, top
  /// level only. Other files are never touched. Default: false.
  bool delete_existing_checkpoints = false;
  /// Save every `period` indexes (epochs): when `index % period == 0`. Must be >= 1. Default: 1.
  int64_t period = 1;
  /// Where checkpoints are written; created if missing. Default: `<cwd>/checkpoints`.
  std::filesystem::path save_dir = std::filesystem::current_path() / "checkpoints";
  /// Where save_model writes the weights; unset: `save_dir` (so setting only `save_dir` moves the
  /// weights too; see model_weights_dir()); empty disables save_model. Default: unset.
  std::optional<std::filesystem::path> model_state_save_dir;
  /// Where load() looks for a checkpoint; unset means start fresh. Default: unset.
  std::optional<std::filesystem::path> load_dir;
  /// A file name inside `load_dir` to load instead of the newest checkpoint. Default: unset.
  std::optional<std::string> load_filename;
  /// The device load() puts the tensors on, as torch.load's map_location given a device:
  /// "cpu", "cuda", "cuda:1", ... whatever device the file says they were saved from. It must
  /// exist in this process. Default: "cpu".
  std::string map_location = "cpu";
  /// First part of every file name. Default: "model".
  std::string file_prefix = "model";
  /// File extension, without the dot. Default: "pt".
  std::string file_ext = "pt";
  /// Format of the files save_model writes: "pt" (the torch.save zip, named
  /// `{file_prefix}_model_{N}.{file_ext}`) or "safetensors" (named
  /// `{file_prefix}_model_{N}.safetensors` whatever `file_ext` is; see ckpt/safetensors.h).
  /// Checkpoints are always "pt". Default: "pt".
  std::string model_format = "pt";
  /// Level of ckpt's logger: trace, debug, info, warning, error, critical, off. Default: "INFO".
  std::string log_level = "INFO";
  /// Save in the background: save() copies the state into staging memory (reused from one save
  /// to the next, as large as the largest checkpoint) and returns; one background thread writes
  /// the file exactly as a synchronous save would. One save is in flight at a time: the next
  /// save() waits for it. A background failure is thrown by the next save(), save_model(), load(),
  /// check() or wait(). Default: false.
  bool async = false;
  /// With `async`: save() does not wait for the copy into staging memory either; the copy runs on
  /// the background thread, overlapping whatever the caller does next, and the caller must call
  /// wait_staged() before it changes any tensor of the saved checkpoint (the sample trainer does,
  /// before every optimizer step). Off by default because code written for `async` alone may
  /// change the tensors as soon as save() returns, which would tear the file. Default: false.
  bool stage_in_background = false;

  // ---- When to save (besides every `period` epochs) ----
  /// Also save every N optimizer steps (global step % N == 0), mid-epoch as
  /// `{file_prefix}_{epoch}_step_{step}.{file_ext}`. 0: off. Default: 0.
  int64_t every_n_train_steps = 0;
  /// Also save when this many seconds of training have passed since the last save. 0: off.
  /// Default: 0.
  double train_time_interval = 0;
  /// On SIGTERM or SIGINT the trainer finishes the step, saves, and exits with code 3 (a second
  /// signal exits at once). false: the signals keep their default action. Default: true.
  bool save_on_signal = true;

  // ---- What to keep ----
  /// Keep only the newest N resumable checkpoints in `save_dir` (epoch and step checkpoints, not
  /// best ones); older ones of ours are deleted once the new one is durable. 0: keep all.
  /// Default: 0.
  int64_t keep_last_n = 0;
  /// Also keep the K best checkpoints by `monitor` as `{file_prefix}_best_{index}.{file_ext}`, a
  /// pool separate from the resumable ones. It does not follow `period`: every save() call's
  /// metrics are considered, due or not, so a best epoch is kept even when `period` skips it.
  /// 0: off. Default: 0.
  int64_t save_top_k = 0;
  /// The validation metric that ranks best checkpoints (e.g. val_loss, val_acc); required when
  /// save_top_k > 0. Default: empty.
  std::string monitor;
  /// "min" (lower is better) or "max". Default: "min".
  std::string mode = "min";
  /// Write `{file_prefix}_latest` in `save_dir` naming the newest complete checkpoint; load()
  /// prefers it when it is valid. Default: true.
  bool latest_pointer = true;
  /// Periodic and step checkpoints hold the module state only (no optimizer, scheduler or
  /// position): smaller, but a resume from one restarts training with those weights.
  /// Default: false.
  bool save_weights_only = false;
  /// A checkpoint whose registered states (Trainer::register_for_checkpointing) do not match the
  /// registered names is an error; false: a warning. Default: true.
  bool strict_registered_state = true;
  /// Disk pre-flight: a save needs the checkpoint's expected size plus this many MiB free in
  /// `save_dir`, after retention has freed what it may; otherwise it fails before writing.
  /// Default: 1.
  double disk_margin_mb = 1;

  // ---- When a save fails (the storage refuses it: full disk, I/O error, S3 outage past its
  // retries; a checkpoint that cannot be serialized at all is always thrown at once) ----
  /// "continue": the failure is logged as an error naming the index, the reason and the last
  /// durable checkpoint; save() returns nothing and training goes on; the next due save tries
  /// again; retention deletes nothing until a save succeeds. Training is stopped (CheckpointError
  /// naming the last durable checkpoint) after `max_save_failures` failures in a row, or when
  /// none has been durable for `max_unsaved_seconds`. A forced save (the end of training, a stop
  /// on a signal) and save_model must land: they are tried again at once until they succeed or
  /// that limit stops them. "stop": every failure is thrown, as PyMarlin, Lightning and DCP do.
  /// Default: "continue" (see docs/reliability.md for why).
  std::string on_save_failure = "continue";
  /// With "continue": stop after this many failed saves in a row (>= 1). Default: 3.
  int64_t max_save_failures = 3;
  /// With "continue": stop at a failed save when no checkpoint has been durable for this many
  /// seconds (since the last durable save, or since construction). 0: no limit. Default: 0.
  double max_unsaved_seconds = 0;

  /// S3 (locations `s3://bucket/prefix`; see ckpt/s3_storage.h): bytes per multipart part and
  /// per ranged GET, in MiB (at least 5). Default: 8.
  int64_t s3_part_size_mb = 8;
  /// S3: parts or ranges of one file in flight at once; a save's memory is about this many parts.
  /// Default: 8.
  int64_t s3_concurrency = 8;
  /// S3: caps the tries per request for transient failures (connection errors, timeouts, HTTP
  /// 5xx, SlowDown); 0: no cap, `s3_retry_seconds` decides; 1: no retries. Default: 0.
  int64_t s3_max_attempts = 0;
  /// S3: the retry budget per request. Transient failures are retried with exponential backoff
  /// and full jitter (the n-th wait is random below min(20 s, 2^(n-1) s)) until this many seconds
  /// have passed since the request's first try. Default: 60.
  double s3_retry_seconds = 60;
  /// S3: a request that moves no byte for this many seconds fails (and is retried); also the
  /// connect timeout. Default: 30.
  double s3_timeout_seconds = 30;
  /// S3 addressing: path, virtual, or auto (virtual on AWS, path on any other endpoint).
  /// Default: "auto".
  std::string s3_addressing = "auto";

  /// Where save_model writes: `model_state_save_dir` if set (empty: nowhere, save_model is off),
  /// else `save_dir`.
  std::filesystem::path model_weights_dir() const {
    return model_state_save_dir ? *model_state_save_dir : save_dir;
  }

  /// The S3Options these fields describe.
  S3Options s3_options() const;

  /// Throws CheckpointError naming the field and value if an option is out of range (including
  /// save_top_k without monitor, and mode other than min/max), if
  /// `save_dir` or `model_state_save_dir` is an existing non-directory or a location `storage`
  /// does not take (e.g. `s3://...` for the local filesystem), or if `load_filename` is
  /// set without `load_dir` or names no existing file (checked here so that a typo is refused
  /// before `delete_existing_checkpoints` deletes anything). Also applies `log_level` to ckpt's
  /// logger.
  void validate(Storage& storage = *Storage::by_location()) const;
};

/// Binds every DefaultCheckpointerArguments field to `--<prefix>.<field>`, with help text and
/// defaults, writing parsed values into `args` on `boost::program_options::notify`. The defaults
/// are the values `args` holds when this is called: a field the program set before (say
/// `args.save_dir = "runs/a"`) keeps that value unless the command line or config file sets it,
/// and `--help` shows it. A config file
/// parsed with the same description takes the same names from a `[<prefix>]` section. Bools accept
/// true/false/yes/no/1/0 (and on/off). `args` must outlive the parse.
///
///   ckpt::DefaultCheckpointerArguments args;
///   po::options_description desc;
///   desc.add(ckpt::default_checkpointer_options(args));
///   po::variables_map vm;
///   po::store(po::parse_command_line(argc, argv, desc), vm);     // command line first: it wins
///   po::store(po::parse_config_file<char>("run.ini", desc), vm);  // then [chkp] from the file
///   po::notify(vm);
///   args.validate();
boost::program_options::options_description default_checkpointer_options(
    DefaultCheckpointerArguments& args, const std::string& prefix = "chkp");

/// The resolved options as a flat dict keyed by flag name without the dashes
/// (`<prefix>.period`, ...), as stored in a checkpoint's hyperparameters.
StateDict options_state(const DefaultCheckpointerArguments& args,
                        const std::string& prefix = "chkp");

}  // namespace ckpt
