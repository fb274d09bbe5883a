#pragma once

#include <ckpt/abstract_checkpointer.h>
#include <ckpt/checkpoint.h>
#include <ckpt/state_dict.h>
#include <ckpt/storage.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <string>
#include <vector>

namespace boost {
namespace program_options {
class options_description;
class variables_map;
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
  /// Where save_model writes the weights; empty disables save_model. Default: `<cwd>/checkpoints`.
  std::filesystem::path model_state_save_dir = std::filesystem::current_path() / "checkpoints";
  /// Where load() looks for a checkpoint; unset means start fresh. Default: unset.
  std::optional<std::filesystem::path> load_dir;
  /// A file name inside `load_dir` to load instead of the newest checkpoint. Default: unset.
  std::optional<std::string> load_filename;
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
  /// pool separate from the resumable ones. 0: off. Default: 0.
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

  /// Throws CheckpointError naming the field and value if an option is out of range (including
  /// save_top_k without monitor, and mode other than min/max), if
  /// `save_dir` or `model_state_save_dir` is an existing non-directory, or if `load_filename` is
  /// set without `load_dir` or names no existing file (checked here so that a typo is refused
  /// before `delete_existing_checkpoints` deletes anything). Also applies `log_level` to ckpt's
  /// logger.
  void validate() const;
};

/// Binds every DefaultCheckpointerArguments field to `--<prefix>.<field>`, with help text and
/// defaults, writing parsed values into `args` on `boost::program_options::notify`. A config file
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

/// A resumable checkpoint's place in the run, parsed from its file name:
/// `{prefix}_{index}.{ext}` (after epoch `index`) or `{prefix}_{index}_step_{step}.{ext}` (in
/// epoch `index`, after global step `step`). Ordered oldest first: within an index, step
/// checkpoints come before the epoch's own.
struct CheckpointName {
  int64_t index = 0;
  std::optional<int64_t> step;

  bool operator<(const CheckpointName& other) const noexcept;
  bool operator==(const CheckpointName& other) const noexcept {
    return index == other.index && step == other.step;
  }
  /// The file name for `prefix` and `ext`.
  std::string file_name(const std::string& prefix, const std::string& ext) const;
  /// The name's place, if `file_name` is exactly one of the two forms (N, S non-negative).
  static std::optional<CheckpointName> parse(const std::string& file_name,
                                             const std::string& prefix, const std::string& ext);
};

/// The newest checkpoint under `load_dir` (searched recursively): the file whose name is a
/// CheckpointName with the largest place; ties (same name in several folders) go to the
/// lexicographically smallest path. Empty path if there is none or `load_dir` does not exist.
/// Temporaries of unfinished writes and best checkpoints are never candidates.
std::filesystem::path get_latest_file(const std::filesystem::path& load_dir,
                                      const std::string& file_prefix = "model",
                                      const std::string& file_ext = "pt");

/// Every checkpoint under `load_dir` (recursively) whose name is a CheckpointName, newest first:
/// by place descending, ties by path ascending. get_latest_file is its first element.
std::vector<std::filesystem::path> list_checkpoints(const std::filesystem::path& load_dir,
                                                    const std::string& file_prefix = "model",
                                                    const std::string& file_ext = "pt");

/// What retention (`keep_last_n`) deletes in `dir`, oldest last: this prefix's resumable
/// checkpoints directly in `dir` (CheckpointName), newest first, skipping the newest
/// `keep_last_n` that verify (`verifies`, default: verify_file; a file that does not verify is
/// neither counted nor returned), and files ckpt did not write (is_ckpt_file). Deletes nothing.
/// Throws CheckpointError if `keep_last_n` < 1 or `dir` cannot be listed.
std::vector<std::filesystem::path> retention_victims(
    const std::filesystem::path& dir, int64_t keep_last_n, const std::string& file_prefix = "model",
    const std::string& file_ext = "pt",
    const std::function<bool(const std::filesystem::path&)>& verifies = {});

/// Creates `path` and its parents if missing. Throws CheckpointError if it exists and is not a
/// directory, or cannot be created.
void check_mk_dir(const std::filesystem::path& path);

/// The file-based checkpointer: PyMarlin's `DefaultCheckpointer`, with its surprises fixed (see the
/// README's "Differences from PyMarlin").
///
///   ckpt::DefaultCheckpointerArguments args;
///   args.save_dir = "runs/a";
///   args.load_dir = "runs/a";
///   ckpt::DefaultCheckpointer checkpointer(args);
///   ckpt::Checkpoint resumed = checkpointer.load();     // empty on a fresh start
///   ...
///   checkpointer.save(checkpoint, epoch);                // runs/a/model_<epoch>.pt
///
/// With `args.async`, save() returns once the state is copied, and training may change the
/// parameters right away; call wait() before relying on the file:
///
///   args.async = true;
///   ckpt::DefaultCheckpointer checkpointer(args);
///   checkpointer.save(checkpoint, epoch);                // blocks only for the copy
///   optimizer.step();                                    // does not leak into the file
///   checkpointer.wait();                                 // durable; rethrows a failure
///
/// Thread safety: one thread at a time calls its members. With `async`, its own background thread
/// writes the files (through the Storage, concurrently with nothing else of this checkpointer).
class DefaultCheckpointer final : public AbstractCheckpointer {
 public:
  /// Validates `args` (CheckpointError naming the bad field), removes temporaries that an
  /// interrupted save of this checkpointer left in `save_dir` and `model_state_save_dir`
  /// (`.<name>.ckpt-tmp-XXXXXX` where `<name>` is one of its own file names), and, with
  /// `delete_existing_checkpoints`, deletes this checkpointer's own files, logging each. Every
  /// write, fsync, rename and removal goes through `storage`.
  explicit DefaultCheckpointer(DefaultCheckpointerArguments args,
                               std::shared_ptr<Storage> storage = Storage::local());

