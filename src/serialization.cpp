#include <ckpt/serialization.h>

#include <ckpt/checkpoint_error.h>
#include <ckpt/logger.h>

#include "detail/atomic_file.h"
#include "detail/pickle_reader.h"
#include "detail/pickle_writer.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <caffe2/serialize/inline_container.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <string>
#include <system_error>

namespace ckpt {
namespace {

constexpr const char* kFormatRecord = "ckpt_format_version";
constexpr const char* kCheckpointKeys[] = {"module_interface_state", "trainer_state",
                                           "trainer_backend_state"};

std::string first_line(const std::string& message) {
  return message.substr(0, message.find('\n'));
}

}  // namespace

uint64_t save_ivalue_file(const c10::IValue& value, const std::filesystem::path& path) {
  detail::PickleWriter pickler;
  const std::string pickle = pickler.pickle(value);

  detail::AtomicFile file(path);
  // miniz (inside PyTorchStreamWriter) is C: exceptions must not cross it. The writer callback
  // records the first failure and swallows further output; it is rethrown once miniz returns.
  std::exception_ptr write_error;
  auto writer_func = [&](const void* data, std::size_t size) -> std::size_t {
    if (write_error) return size;
    try {
      file.write(data, size);
    } catch (...) {
      write_error = std::current_exception();
    }
    return size;
  };
  try {
    caffe2::serialize::PyTorchStreamWriter writer(writer_func);
    writer.writeRecord("data.pkl", pickle.data(), pickle.size());
    const auto& storages = pickler.storages();
    for (std::size_t i = 0; i < storages.size() && !write_error; ++i) {
      const c10::Storage& storage = storages[i].storage();
      writer.writeRecord("data/" + std::to_string(i), storage.data(), storage.nbytes());
    }
    const std::string version = std::to_string(kFormatVersion) + "\n";
    writer.writeRecord(kFormatRecord, version.data(), version.size());
    writer.writeEndOfFile();
  } catch (const c10::Error& e) {
    if (!write_error) {
      throw CheckpointError("cannot write " + path.string() + ": " + first_line(e.what()), path);
    }
  }
  if (write_error) std::rethrow_exception(write_error);
  file.commit();
  return file.bytes_written();
}

c10::IValue load_ivalue_file(const std::filesystem::path& path) {
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  if (!std::filesystem::exists(status)) {
    throw CheckpointError("checkpoint file " + path.string() + " does not exist", path, ENOENT);
  }
  if (!std::filesystem::is_regular_file(status)) {
    throw CheckpointError(path.string() + " is not a regular file", path);
  }
  if (std::filesystem::file_size(path, ec) == 0) {
    throw CheckpointError(path.string() + " is empty (0 bytes): not a checkpoint", path);
  }
  try {
    caffe2::serialize::PyTorchStreamReader reader(path.string());
    if (reader.hasRecord(kFormatRecord)) {
      auto [data, size] = reader.getRecord(kFormatRecord);
      const std::string text(static_cast<const char*>(data.get()), size);
      int64_t version = 0;
      try {
        version = std::stoll(text);
      } catch (const std::exception&) {
        throw CheckpointError(path.string() + ": unreadable format version '" + text + "'", path);
      }
      if (version > kFormatVersion || version < 1) {
        throw CheckpointError(path.string() + " has format version " + std::to_string(version) +
                                  "; this ckpt reads versions 1 to " +
                                  std::to_string(kFormatVersion),
                              path);
      }
    }
    if (!reader.hasRecord("data.pkl")) {
      throw CheckpointError(path.string() + " has no data.pkl record: not a torch.save file", path);
    }
    auto [pickle, pickle_size] = reader.getRecord("data.pkl");
    auto load_storage = [&](const std::string& key, c10::ScalarType type,
                            int64_t numel) -> c10::Storage {
      const std::string record = "data/" + key;
      if (!reader.hasRecord(record)) {
        throw CheckpointError(path.string() + ": storage record '" + record + "' is missing",
                              path);
      }
      auto [data, size] = reader.getRecord(record);
      const uint64_t expected = static_cast<uint64_t>(numel) * c10::elementSize(type);
      if (size < expected) {
        throw CheckpointError(path.string() + ": storage record '" + record + "' has " +
                                  std::to_string(size) + " bytes, expected " +
                                  std::to_string(expected),
                              path);
      }
      return c10::Storage(c10::Storage::use_byte_size_t(), size, std::move(data), nullptr,
                          false);
    };
    return detail::read_pickle(static_cast<const char*>(pickle.get()), pickle_size, load_storage,
                               path.string());
  } catch (const c10::Error& e) {
    throw CheckpointError("cannot read " + path.string() + ": " + first_line(e.what_without_backtrace()),
                          path);
  } catch (const std::bad_alloc&) {
    throw CheckpointError("cannot read " + path.string() + ": out of memory", path);
  }
}

uint64_t save_state_file(const StateDict& state, const std::filesystem::path& path) {
  return save_ivalue_file(state.to_ivalue(), path);
}

StateDict load_state_file(const std::filesystem::path& path) {
  return StateDict::from_ivalue(load_ivalue_file(path), path.string());
}

uint64_t save_checkpoint_file(const Checkpoint& checkpoint, const std::filesystem::path& path) {
  StateDict file;
  file.insert_or_assign(kCheckpointKeys[0], checkpoint.module_interface_state.to_ivalue());
  file.insert_or_assign(kCheckpointKeys[1], checkpoint.trainer_state.to_ivalue());
  file.insert_or_assign(kCheckpointKeys[2], checkpoint.trainer_backend_state.to_ivalue());
  return save_state_file(file, path);
}

Checkpoint load_checkpoint_file(const std::filesystem::path& path) {
  const StateDict file = load_state_file(path);
  Checkpoint checkpoint;
  StateDict* fields[] = {&checkpoint.module_interface_state, &checkpoint.trainer_state,
                         &checkpoint.trainer_backend_state};
  for (const auto& [key, value] : file) {
    std::size_t i = 0;
    while (i < 3 && key != kCheckpointKeys[i]) ++i;
    if (i == 3) {
      throw CheckpointError(path.string() + ": unexpected key '" + key +
                                "' in checkpoint (expected module_interface_state, "
                                "trainer_state, trainer_backend_state)",
                            path);
    }
    if (!value.isNone()) *fields[i] = StateDict::from_ivalue(value, path.string() + ": " + key);
  }
  return checkpoint;
}

}  // namespace ckpt
