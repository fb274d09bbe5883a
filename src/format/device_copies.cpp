#include "format/device_copies.h"

#include <ckpt/checkpoint_error.h>
#include <ckpt/device.h>
#include <ckpt/serialization.h>

#include <ATen/ATen.h>
#include <c10/core/TensorOptions.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <unordered_map>
#include <utility>

namespace ckpt::detail {
namespace {

struct Origin {
  c10::Device device;
};

void forget_origin(void* context) { delete static_cast<Origin*>(context); }

std::string first_line(const std::string& message) { return message.substr(0, message.find('\n')); }

// A tensor of `dtype` over `storage`, on the storage's device, with no kernel run.
at::Tensor tensor_on(c10::Storage storage, caffe2::TypeMeta dtype) {
  const c10::Device device = storage.device();
  const c10::DispatchKey key = c10::computeDispatchKey(c10::typeMetaToScalarType(dtype),
                                                       at::kStrided, device);
  return at::detail::make_tensor<c10::TensorImpl>(std::move(storage), c10::DispatchKeySet(key),
                                                  dtype);
}

c10::IValue moved(const c10::IValue& value, c10::Device device,
                  std::unordered_map<const c10::StorageImpl*, c10::Storage>& storages) {
  if (value.isTensor()) {
    const at::Tensor& tensor = value.toTensor();
    if (!tensor.defined() || !tensor.has_storage() || tensor.device() == device) return value;
    c10::StorageImpl* impl = tensor.storage().unsafeGetStorageImpl();
    auto it = storages.find(impl);
    if (it == storages.end()) {
      const uint64_t bytes = impl->nbytes();
      at::Tensor copy = at::empty({static_cast<int64_t>(bytes)},
                                  at::TensorOptions().dtype(at::kByte).device(device));
      if (bytes > 0) copy.copy_(byte_view(tensor.storage(), 0, bytes));
      it = storages.emplace(impl, copy.storage()).first;
    }
    at::Tensor result = tensor_on(it->second, tensor.dtype());
    result.unsafeGetTensorImpl()->set_sizes_and_strides(tensor.sizes(), tensor.strides());
    result.unsafeGetTensorImpl()->set_storage_offset(tensor.storage_offset());
    if (tensor.requires_grad()) result.set_requires_grad(true);
    return result;
  }
  if (value.isGenericDict()) {
    const auto dict = value.toGenericDict();
    c10::impl::GenericDict copy(dict.keyType(), dict.valueType());
    copy.reserve(dict.size());
    for (const auto& item : dict) copy.insert(item.key(), moved(item.value(), device, storages));
    return copy;
  }
  if (value.isList()) {
    const auto list = value.toList();
    c10::impl::GenericList copy(list.elementType());
    copy.reserve(list.size());
    for (const auto& item : value.toListRef()) copy.push_back(moved(item, device, storages));
    return copy;
  }
  if (value.isTuple()) {
    std::vector<c10::IValue> elements;
    for (const auto& item : value.toTupleRef().elements()) {
      elements.push_back(moved(item, device, storages));
    }
    return c10::ivalue::Tuple::create(std::move(elements));
  }
  return value;
}

}  // namespace

at::Tensor byte_view(const c10::Storage& storage, uint64_t offset, uint64_t size) {
  at::Tensor bytes = tensor_on(storage, caffe2::TypeMeta::Make<uint8_t>());
  bytes.unsafeGetTensorImpl()->set_sizes_contiguous({static_cast<int64_t>(size)});
  bytes.unsafeGetTensorImpl()->set_storage_offset(static_cast<int64_t>(offset));
  return bytes;
}

namespace {

void host_pieces(const c10::Storage& storage, std::size_t offset, std::size_t size,
                 std::vector<char>& buffer,
                 const std::function<void(const void*, std::size_t)>& sink) {
  if (storage.device().is_cpu()) {
    sink(static_cast<const char*>(storage.data()) + offset, size);
    return;
  }
  if (size == 0) return;
  if (buffer.size() < std::min(size, kDevicePieceBytes)) {
    buffer.clear();
    buffer.shrink_to_fit();  // the old buffer goes before the new one comes
    buffer.resize(std::min(size, kDevicePieceBytes));
  }
  for (std::size_t done = 0; done < size;) {
    const std::size_t piece = std::min(buffer.size(), size - done);
    at::Tensor host = at::from_blob(buffer.data(), {static_cast<int64_t>(piece)}, at::kByte);
    try {
      host.copy_(byte_view(storage, offset + done, piece));
    } catch (const c10::Error& e) {
      throw CheckpointError("cannot copy " + std::to_string(piece) + " bytes from " +
                            storage.device().str() + " to the host: " +
                            first_line(e.what_without_backtrace()));
    }
    sink(buffer.data(), piece);
    done += piece;
  }
}

}  // namespace

void for_each_host_piece(const c10::Storage& storage, std::vector<char>& buffer,
                         const std::function<void(const void*, std::size_t)>& sink) {
  host_pieces(storage, 0, storage.nbytes(), buffer, sink);
}

void for_each_host_piece(const at::Tensor& contiguous, std::vector<char>& buffer,
                         const std::function<void(const void*, std::size_t)>& sink) {
  host_pieces(contiguous.storage(), contiguous.storage_offset() * contiguous.element_size(),
              contiguous.nbytes(), buffer, sink);
}

c10::IValue to_device(const c10::IValue& value, c10::Device device) {
  std::unordered_map<const c10::StorageImpl*, c10::Storage> storages;
  try {
    return moved(value, device, storages);
  } catch (const c10::Error& e) {
    throw CheckpointError("cannot copy the loaded tensors to " + device.str() + ": " +
                          first_line(e.what_without_backtrace()));
  }
}

std::string storage_location(const c10::Storage& storage) {
  const c10::DataPtr& data = storage.data_ptr();
  if (data.get_deleter() == &forget_origin) {
    return static_cast<const Origin*>(data.get_context())->device.str();
  }
  return storage.device().str();
}

c10::DataPtr host_copy_data_ptr(void* data, c10::Device origin) {
  return c10::DataPtr(data, new Origin{origin}, &forget_origin, c10::Device(c10::kCPU));
}

void check_device_exists(c10::Device device, const std::string& what) {
  if (device.is_cpu()) return;
  const std::string name = device.str();
  if (!c10::impl::hasDeviceGuardImpl(device.type())) {
    throw CheckpointError(what + ": device " + name + " is not available: this program's " +
                          "LibTorch has no " + c10::DeviceTypeName(device.type(), true) +
                          " support loaded");
  }
  const int count = c10::impl::getDeviceGuardImpl(device.type())->deviceCount();
  if (device.has_index() && device.index() >= count) {
    throw CheckpointError(what + ": device " + name + " does not exist: there " +
                          (count == 1 ? "is 1 " : "are " + std::to_string(count) + " ") +
                          c10::DeviceTypeName(device.type(), true) + " device" +
                          (count == 1 ? "" : "s"));
  }
  if (count == 0) {
    throw CheckpointError(what + ": device " + name + " does not exist: there are no " +
                          c10::DeviceTypeName(device.type(), true) + " devices");
  }
}

c10::Device parse_device(const std::string& text, const std::string& what) {
  c10::Device device(c10::kCPU);
  try {
    device = c10::Device(text);
  } catch (const c10::Error&) {
    throw CheckpointError(what + ": '" + text + "' is not a device (cpu, cuda, cuda:1, ...)");
  }
  if (!device.is_cpu() && !device.has_index()) device = c10::Device(device.type(), 0);
  check_device_exists(device, what);
  return device;
}

}  // namespace ckpt::detail

namespace ckpt {

c10::Device existing_device(const std::string& text, const std::string& what) {
  return detail::parse_device(text, what);
}

c10::IValue to_device(const c10::IValue& value, c10::Device device) {
  detail::check_device_exists(device, "to_device");
  return detail::to_device(value, device);
}

StateDict to_device(const StateDict& state, c10::Device device) {
  return StateDict::from_ivalue(to_device(state.to_ivalue(), device));
}

Checkpoint to_device(const Checkpoint& checkpoint, c10::Device device) {
  return checkpoint_from_state(to_device(checkpoint_to_state(checkpoint), device),
                               "to_device(" + device.str() + ")");
}

}  // namespace ckpt