  /// Waits for a save in flight. A background failure that was never thrown is logged as an error
  /// on ckpt's logger (a destructor must not throw); call wait() first to handle it.
  ~DefaultCheckpointer() override;

  /// Writes `{save_dir}/{file_prefix}_{index}.{file_ext}` when
  /// `checkpoint && (index % period == 0 || force)` and returns its path; otherwise returns
  /// nothing. A negative index is an error. The same index again replaces the file atomically.
  ///
  /// Every write: disk pre-flight (see `disk_margin_mb`; may apply retention first, never
  /// deleting the newest resumable checkpoint), the atomic durable write, the latest pointer, then
  /// retention (`keep_last_n`). With `save_top_k`, the score `checkpoint.metadata["metrics"]
  /// [monitor]` is also considered for the best pool, whether or not the epoch is due (best files
  /// are written synchronously); a missing metric is a CheckpointError naming it and the metrics
  /// present.
  ///
  /// With `async`: first throws the failure of an earlier background save not yet reported (and
  /// then saves nothing); if it saves, waits for the save in flight, copies every tensor of
  /// `checkpoint` into the staging memory (a true snapshot: later changes to the tensors do not
  /// reach the file), queues the write (pre-flight, write, pointer and retention then run in the
  /// background) and returns the path the file will have once durable.
  std::optional<std::filesystem::path> save(const Checkpoint& checkpoint, int64_t index,
                                            bool force = false) override;

  /// True when `every_n_train_steps` divides the global step or `train_time_interval` seconds of
  /// training have passed since the last save.
  bool step_due(const TrainingProgress& progress) override;

  /// Writes `{save_dir}/{file_prefix}_{epoch}_step_{global_step}.{file_ext}` when checkpointing
  /// is on and `force || step_due(progress)`, with the same pre-flight, pointer and retention as
  /// save(), and in the background with `async` like save().
  std::optional<std::filesystem::path> save_step(const Checkpoint& checkpoint,
                                                 const TrainingProgress& progress,
                                                 bool force = false) override;

