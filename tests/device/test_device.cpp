// The test device (test_device.h): its allocator, device guard, stream and events, and kernels,
// registered for DispatchKey::PrivateUse1 when the test program loads.
#include "device/test_device.h"

#include "torch_compat.h"

#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>
#include <ATen/core/stack.h>
#if CKPT_TORCH_PRIVATEUSE1_HOOKS
#include <ATen/detail/PrivateUse1HooksInterface.h>
#endif
#include <ATen/native/CPUFallback.h>
#include <ATen/ops/_reshape_alias_native.h>
#include <ATen/ops/as_strided_native.h>
#include <ATen/ops/view_native.h>
#include <c10/core/Allocator.h>
#include <c10/core/DefaultDtype.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/library.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <iostream>
#include <mutex>
#include <thread>
#include <utility>

namespace ckpt::test {
namespace {

constexpr c10::DeviceType kType = c10::DeviceType::PrivateUse1;

std::atomic<uint64_t> host_to_device_bytes{0};
std::atomic<uint64_t> device_to_host_bytes{0};
std::atomic<uint64_t> device_to_device_bytes{0};
std::atomic<uint64_t> async_copies{0};
std::atomic<int64_t> copy_latency_us{0};

thread_local c10::DeviceIndex current_index = 0;

void check_index(c10::DeviceIndex index) {
  TORCH_CHECK(index >= -1 && index < kTestDeviceCount, "device privateuseone:",
              static_cast<int>(index), " does not exist (the test device has ",
              kTestDeviceCount, ")");
}

// The device's one stream: a thread that runs the queued work in order. Never destroyed, so that
// work queued by static destructors still has somewhere to run.
class Stream {
 public:
  static Stream& get() {
    static Stream* stream = new Stream();
    return *stream;
  }

  uint64_t enqueue(std::function<void()> task) {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.emplace_back(++enqueued_, std::move(task));
    work_.notify_one();
    return enqueued_;
  }
  // Runs `task` on the stream after everything queued before it, and waits for it.
  void run(const std::function<void()>& task) {
    std::exception_ptr failure;
    wait(enqueue([&] {
      try {
        task();
      } catch (...) {
        failure = std::current_exception();
      }
    }));
    if (failure) std::rethrow_exception(failure);
  }
  uint64_t last_enqueued() {
    std::lock_guard<std::mutex> lock(mutex_);
    return enqueued_;
  }
  bool done(uint64_t ticket) {
    std::lock_guard<std::mutex> lock(mutex_);
    return completed_ >= ticket;
  }
  void wait(uint64_t ticket) {
    std::unique_lock<std::mutex> lock(mutex_);
    completed_changed_.wait(lock, [&] { return completed_ >= ticket; });
  }

