#pragma once

#include <ckpt/checkpoint.h>
#include <ckpt/state_dict.h>
#include <ckpt/storage.h>

#include <ATen/core/ivalue.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <filesystem>
#include <string>

namespace ckpt {

/// The version of ckpt's file format, stored in every file ckpt writes (zip record
/// `ckpt_format_version`, which Python's `torch.load` ignores). Files from a newer format are
/// refused with a CheckpointError; files without the record (e.g. written by Python) are read.
inline constexpr int64_t kFormatVersion = 1;

/// Writes `value` to `path` in the zip container Python's `torch.save` writes: a protocol-2 pickle
/// (`data.pkl`) whose tensors refer to raw little-endian storage records (`data/0`, ...). Storages
/// shared between tensors are written once. Tensor bytes stream from the tensors' own memory to the
/// storage. The write is atomic and durable (Storage::create, WritableFile::commit; on the local
/// filesystem a temporary `.<name>.ckpt-tmp-XXXXXX` in the same directory is written, fsynced and
/// renamed over `path`, and the directory is fsynced); on failure nothing new is visible and
/// CheckpointError (naming `path` and the reason) is thrown, leaving any previous file at `path`
/// untouched. The parent directory must exist. Returns the bytes written.
uint64_t save_ivalue_file(const c10::IValue& value, const std::filesystem::path& path,
                          Storage& storage = *Storage::by_location());

/// If `filename` (a name, not a path) is a temporary of a save_ivalue_file that did not finish
/// (`.<name>.ckpt-tmp-XXXXXX`, LocalStorage's temporaries), returns `<name>`; otherwise an empty
/// string.
std::string temporary_target(const std::string& filename);

/// Reads a file written by save_ivalue_file or by Python's `torch.save` (dicts, OrderedDicts,
/// lists, tuples, ints, floats, bools, strings, None and CPU tensors). Only an allowlist of pickle
/// globals is accepted, in the spirit of `torch.load(weights_only=True)`:
/// `collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter`
/// and the `torch.*Storage` types. Anything else, or a malformed file, throws CheckpointError
/// naming `path`. The file is verified first (see verify_file). Tensors are CPU tensors that share
/// one buffer holding the file's bytes (no copy per tensor); the buffer is freed when the last of
/// them is. Reads go through `storage`.
///
/// `map_location`, as torch.load's given a device: the device the tensors are put on, whatever
/// device the file says they were saved from (Python GPU runs write "cuda:0"). The CPU by
/// default; any other device must exist here (a CheckpointError names it before anything is
/// read), and each storage is copied onto it once from the mapped file, so views keep sharing.
c10::IValue load_ivalue_file(const std::filesystem::path& path,
                             Storage& storage = *Storage::by_location(),
                             c10::Device map_location = c10::Device(c10::kCPU));
c10::IValue load_ivalue_file(const std::filesystem::path& path, c10::Device map_location);

/// Checks that `path` is an intact file ckpt can read, without unpickling it: the whole-file
/// CRC-32 that ckpt writes into every file (or, for files written by Python, every record's zip
/// CRC-32), the zip structure, the format version and the presence of `data.pkl`. Throws
/// CheckpointError naming the file and what is wrong (e.g. the damaged record).
void verify_file(const std::filesystem::path& path, Storage& storage = *Storage::by_location());

/// True if `path` ends with the checksum comment ckpt writes into every file, i.e. ckpt wrote it
/// (cheap: one range read of the last bytes; does not verify, see verify_file). False for files written by
/// Python, for other files and for unreadable ones.
bool is_ckpt_file(const std::filesystem::path& path, Storage& storage = *Storage::by_location());

/// Writes `contents` to `path` atomically and durably like save_ivalue_file (temporary, fsync,
/// rename, directory fsync, all through `storage`), for small text files such as the latest
/// pointer. Throws CheckpointError naming `path`; a previous file at `path` is then untouched.
void save_text_file(const std::string& contents, const std::filesystem::path& path,
                    Storage& storage = *Storage::by_location());

/// save_ivalue_file of a dict; Python's `torch.load` returns a plain `dict`.
uint64_t save_state_file(const StateDict& state, const std::filesystem::path& path,
                         Storage& storage = *Storage::by_location());
/// load_ivalue_file, requiring a dict with string keys at the top (Python's `OrderedDict` from
/// `model.state_dict()` is accepted; its `_metadata` attribute is dropped).
StateDict load_state_file(const std::filesystem::path& path,
                          Storage& storage = *Storage::by_location(),
                          c10::Device map_location = c10::Device(c10::kCPU));
StateDict load_state_file(const std::filesystem::path& path, c10::Device map_location);

/// The dict save_checkpoint_file writes for `checkpoint`: PyMarlin's three keys, then
/// `registered_state`, `hyperparameters` and `ckpt_metadata` for those parts that are not empty.
StateDict checkpoint_to_state(const Checkpoint& checkpoint);
/// The inverse of checkpoint_to_state: a missing key or a None value gives an empty part; any other
/// key is a CheckpointError naming it and `what` (e.g. the file).
Checkpoint checkpoint_from_state(const StateDict& state, const std::string& what);

/// Writes a dict with the keys `module_interface_state`, `trainer_state` and
/// `trainer_backend_state` (PyMarlin's layout; an empty state is written as an empty dict), then
/// `registered_state`, `hyperparameters` and `ckpt_metadata` for those parts that are not empty.
uint64_t save_checkpoint_file(const Checkpoint& checkpoint, const std::filesystem::path& path,
                              Storage& storage = *Storage::by_location());
/// Reads PyMarlin's layout and ckpt's optional keys. A missing key or a None value gives an empty
/// state; any other key is an error naming it. `map_location` as for load_ivalue_file.
Checkpoint load_checkpoint_file(const std::filesystem::path& path,
                                Storage& storage = *Storage::by_location(),
                                c10::Device map_location = c10::Device(c10::kCPU));
Checkpoint load_checkpoint_file(const std::filesystem::path& path, c10::Device map_location);

}  // namespace ckpt