  /// Returns once the save in flight (if any) is durable, and throws its CheckpointError if it
  /// failed and that was not reported yet (each failure is thrown once). Without `async`, nothing
  /// is ever in flight.
  void wait() override;

  /// The staging memory async saves copy into, in bytes: 0 before the first, then the size of
  /// the largest checkpoint saved (tensor bytes, each storage aligned to 64 bytes).
  uint64_t staging_bytes() const noexcept;

  /// Writes `{model_state_save_dir}/{file_prefix}_model_{index}.{file_ext}` (the raw module state
  /// dict; `.safetensors` in that format with `model_format` safetensors) when `checkpoint` is on
  /// and `model_state_save_dir` is not empty. No period rule. With `async`, waits for the save in
  /// flight first (as wait()) and then writes synchronously.
  std::optional<std::filesystem::path> save_model(const StateDict& model_state,
                                                  int64_t index) override;

  /// Unset `load_dir`: empty Checkpoint. `load_dir` missing or without checkpoints: empty
  /// Checkpoint and a warning. `load_filename` set: exactly `{load_dir}/{load_filename}`, and a
  /// CheckpointError if that file does not exist or fails verification (no silent substitute).
  /// Otherwise the newest checkpoint (list_checkpoints) that verifies and loads: each newer file
  /// that does not is skipped with a warning saying why; if none loads, CheckpointError listing
  /// them. Every file is verified before use (see ckpt::verify_file). Tensors load onto the CPU.
  /// With `async`, waits for the save in flight first (as wait()).
  Checkpoint load() override;

  /// load() without restoring: the same choice of file and the same verification (checksums,
  /// structure, format version), without unpickling. Returns the file load() would resume from,
  /// or an empty path where load() would start fresh. Throws where load() would. With `async`,
  /// waits for the save in flight first (as wait()).
  std::filesystem::path check();

  /// One checkpoint of the best pool.
  struct Best {
    std::filesystem::path path;
    int64_t index = 0;
    double score = 0;
  };
  /// The best pool, best first (ties: the earlier index first). Rebuilt at construction from the
  /// best files in `save_dir` whose recorded monitor and mode match the current ones.
  const std::vector<Best>& best_checkpoints() const noexcept { return best_; }

  const DefaultCheckpointerArguments& args() const noexcept { return args_; }

 private:
  // The file to resume from (empty: start fresh), found by `accept`, which throws to reject.
  template <class Accept>
  std::filesystem::path choose(Accept&& accept);
  // Pre-flight, durable write, latest pointer, retention: every resumable save, in the
  // foreground or in the background thread, goes through it.
  std::filesystem::path write_resumable(const Checkpoint& checkpoint, const CheckpointName& name);
  // write_resumable now, or (async) snapshot and queue it. Returns the final path.
  std::filesystem::path write_or_submit(const Checkpoint& checkpoint, const CheckpointName& name);

  // The staging memory, the background thread and the save in flight (async only).
  struct Background;
  void preflight(const Checkpoint& checkpoint, const std::filesystem::path& path,
                 bool may_prune);
  // Deletes our resumable checkpoints beyond the newest `keep` that verify.
  void apply_retention(int64_t keep);
  bool verifies(const std::filesystem::path& path);
  void consider_best(const Checkpoint& checkpoint, int64_t index);
  void load_best_pool();
  bool better(double a, double b) const;
  std::optional<std::filesystem::path> pointed_checkpoint(const std::filesystem::path& dir,
                                                          const std::filesystem::path& newest);

  DefaultCheckpointerArguments args_;
  std::shared_ptr<Storage> storage_;
  double last_seen_seconds_ = 0;  // train_seconds of the latest step_due call
  double last_save_seconds_ = 0;  // train_seconds at the latest write
  std::vector<Best> best_;
  // Files known to verify: path -> (size, mtime) when verified.
  // Used only by write_resumable (so by the background thread when async).
  std::map<std::filesystem::path, std::pair<uintmax_t, int64_t>> verified_;
  std::unique_ptr<Background> background_;  // last: its thread uses the members above
};

}  // namespace ckpt