 private:
  Stream() { std::thread([this] { loop(); }).detach(); }
  void loop() {
    for (;;) {
      std::pair<uint64_t, std::function<void()>> item;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        work_.wait(lock, [&] { return !queue_.empty(); });
        item = std::move(queue_.front());
        queue_.pop_front();
      }
      item.second();
      std::lock_guard<std::mutex> lock(mutex_);
      completed_ = item.first;
      completed_changed_.notify_all();
    }
  }
  std::mutex mutex_;
  std::condition_variable work_;
  std::condition_variable completed_changed_;
  std::deque<std::pair<uint64_t, std::function<void()>>> queue_;
  uint64_t enqueued_ = 0;
  uint64_t completed_ = 0;
};

// ---- memory -------------------------------------------------------------------------------

void free_device_memory(void* data) { std::free(data); }

struct TestDeviceAllocator final : c10::Allocator {
  explicit TestDeviceAllocator(c10::DeviceIndex index) : index(index) {}
  c10::DataPtr allocate(size_t bytes) CKPT_ALLOCATE_CONST override {
    void* data = bytes == 0 ? nullptr : std::malloc(bytes);
    TORCH_CHECK(bytes == 0 || data != nullptr, "privateuseone:", static_cast<int>(index),
                ": out of memory allocating ", bytes, " bytes");
    return {data, data, &free_device_memory, c10::Device(kType, index)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &free_device_memory; }
#if CKPT_TORCH_ALLOCATOR_HAS_COPY_DATA
  void copy_data(void* to, const void* from, std::size_t bytes) const override {
    Stream::get().run([&] { std::memcpy(to, from, bytes); });
  }
#endif
  c10::DeviceIndex index;
};

TestDeviceAllocator allocators[kTestDeviceCount] = {TestDeviceAllocator(0), TestDeviceAllocator(1)};

struct RegisterAllocator {
  RegisterAllocator() { c10::SetAllocator(kType, &allocators[0]); }
} register_allocator;

c10::Allocator* allocator_for(const c10::optional<c10::Device>& device) {
  c10::DeviceIndex index = device && device->has_index() ? device->index() : current_index;
  check_index(index);
  return &allocators[index];
}

// A CPU tensor over the same memory as `tensor` (device memory is host memory underneath): what
// the stream's work reads and writes. ckpt never gets one.
at::Tensor host_alias(const at::Tensor& tensor) {
  if (tensor.device().is_cpu()) return tensor;
  c10::Storage storage(c10::Storage::use_byte_size_t(), tensor.storage().nbytes(),
                       c10::DataPtr(tensor.storage().data_ptr().get(), c10::Device(c10::kCPU)),
                       nullptr, false);
  at::Tensor alias = at::detail::make_tensor<c10::TensorImpl>(
      std::move(storage), c10::DispatchKeySet(c10::DispatchKey::CPU), tensor.dtype());
  alias.unsafeGetTensorImpl()->set_sizes_and_strides(tensor.sizes(), tensor.strides());
  alias.unsafeGetTensorImpl()->set_storage_offset(tensor.storage_offset());
  return alias;
}

// ---- kernels (boxed: one form for every LibTorch version's C++ signatures) ----------------

c10::ArrayRef<c10::IValue> arguments(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  return torch::jit::last(*stack, op.schema().arguments().size());
}

void finish(const c10::OperatorHandle& op, torch::jit::Stack* stack, c10::IValue result) {
  torch::jit::drop(*stack, op.schema().arguments().size());
  torch::jit::push(*stack, std::move(result));
}

c10::ScalarType dtype_or_default(const c10::IValue& dtype) {
  return dtype.isNone() ? c10::typeMetaToScalarType(c10::get_default_dtype()) : dtype.toScalarType();
}

c10::optional<c10::Device> device_of(const c10::IValue& device) {
  if (device.isNone()) return c10::nullopt;
  return device.toDevice();
}

// empty.memory_format(SymInt[] size, *, ScalarType? dtype, Layout? layout, Device? device,
//                     bool? pin_memory, MemoryFormat? memory_format)
void empty_memory_format(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto args = arguments(op, stack);
  const c10::optional<c10::MemoryFormat> format =
      args[5].isNone() ? c10::nullopt : c10::optional<c10::MemoryFormat>(args[5].toMemoryFormat());
  at::Tensor result = at::detail::empty_generic(
      args[0].toIntVector(), allocator_for(device_of(args[3])),
      c10::DispatchKeySet(c10::DispatchKey::PrivateUse1), dtype_or_default(args[1]), format);
  finish(op, stack, std::move(result));
}

// empty_strided(SymInt[] size, SymInt[] stride, *, ScalarType? dtype, Layout? layout,
//               Device? device, bool? pin_memory)
void empty_strided(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto args = arguments(op, stack);
  at::Tensor result = at::detail::empty_strided_generic(
      args[0].toIntVector(), args[1].toIntVector(), allocator_for(device_of(args[4])),
      c10::DispatchKeySet(c10::DispatchKey::PrivateUse1), dtype_or_default(args[2]));
  finish(op, stack, std::move(result));
}

at::Tensor copy_between(const at::Tensor& from, const at::Tensor& to, bool non_blocking) {
  TORCH_CHECK(from.sizes() == to.sizes(), "test device copy: sizes differ: ", from.sizes(),
              " and ", to.sizes());
  const bool from_device = from.device().type() == kType;
  const bool to_device = to.device().type() == kType;
  if (from_device && to_device) {
    device_to_device_bytes += static_cast<uint64_t>(to.numel()) * to.element_size();
  } else if (from_device) {
    device_to_host_bytes += static_cast<uint64_t>(from.numel()) * from.element_size();
  } else {
    host_to_device_bytes += static_cast<uint64_t>(to.numel()) * to.element_size();
  }
  at::Tensor host_from = host_alias(from);
  at::Tensor host_to = host_alias(to);
  if (non_blocking && from_device && !to_device) {
    // As cudaMemcpyAsync: queued, and done when the stream gets to it. The lambda keeps both
    // tensors (and so their memory) alive until then.
    ++async_copies;
    Stream::get().enqueue([from, to, host_from, host_to]() mutable {
      if (const int64_t us = copy_latency_us.load()) {
        std::this_thread::sleep_for(std::chrono::microseconds(us));
      }
      try {
        host_to.copy_(host_from);
      } catch (const std::exception& e) {
        std::cerr << "test device: asynchronous copy failed: " << e.what() << std::endl;
        std::abort();
      }
    });
  } else {
    Stream::get().run([&] { host_to.copy_(host_from); });
  }
  return to;
}

// _copy_from(Tensor self, Tensor dst, bool non_blocking=False) -> Tensor
void copy_from(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto args = arguments(op, stack);
  at::Tensor result = copy_between(args[0].toTensor(), args[1].toTensor(), args[2].toBool());
  finish(op, stack, std::move(result));
}

void resize_storage(const at::Tensor& tensor, c10::IntArrayRef sizes) {
  c10::TensorImpl* impl = tensor.unsafeGetTensorImpl();
  impl->set_sizes_contiguous(sizes);
  const uint64_t needed = static_cast<uint64_t>(tensor.storage_offset() + tensor.numel()) *
                          tensor.element_size();
  c10::StorageImpl* storage = tensor.storage().unsafeGetStorageImpl();
  if (storage->nbytes() >= needed) return;
  c10::DataPtr bigger = allocators[tensor.device().index()].allocate(needed);
  Stream::get().run([&] {
    if (storage->nbytes() > 0) std::memcpy(bigger.get(), storage->data_ptr().get(), storage->nbytes());
  });
  storage->set_data_ptr_noswap(std::move(bigger));
  storage->set_nbytes(needed);
}

// _copy_from_and_resize(Tensor self, Tensor dst) -> Tensor
void copy_from_and_resize(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto args = arguments(op, stack);
  const at::Tensor from = args[0].toTensor();
  const at::Tensor to = args[1].toTensor();
  if (to.device().type() == kType) resize_storage(to, from.sizes());
  else to.resize_(from.sizes());
  finish(op, stack, copy_between(from, to, false));
}

// resize_(Tensor(a!) self, SymInt[] size, *, MemoryFormat? memory_format=None) -> Tensor(a!)
void resize_kernel(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto args = arguments(op, stack);
  at::Tensor self = args[0].toTensor();
  resize_storage(self, args[1].toIntVector());
  finish(op, stack, std::move(self));
}

// fill_.Scalar(Tensor(a!) self, Scalar value) -> Tensor(a!)
void fill(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto args = arguments(op, stack);
  at::Tensor self = args[0].toTensor();
  const c10::Scalar value = args[1].toScalar();
  at::Tensor host = host_alias(self);
  Stream::get().run([&] { host.fill_(value); });
  finish(op, stack, std::move(self));
}

// Views share the storage: no work on the stream.
void view(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto args = arguments(op, stack);
  finish(op, stack, at::native::view(args[0].toTensor(), args[1].toIntVector()));
}

void as_strided(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto args = arguments(op, stack);
  const c10::optional<int64_t> offset =
      args[3].isNone() ? c10::nullopt : c10::optional<int64_t>(args[3].toInt());
  finish(op, stack, at::native::as_strided_tensorimpl(args[0].toTensor(), args[1].toIntVector(),
                                                      args[2].toIntVector(), offset));
}

void reshape_alias(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto args = arguments(op, stack);
  finish(op, stack, at::native::_reshape_alias(args[0].toTensor(), args[1].toIntVector(),
                                               args[2].toIntVector()));
}

// A CPU tensor's data can be replaced by this device's and back (Tensor::set_data, which
// torch::nn::Module::to uses), as LibTorch allows between the CPU and CUDA.
void has_compatible_shallow_copy_type(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto args = arguments(op, stack);
  const auto dense_here = [](const at::Tensor& t) {
    return t.layout() == at::kStrided && !t.is_quantized() &&
           (t.device().is_cpu() || t.device().type() == kType);
  };
  const bool compatible = dense_here(args[0].toTensor()) && dense_here(args[1].toTensor());
  finish(op, stack, compatible);
}

// Every other operator: its CPU kernel, on copies (LibTorch's fallback for new backends).
void cpu_fallback(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  at::native::cpu_fallback(op, stack);
}

// ---- device guard, streams and events ------------------------------------------------------

struct TestDeviceGuard final : c10::impl::DeviceGuardImplInterface {
  c10::DeviceType type() const override { return kType; }
  c10::Device exchangeDevice(c10::Device device) const override {
    const c10::Device previous = getDevice();
    setDevice(device);
    return previous;
  }
  c10::Device getDevice() const override { return c10::Device(kType, current_index); }
  void setDevice(c10::Device device) const override {
    check_index(device.index());
    current_index = device.index();
  }
  void uncheckedSetDevice(c10::Device device) const noexcept override {
    current_index = device.index();
  }
  c10::Stream getStream(c10::Device device) const noexcept override {
    return c10::Stream(c10::Stream::DEFAULT, device);
  }
  c10::Stream exchangeStream(c10::Stream stream) const noexcept override { return stream; }
  c10::DeviceIndex deviceCount() const noexcept override { return kTestDeviceCount; }

