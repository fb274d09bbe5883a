#pragma once

#include <ckpt/state_dict.h>
#include <ckpt/storage.h>

#include <ATen/core/ivalue.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

namespace ckpt {

/// How a read makes sure the bytes it returns are the bytes that were saved.
enum class Verification {
  /// ckpt's whole-file CRC-32 (for files written by Python, every record's CRC-32) is checked
  /// before anything is returned: reads every byte of the file, and catches damage anywhere in it,
  /// also in records not returned and in the zip's own headers. What load_ivalue_file does.
  whole_file,
  /// The CRC-32 of each record a read uses (zip stores one per record) is checked before any
  /// tensor in it is returned, and so are data.pkl's and the format record's: reads only those
  /// records. Damage elsewhere in the file goes unnoticed, and so does damage to the zip
  /// headers that still leaves every record it reads intact.
  records_read,
};

/// A checkpoint opened lazily: the constructor reads only the zip's directory, the format record
/// and `data.pkl` (the structure); tensors are read when a load asks for them, and only those.
/// Local files are memory-mapped copy-on-write (like Python's `torch.load(mmap=True)`): a loaded
/// tensor aliases the mapping, only the pages of the records used are read from disk, and
/// writing to the tensor never changes the file. Other storages read byte ranges (an object
/// store: one ranged GET per run of adjacent records).
///
///   ckpt::CheckpointReader reader("checkpoints/model_7.pt");
///   // Only the model's records are read and checked, not the optimizer's.
///   ckpt::StateDict weights = reader.load_state("module_interface_state");
///   ckpt::load_module_state(model, weights);
///
/// Keys are paths: steps separated by '/', each a dict key or a list index, e.g.
/// `trainer_state/optimizers/0/state`. Works on files written by ckpt and by Python's
/// `torch.save`. Loaded tensors stay valid after the reader is destroyed (they keep what they
/// alias alive). Thread safety: the const members may be called concurrently.
class CheckpointReader {
 public:
  /// Opens `path` through `storage` (which must outlive the reader). Throws CheckpointError naming
  /// the file if it does not exist, is not a checkpoint zip (e.g. truncated: its directory is at
  /// its end), has a newer format version, or its data.pkl fails its CRC-32.
  explicit CheckpointReader(std::filesystem::path path, Storage& storage = *Storage::by_location());
  ~CheckpointReader();
  CheckpointReader(CheckpointReader&&) noexcept;
  CheckpointReader& operator=(CheckpointReader&&) noexcept;

  const std::filesystem::path& path() const noexcept { return path_; }
  /// The file's size in bytes.
  uint64_t file_size() const noexcept;
  /// True if `key` names a value in the file (reads nothing more).
  bool contains(const std::string& key) const;
  /// The value at `key` (empty: the whole value) with each tensor replaced by a tensor on the
  /// `meta` device of the same dtype, shape and strides: shapes and sizes without reading any
  /// tensor's bytes. Throws CheckpointError naming the key and what is there if it is absent.
  c10::IValue outline(const std::string& key = "") const;
  /// The value at `key` (empty: the whole value), its tensors on `map_location` (the CPU by
  /// default; see load_ivalue_file), reading only the records they use and checked as
  /// `verification` says. Throws CheckpointError naming the file and the damaged record, or the
  /// key (and what is there) if it is absent, or the device if it does not exist.
  c10::IValue load(const std::string& key = "",
                   Verification verification = Verification::records_read,
                   c10::Device map_location = c10::Device(c10::kCPU)) const;
  /// load(), requiring a dict with string keys at `key`.
  StateDict load_state(const std::string& key = "",
                       Verification verification = Verification::records_read,
                       c10::Device map_location = c10::Device(c10::kCPU)) const;
  /// Bytes of the file read (or, when mapped, asked for) so far, the directory and data.pkl
  /// included: what a partial load saves. Each byte counts once, however often it is read, so
  /// this never exceeds file_size().
  uint64_t bytes_read() const noexcept;

 private:
  struct Impl;
  std::filesystem::path path_;
  std::unique_ptr<Impl> impl_;
};

/// The value at `key` in `root`: steps separated by '/', each a dict key (a string, or an int key
/// written as its digits, as in an optimizer's `state`) or a list or tuple index. An empty key
/// (or one of only slashes) is `root` itself. Throws CheckpointError naming `what` (e.g. the
/// file), the key, the missing step and what is there instead.
c10::IValue value_at_key(const c10::IValue& root, const std::string& key, const std::string& what);

}  // namespace ckpt
