#include "format/archive.h"

#include <ckpt/checkpoint_error.h>
#include <ckpt/checkpoint_reader.h>
#include <ckpt/serialization.h>

#include "format/pickle_reader.h"

#include <ATen/ATen.h>
#include <c10/core/StorageImpl.h>
#include <c10/util/Exception.h>

#include <cstdlib>
#include <functional>
#include <new>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ckpt::detail {
namespace {

constexpr const char* kFormatRecord = "ckpt_format_version";

std::string first_line(const std::string& message) { return message.substr(0, message.find('\n')); }

void release_bytes(void* context) { delete static_cast<std::shared_ptr<char>*>(context); }

// A DataPtr for `bytes` that keeps them (the mapping, the buffer or the run read) alive.
at::DataPtr data_ptr_of(const Bytes& bytes) {
  return at::DataPtr(const_cast<char*>(bytes.begin()), new std::shared_ptr<char>(bytes.data),
                     &release_bytes, at::Device(at::kCPU));
}

const ZipReader::Entry& storage_record(const ZipReader& zip, const std::string& key,
                                       c10::ScalarType type, int64_t numel) {
  const std::string record = "data/" + key;
  const auto* entry = zip.find(record);
  if (entry == nullptr) {
    throw CheckpointError(zip.name() + ": storage record '" + record + "' is missing", zip.name());
  }
  const unsigned __int128 expected =
      static_cast<unsigned __int128>(static_cast<uint64_t>(numel)) * c10::elementSize(type);
  if (entry->size < expected) {
    throw CheckpointError(zip.name() + ": storage record '" + record + "' has " +
                              std::to_string(entry->size) + " bytes, expected " +
                              std::to_string(static_cast<uint64_t>(expected)),
                          zip.name());
  }
  return *entry;
}

// Unpickles `pickle`, turning the library's and the allocator's errors into CheckpointError.
c10::IValue unpickle(const Bytes& pickle, const StorageLoader& load_storage,
                     const std::string& source) {
  try {
    return read_pickle(pickle.begin(), pickle.size, load_storage, source);
  } catch (const c10::Error& e) {
    throw CheckpointError("cannot read " + source + ": " + first_line(e.what_without_backtrace()),
                          source);
  } catch (const std::bad_alloc&) {
    throw CheckpointError("cannot read " + source + ": out of memory", source);
  }
}

// Calls `visit` for every tensor in `value`.
void for_each_tensor(const c10::IValue& value,
                     const std::function<void(const at::Tensor&)>& visit) {
  if (value.isTensor()) {
    visit(value.toTensor());
  } else if (value.isGenericDict()) {
    for (const auto& item : value.toGenericDict()) for_each_tensor(item.value(), visit);
  } else if (value.isList()) {
    for (const auto& item : value.toListRef()) for_each_tensor(item, visit);
  } else if (value.isTuple()) {
    for (const auto& item : value.toTupleRef().elements()) for_each_tensor(item, visit);
  }
}

// `value` with every tensor replaced by a meta tensor of the same dtype, shape and strides.
c10::IValue to_meta(const c10::IValue& value) {
  if (value.isTensor()) {
    const at::Tensor& t = value.toTensor();
    at::Tensor meta = at::empty_strided(t.sizes(), t.strides(),
                                        at::TensorOptions().dtype(t.dtype()).device(at::kMeta));
    if (t.requires_grad()) meta.set_requires_grad(true);
    return meta;
  }
  if (value.isGenericDict()) {
    const auto& dict = value.toGenericDict();
    c10::impl::GenericDict copy(dict.keyType(), dict.valueType());
    for (const auto& item : dict) copy.insert(item.key(), to_meta(item.value()));
    return copy;
  }
  if (value.isList()) {
    const auto& list = value.toList();
    c10::impl::GenericList copy(list.elementType());
    for (const auto& item : list) copy.push_back(to_meta(item));
    return copy;
  }
  if (value.isTuple()) {
    std::vector<c10::IValue> items;
    for (const auto& item : value.toTupleRef().elements()) items.push_back(to_meta(item));
    return c10::ivalue::Tuple::create(std::move(items));
  }
  return value;
}

}  // namespace

