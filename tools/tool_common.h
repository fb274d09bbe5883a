#pragma once
// Shared by the `ckpt` tool's subcommands: exit codes, argument parsing, reading any ckpt file,
// and formatting.

#include <ckpt/storage.h>

#include <ATen/core/ivalue.h>
#include <boost/program_options.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace ckpt::tool {

constexpr int kExitOk = 0;
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

/// A bad argument (exit 2); the message names the flag or path.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// A subcommand: its name, one line for `ckpt --help`, and its entry point.
struct Command {
  const char* name;
  const char* summary;
  std::function<int(const std::vector<std::string>& args)> run;
};

/// Parses `args` (the words after the subcommand) against `options` plus `-h/--help`, with
/// `positional` naming the positional arguments in order (the last may repeat if its count is -1).
/// Returns false after printing `usage` and the options when --help was given. Throws UsageError
/// for anything Boost.Program_options refuses, or for a missing positional argument.
bool parse_arguments(const std::vector<std::string>& args,
                     boost::program_options::options_description& options,
                     const std::vector<std::pair<std::string, int>>& positional,
                     const std::string& usage, boost::program_options::variables_map& vm);

/// The file kinds the tool reads.
enum class FileKind { kTorchZip, kSafetensors };

FileKind kind_of(const std::filesystem::path& path);

/// The storage every FILE and DIR argument is read and written through: the local filesystem for
/// paths, S3 for s3:// URLs (configured from the AWS environment; Storage::by_location).
Storage& storage();
const char* kind_name(FileKind kind);

/// Throws UsageError if `path` does not exist, or is not a regular file (`want_dir` false) / a
/// directory (`want_dir` true). `what` names the argument in the message.
void require_path(const std::filesystem::path& path, bool want_dir, const std::string& what);

/// Checks a file the way DefaultCheckpointer::check() does (checksums, structure, format version;
/// for safetensors the header bounds and the CRC-32 in `__metadata__`). Throws CheckpointError.
void verify_any(const std::filesystem::path& path);

/// Reads a torch.save/ckpt zip file or a safetensors file (a dict of tensors) into an IValue.
c10::IValue load_any(const std::filesystem::path& path);

/// The value at `key` in `path` (the whole file, verified, if `key` is empty). For a torch.save
/// zip only the records under `key` are read, each checked by its CRC-32 (CheckpointReader).
/// Throws UsageError for a missing key, CheckpointError for a bad file.
c10::IValue load_any_at(const std::filesystem::path& path, const std::string& key);
/// The value at `key` inside `root`: `/`-separated steps, each a dict key (string or int) or a
/// list/tuple index (dots are part of module keys: `module_interface_state/0.weight`). Throws
/// UsageError naming the step that does not exist and what is there instead.
c10::IValue at_key(const c10::IValue& root, const std::string& key, const std::string& file);

/// Calls `visit(path, leaf)` for every non-container value under `root`, depth first in order;
/// paths join steps with `/`. Empty containers are leaves.
void for_each_leaf(const c10::IValue& root, const std::string& path,
                   const std::function<void(const std::string&, const c10::IValue&)>& visit);

/// "float32", "int64", ... as Python prints a dtype without `torch.`.
std::string dtype_string(const at::Tensor& tensor);
/// "[128, 64]".
std::string shape_string(const at::Tensor& tensor);
/// A scalar or string as Python's repr would show it; containers as "dict (3)", "list (2)".
std::string value_string(const c10::IValue& value);
/// The value of a 0-dim tensor as Python prints its item(): "15.0", "3", "True"; nullopt for a
/// tensor with dimensions (or a complex one).
std::optional<std::string> item_string(const at::Tensor& tensor);
/// Why `path` failed (`error`, one line), naming the tensor key whose record is damaged where
/// the error names a record of a torch.save zip: "tensor at key K: checksum mismatch in record
/// 'data/7' ...".
std::string failure_with_key(const std::filesystem::path& path, const std::exception& error);
/// 1536 -> "1.5 KiB".
std::string human_bytes(uint64_t bytes);
/// File modification time as local "YYYY-MM-DD HH:MM:SS".
std::string modified_time(const std::filesystem::path& path);
/// The size of `path` in bytes, or nullopt if it cannot be read.
std::optional<uint64_t> stored_size(const std::filesystem::path& path);
/// `what` of an exception on one line (LibTorch errors without their backtrace).
std::string one_line(const std::exception& e);

int run_list(const std::vector<std::string>& args);
int run_inspect(const std::vector<std::string>& args);
int run_verify(const std::vector<std::string>& args);
int run_diff(const std::vector<std::string>& args);
int run_export(const std::vector<std::string>& args);
int run_prune(const std::vector<std::string>& args);

}  // namespace ckpt::tool
