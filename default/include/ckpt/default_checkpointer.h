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
  /// Level of ckpt's logger: trace, debug, info, warning, error, critical, off. Default: "INFO".
  std::string log_level = "INFO";
  /// Save in the background: save() copies the state into staging memory (reused from one save
  /// to the next, as large as the largest checkpoint) and returns; one background thread writes
  /// the file exactly as a synchronous save would. One save is in flight at a time: the next
  /// save() waits for it. A background failure is thrown by the next save(), save_model(), load(),
  /// check() or wait(). Default: false.
  bool async = false;

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
  /// With `async`: first throws the failure of an earlier background save not yet reported (and
  /// then saves nothing); if it saves, waits for the save in flight, copies every tensor of
  /// `checkpoint` into the staging memory (a true snapshot: later changes to the tensors do not
  /// reach the file), queues the write and returns the path the file will have once durable.
  std::optional<std::filesystem::path> save(const Checkpoint& checkpoint, int64_t index,
                                            bool force = false) override;

  /// Returns once the save in flight (if any) is durable, and throws its CheckpointError if it
  /// failed and that was not reported yet (each failure is thrown once). Without `async`, nothing
  /// is ever in flight.
  void wait() override;

  /// The staging memory async saves copy into, in bytes: 0 before the first, then the size of
  /// the largest checkpoint saved (tensor bytes, each storage aligned to 64 bytes).
  uint64_t staging_bytes() const noexcept;

  /// Writes `{model_state_save_dir}/{file_prefix}_model_{index}.{file_ext}` (the raw module state
  /// dict) when `checkpoint` is on and `model_state_save_dir` is not empty. No period rule. With
  /// `async`, waits for the save in flight first (as wait()) and then writes synchronously.
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

  const DefaultCheckpointerArguments& args() const noexcept { return args_; }

 private:
  // The file to resume from (empty: start fresh), found by `accept`, which throws to reject.
  template <class Accept>
  std::filesystem::path choose(Accept&& accept);
  // The synchronous, durable write of checkpoint `index`: every save, in the foreground or in
  // the background thread, goes through it. Returns the path written.
  std::filesystem::path write_checkpoint(const Checkpoint& checkpoint, int64_t index);

  // The staging memory, the background thread and the save in flight (async only).
  struct Background;

  DefaultCheckpointerArguments args_;
  std::shared_ptr<Storage> storage_;
  std::unique_ptr<Background> background_;
};

}  // namespace ckpt