Archive::Archive(std::shared_ptr<const ByteSource> source, Check check) : zip_(std::move(source)) {
  const std::string& file = zip_.name();
  if (check == Check::whole_file) zip_.verify();
  const bool check_records = check == Check::records;
  if (const auto* entry = zip_.find(kFormatRecord)) {
    const Bytes bytes = zip_.read(*entry, check_records);
    const std::string text(bytes.begin(), bytes.size);
    char* end = nullptr;
    const long long version = std::strtoll(text.c_str(), &end, 10);
    if (end == text.c_str() || version < 1) {
      throw CheckpointError(file + ": unreadable format version '" + text + "'", file);
    }
    if (version > kFormatVersion) {
      throw CheckpointError(file + " has format version " + std::to_string(version) +
                                "; this ckpt reads versions 1 to " + std::to_string(kFormatVersion),
                            file);
    }
  }
  const auto* pickle = zip_.find("data.pkl");
  if (pickle == nullptr) {
    throw CheckpointError(file + " has no data.pkl record: not a torch.save file", file);
  }
  pickle_ = zip_.read(*pickle, check_records);
}

c10::IValue Archive::load(bool check_records) const {
  // Every storage's record, read as the unpickler meets them: for a file in memory each read
  // aliases it (records are 64-byte aligned, so no copy of their bytes).
  auto load_storage = [&](const std::string& key, c10::ScalarType type,
                          int64_t numel) -> c10::Storage {
    const auto& entry = storage_record(zip_, key, type, numel);
    const Bytes bytes = zip_.read(entry, check_records);
    return c10::Storage(c10::Storage::use_byte_size_t(), entry.size, data_ptr_of(bytes), nullptr,
                        false);
  };
  return unpickle(pickle_, load_storage, name());
}

c10::IValue Archive::load(const std::string& key, bool check_records) const {
  // Unpickle with placeholder storages (the right size, no data), pick the subtree, then give
  // only the storages its tensors use their records' bytes. The rest is never read.
  std::unordered_map<const c10::StorageImpl*, const ZipReader::Entry*> placeholders;
  auto load_storage = [&](const std::string& key_of_storage, c10::ScalarType type,
                          int64_t numel) -> c10::Storage {
    const auto& entry = storage_record(zip_, key_of_storage, type, numel);
    c10::Storage storage(c10::Storage::use_byte_size_t(), entry.size,
                         at::DataPtr(nullptr, at::Device(at::kCPU)), nullptr, false);
    placeholders.emplace(storage.unsafeGetStorageImpl(), &entry);
    return storage;
  };
  const c10::IValue root = unpickle(pickle_, load_storage, name());
  c10::IValue value = value_at_key(root, key, name());
  std::vector<c10::StorageImpl*> storages;
  std::vector<const ZipReader::Entry*> records;
  for_each_tensor(value, [&](const at::Tensor& tensor) {
    c10::StorageImpl* storage = tensor.storage().unsafeGetStorageImpl();
    auto it = placeholders.find(storage);
    if (it == placeholders.end()) return;  // an empty tensor's storage, or filled already
    storages.push_back(storage);
    records.push_back(it->second);
    placeholders.erase(it);
  });
  const std::vector<Bytes> bytes = zip_.read(records, check_records);
  for (std::size_t i = 0; i < storages.size(); ++i)
    storages[i]->set_data_ptr(data_ptr_of(bytes[i]));
  return value;
}

c10::IValue Archive::outline(const std::string& key) const {
  auto load_storage = [&](const std::string& key_of_storage, c10::ScalarType type,
                          int64_t numel) -> c10::Storage {
    const auto& entry = storage_record(zip_, key_of_storage, type, numel);
    return c10::Storage(c10::Storage::use_byte_size_t(), entry.size,
                        at::DataPtr(nullptr, at::Device(at::kCPU)), nullptr, false);
  };
  return to_meta(value_at_key(unpickle(pickle_, load_storage, name()), key, name()));
}

c10::IValue load_ivalue_buffer(std::shared_ptr<FileBuffer> buffer, const std::string& source,
                               bool verify) {
  const Archive archive(memory_source(buffer->data, buffer->size, source),
                        verify ? Archive::Check::whole_file : Archive::Check::none);
  return archive.load(/*check_records=*/false);
}

}  // namespace ckpt::detail
