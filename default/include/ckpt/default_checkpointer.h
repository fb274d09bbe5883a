#pragma once

#include <ckpt/abstract_checkpointer.h>
#include <ckpt/checkpoint.h>
#include <ckpt/state_dict.h>
#include <ckpt/storage.h>

#include <cstdint>
#include <filesystem>
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

  /// Throws CheckpointError naming the field and value if an option is out of range, if
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

/// The newest checkpoint under `load_dir` (searched recursively): the file whose name is exactly
/// `{file_prefix}_{N}.{file_ext}` with the largest non-negative integer N; ties (same N in several
/// folders) go to the lexicographically smallest path. Empty path if there is none or `load_dir`
/// does not exist. Temporaries of unfinished writes are never candidates.
std::filesystem::path get_latest_file(const std::filesystem::path& load_dir,
                                      const std::string& file_prefix = "model",
                                      const std::string& file_ext = "pt");

/// Every checkpoint under `load_dir` (recursively) named exactly `{file_prefix}_{N}.{file_ext}`,
/// newest first: by N descending, ties by path ascending. get_latest_file is its first element.
std::vector<std::filesystem::path> list_checkpoints(const std::filesystem::path& load_dir,
                                                    const std::string& file_prefix = "model",
                                                    const std::string& file_ext = "pt");

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
/// Thread safety: one thread at a time.
class DefaultCheckpointer final : public AbstractCheckpointer {
 public:
  /// Validates `args` (CheckpointError naming the bad field), removes temporaries that an
  /// interrupted save of this checkpointer left in `save_dir` and `model_state_save_dir`
  /// (`.<name>.ckpt-tmp-XXXXXX` where `<name>` is one of its own file names), and, with
  /// `delete_existing_checkpoints`, deletes this checkpointer's own files, logging each. Every
  /// write, fsync, rename and removal goes through `storage`.
  explicit DefaultCheckpointer(DefaultCheckpointerArguments args,
                               std::shared_ptr<Storage> storage = Storage::local());

  /// Writes `{save_dir}/{file_prefix}_{index}.{file_ext}` when
  /// `checkpoint && (index % period == 0 || force)` and returns its path; otherwise returns
  /// nothing. A negative index is an error. The same index again replaces the file atomically.
  std::optional<std::filesystem::path> save(const Checkpoint& checkpoint, int64_t index,
                                            bool force = false) override;

  /// Writes `{model_state_save_dir}/{file_prefix}_model_{index}.{file_ext}` (the raw module state
  /// dict; `.safetensors` in that format with `model_format` safetensors) when `checkpoint` is on
  /// and `model_state_save_dir` is not empty. No period rule.
  std::optional<std::filesystem::path> save_model(const StateDict& model_state,
                                                  int64_t index) override;

  /// Unset `load_dir`: empty Checkpoint. `load_dir` missing or without checkpoints: empty
  /// Checkpoint and a warning. `load_filename` set: exactly `{load_dir}/{load_filename}`, and a
  /// CheckpointError if that file does not exist or fails verification (no silent substitute).
  /// Otherwise the newest checkpoint (list_checkpoints) that verifies and loads: each newer file
  /// that does not is skipped with a warning saying why; if none loads, CheckpointError listing
  /// them. Every file is verified before use (see ckpt::verify_file). Tensors load onto the CPU.
  Checkpoint load() override;

  /// load() without restoring: the same choice of file and the same verification (checksums,
  /// structure, format version), without unpickling. Returns the file load() would resume from,
  /// or an empty path where load() would start fresh. Throws where load() would.
  std::filesystem::path check();

  const DefaultCheckpointerArguments& args() const noexcept { return args_; }

 private:
  // The file to resume from (empty: start fresh), found by `accept`, which throws to reject.
  template <class Accept>
  std::filesystem::path choose(Accept&& accept);

  DefaultCheckpointerArguments args_;
  std::shared_ptr<Storage> storage_;
};

}  // namespace ckpt