  // An event is the stream's ticket count when it was recorded: done when the stream has run
  // that far.
  void record(void** event, const c10::Stream& /*stream*/, const c10::DeviceIndex /*index*/,
              const c10::EventFlag /*flag*/) const override {
    if (*event == nullptr) *event = new uint64_t(0);
    *static_cast<uint64_t*>(*event) = Stream::get().last_enqueued();
  }
  void block(void* /*event*/, const c10::Stream& /*stream*/) const override {
    // One stream: whatever waits on the event is queued after it already.
  }
  bool queryEvent(void* event) const override {
    return event == nullptr || Stream::get().done(*static_cast<uint64_t*>(event));
  }
  void destroyEvent(void* event, const c10::DeviceIndex /*index*/) const noexcept override {
    delete static_cast<uint64_t*>(event);
  }
#if CKPT_TORCH_EVENT_HAS_SYNCHRONIZE
  void synchronizeEvent(void* event) const override {
    if (event != nullptr) Stream::get().wait(*static_cast<uint64_t*>(event));
  }
#endif
  bool queryStream(const c10::Stream& /*stream*/) const override {
    return Stream::get().done(Stream::get().last_enqueued());
  }
  void synchronizeStream(const c10::Stream& /*stream*/) const override {
    Stream::get().wait(Stream::get().last_enqueued());
  }
};

C10_REGISTER_GUARD_IMPL(PrivateUse1, TestDeviceGuard);

#if CKPT_TORCH_PRIVATEUSE1_HOOKS
// LibTorch 2.x takes a registered PrivateUse1 backend for the process's accelerator (before a
// CUDA that is built in but has no device here), so that the autograd engine asks this device's
// guard for streams; and it asks these hooks whether the device is there.
struct TestDeviceHooks final : at::PrivateUse1HooksInterface {
  bool isBuilt() const override { return true; }
  bool isAvailable() const override { return true; }
  bool hasPrimaryContext(c10::DeviceIndex /*index*/) const override { return true; }
  at::Device getDeviceFromPtr(void* /*data*/) const override { return c10::Device(kType, 0); }
};

struct RegisterBackend {
  RegisterBackend() {
    c10::register_privateuse1_backend("privateuseone");
    static TestDeviceHooks hooks;
    at::RegisterPrivateUse1HooksInterface(&hooks);
  }
} register_backend;
#endif

template <void (*kernel)(const c10::OperatorHandle&, torch::jit::Stack*)>
torch::CppFunction boxed() {
  return torch::CppFunction::makeFromBoxedFunction<kernel>();
}

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  m.impl("empty.memory_format", boxed<&empty_memory_format>());
  m.impl("empty_strided", boxed<&empty_strided>());
  m.impl("_copy_from", boxed<&copy_from>());
  m.impl("_copy_from_and_resize", boxed<&copy_from_and_resize>());
  m.impl("resize_", boxed<&resize_kernel>());
  m.impl("fill_.Scalar", boxed<&fill>());
  m.impl("view", boxed<&view>());
  m.impl("as_strided", boxed<&as_strided>());
  m.impl("_reshape_alias", boxed<&reshape_alias>());
  m.impl("_has_compatible_shallow_copy_type", boxed<&has_compatible_shallow_copy_type>());
}

// It returns a bool, nothing to differentiate: LibTorch 1.13 has no autograd fallthrough for it.
TORCH_LIBRARY_IMPL(aten, AutogradPrivateUse1, m) {
  m.impl("_has_compatible_shallow_copy_type", boxed<&has_compatible_shallow_copy_type>());
}

TORCH_LIBRARY_IMPL(_, PrivateUse1, m) { m.fallback(boxed<&cpu_fallback>()); }

}  // namespace

c10::Device test_device(int index) {
  return c10::Device(kType, static_cast<c10::DeviceIndex>(index));
}

TestDeviceCounters test_device_counters() {
  return {host_to_device_bytes.load(), device_to_host_bytes.load(), device_to_device_bytes.load(),
          async_copies.load()};
}

void reset_test_device_counters() {
  host_to_device_bytes = 0;
  device_to_host_bytes = 0;
  device_to_device_bytes = 0;
  async_copies = 0;
}

void set_test_device_copy_latency(std::chrono::microseconds latency) {
  copy_latency_us = latency.count();
}

}  // namespace ckpt::test
