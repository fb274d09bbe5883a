#include <ckpt/serialization.h>

#include <ckpt/checkpoint_error.h>
#include <ckpt/logger.h>

#include "format/archive.h"
#include "storage/atomic_file.h"
#include "format/byte_source.h"
#include "format/device_copies.h"
#include "format/pickle_writer.h"
#include "storage/temporary_name.h"
#include "format/zip.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <system_error>
#include <utility>

namespace ckpt {
namespace {

constexpr const char* kFormatRecord = "ckpt_format_version";
// The container version PyTorch 1.13 writes and its reader requires.
constexpr const char* kTorchContainerVersion = "3\n";
// PyMarlin's three keys, always written, then ckpt's optional ones, written when not empty.
constexpr const char* kCheckpointKeys[] = {"module_interface_state", "trainer_state",
                                           "trainer_backend_state",  "registered_state",
                                           "hyperparameters",        "ckpt_metadata"};
constexpr std::size_t kPyMarlinKeys = 3;
constexpr std::size_t kCheckpointKeyCount = sizeof(kCheckpointKeys) / sizeof(kCheckpointKeys[0]);

// The parts of `c` in kCheckpointKeys order (const or not, as `c`).
template <class C>
std::array<decltype(&std::declval<C&>().metadata), kCheckpointKeyCount> parts(C& c) {
  return {&c.module_interface_state, &c.trainer_state,   &c.trainer_backend_state,
          &c.registered_state,       &c.hyperparameters, &c.metadata};
}

}  // namespace

uint64_t save_ivalue_file(const c10::IValue& value, const std::filesystem::path& path,
                          Storage& storage) {
  detail::PickleWriter pickler;
  const std::string pickle = pickler.pickle(value);

  detail::AtomicFile file(storage, path);
  detail::ZipWriter zip([&file](const void* data, std::size_t size) { file.write(data, size); },
                        path.stem().string().empty() ? "archive" : path.stem().string());
  zip.write_record("data.pkl", pickle.data(), pickle.size());
  const auto& storages = pickler.storages();
  std::vector<char> device_piece;  // device storages reach the host through it, a piece at a time
  for (std::size_t i = 0; i < storages.size(); ++i) {
    const c10::Storage& tensor_storage = storages[i].storage();
    zip.write_record("data/" + std::to_string(i), tensor_storage.nbytes(),
                     [&](const detail::ZipWriter::Sink& piece) {
                       detail::for_each_host_piece(tensor_storage, device_piece, piece);
                     });
  }
  // The record PyTorch's reader requires (its container version), then ours.
  zip.write_record("version", kTorchContainerVersion, std::strlen(kTorchContainerVersion));
  const std::string version = std::to_string(kFormatVersion) + "\n";
  zip.write_record(kFormatRecord, version.data(), version.size());
  zip.finish();
  file.commit();
  return file.bytes_written();
}

bool is_ckpt_file(const std::filesystem::path& path, Storage& storage) {
  // The comment is the file's last bytes: prefix + 8 hex digits.
  const std::size_t prefix = std::strlen(detail::kChecksumCommentPrefix);
  const std::size_t size = prefix + 8;
  try {
    const auto file = storage.open(path);
    if (file->size() < size) return false;
    char tail[64] = {};
    file->read(file->size() - size, size, tail);
    return std::strncmp(tail, detail::kChecksumCommentPrefix, prefix) == 0;
  } catch (const CheckpointError&) {
    return false;
  }
}

void save_text_file(const std::string& contents, const std::filesystem::path& path,
                    Storage& storage) {
  detail::AtomicFile file(storage, path);
  file.write(contents.data(), contents.size());
  file.commit();
}

namespace {

// A parsed, verified file, held whole in memory (mapped where the storage maps files).
detail::Archive open_verified(const std::filesystem::path& path, Storage& storage) {
  const auto info = storage.stat(path);
  if (!info) {
    throw CheckpointError("checkpoint file " + path.string() + " does not exist", path, ENOENT);
  }
  if (info->is_directory) throw CheckpointError(path.string() + " is not a regular file", path);
  std::shared_ptr<const detail::ByteSource> source =
      detail::whole_file_source(storage.open(path), path.string());
  if (source->size() == 0) {
    throw CheckpointError(path.string() + " is empty (0 bytes): not a checkpoint", path);
  }
  return detail::Archive(source, detail::Archive::Check::whole_file);
}

}  // namespace

void verify_file(const std::filesystem::path& path, Storage& storage) {
  open_verified(path, storage);
}

std::string temporary_target(const std::string& filename) {
  return detail::temp_target_name(filename);
}

c10::IValue load_ivalue_file(const std::filesystem::path& path, Storage& storage,
                             c10::Device map_location) {
  detail::check_device_exists(map_location, "cannot load " + path.string() + " onto " +
                                                map_location.str());
  c10::IValue value = open_verified(path, storage).load(/*check_records=*/false);
  return map_location.is_cpu() ? value : detail::to_device(value, map_location);
}

c10::IValue load_ivalue_file(const std::filesystem::path& path, c10::Device map_location) {
  return load_ivalue_file(path, *Storage::by_location(), map_location);
}

uint64_t save_state_file(const StateDict& state, const std::filesystem::path& path,
                         Storage& storage) {
  return save_ivalue_file(state.to_ivalue(), path, storage);
}

StateDict load_state_file(const std::filesystem::path& path, Storage& storage,
                          c10::Device map_location) {
  return StateDict::from_ivalue(load_ivalue_file(path, storage, map_location), path.string());
}

StateDict load_state_file(const std::filesystem::path& path, c10::Device map_location) {
  return load_state_file(path, *Storage::by_location(), map_location);
}

StateDict checkpoint_to_state(const Checkpoint& checkpoint) {
  StateDict state;
  const auto states = parts(checkpoint);
  for (std::size_t i = 0; i < kCheckpointKeyCount; ++i) {
    if (i < kPyMarlinKeys || !states[i]->empty()) {
      state.insert_or_assign(kCheckpointKeys[i], states[i]->to_ivalue());
    }
  }
  return state;
}

Checkpoint checkpoint_from_state(const StateDict& state, const std::string& what) {
  Checkpoint checkpoint;
  const auto states = parts(checkpoint);
  for (const auto& [key, value] : state) {
    std::size_t i = 0;
    while (i < kCheckpointKeyCount && key != kCheckpointKeys[i]) ++i;
    if (i == kCheckpointKeyCount) {
      throw CheckpointError(what + ": unexpected key '" + key +
                                "' in checkpoint (expected module_interface_state, "
                                "trainer_state, trainer_backend_state, and optionally "
                                "registered_state, hyperparameters, ckpt_metadata)",
                            what);
    }
    if (!value.isNone()) *states[i] = StateDict::from_ivalue(value, what + ": " + key);
  }
  return checkpoint;
}

uint64_t save_checkpoint_file(const Checkpoint& checkpoint, const std::filesystem::path& path,
                              Storage& storage) {
  return save_state_file(checkpoint_to_state(checkpoint), path, storage);
}

Checkpoint load_checkpoint_file(const std::filesystem::path& path, Storage& storage,
                                c10::Device map_location) {
  return checkpoint_from_state(load_state_file(path, storage, map_location), path.string());
}

Checkpoint load_checkpoint_file(const std::filesystem::path& path, c10::Device map_location) {
  return load_checkpoint_file(path, *Storage::by_location(), map_location);
}

}  // namespace ckpt
