#include "background_writer.h"

#include <ckpt/checkpoint_error.h>
#include <ckpt/logger.h>

#include <spdlog/spdlog.h>

#include "format/device_copies.h"
#include "torch_compat.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <c10/util/Exception.h>

#include <sys/mman.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

namespace ckpt::detail {
namespace {

constexpr uint64_t kAlignment = 64;
constexpr std::size_t kCopyChunk = 4 << 20;
constexpr uint64_t kHugePage = 2 << 20;

void no_delete(void*) {}

// Tensors the writer can write (dense, with data, on any device) are staged; anything else
// passes through unchanged, to fail in the writer with the synchronous save's message.
bool stageable(const at::Tensor& tensor) {
  return tensor.defined() && tensor.layout() == at::kStrided && !tensor.device().is_meta() &&
         tensor.has_storage();
}

// Queues the copy of each device storage into its place in `staging` (a byte tensor over the
// staging memory) on its device's current stream, and records one event per device after them.
std::vector<c10::Event> issue_device_copies(
    const std::vector<std::pair<c10::Storage, uint64_t>>& copies, const at::Tensor& staging) {
  std::vector<c10::Event> events;
  std::vector<c10::Device> devices;
  for (const auto& [source, offset] : copies) {
    if (std::find(devices.begin(), devices.end(), source.device()) == devices.end()) {
      devices.push_back(source.device());
    }
    const int64_t bytes = static_cast<int64_t>(source.nbytes());
    if (bytes == 0) continue;
    try {
      staging.narrow(0, static_cast<int64_t>(offset), bytes)
          .copy_(byte_view(source, 0, source.nbytes()), /*non_blocking=*/true);
    } catch (const c10::Error& e) {
      throw CheckpointError("cannot stage " + std::to_string(bytes) + " bytes from " +
                            source.device().str() + " for a background save: " +
                            std::string(e.what_without_backtrace()).substr(
                                0, std::string(e.what_without_backtrace()).find('\n')));
    }
  }
  for (const c10::Device& device : devices) {
    c10::impl::VirtualGuardImpl guard(device.type());
    events.emplace_back(device.type());
    events.back().record(guard.getStream(device));
  }
  return events;
}

}  // namespace

Stager::Snapshot Stager::snapshot(const Checkpoint& checkpoint, bool defer) {
  const c10::IValue states[] = {
      checkpoint.module_interface_state.to_ivalue(), checkpoint.trainer_state.to_ivalue(),
      checkpoint.trainer_backend_state.to_ivalue(),  checkpoint.registered_state.to_ivalue(),
      checkpoint.hyperparameters.to_ivalue(),        checkpoint.metadata.to_ivalue()};
  constexpr int kRegistered = 3;
  storages_.clear();
  uint64_t needed = 0;
  // The registered state first: a storage it shares with the rest is copied now.
  plan(states[kRegistered], /*now=*/true, needed);
  for (int i = 0; i < 6; ++i) {
    if (i != kRegistered) plan(states[i], /*now=*/!defer, needed);
  }
  // Page-locked staging memory where a storage is on CUDA (its copies are then asynchronous DMA),
  // chosen at run time; pageable memory for host and other devices' storages.
  bool pinned = false;
  for (const auto& entry : storages_) pinned = pinned || entry.second.source.device().is_cuda();
  if (needed > capacity_ || pinned != pinned_.defined()) allocate(needed, pinned);
  Snapshot result;
  std::vector<Copy> now;
  std::vector<std::pair<c10::Storage, uint64_t>> device_copies;
  for (auto& [impl, staged] : storages_) {
    char* target = base_ + staged.offset;
    const c10::Device device = staged.source.device();
    if (device.is_cpu()) {
      const char* source = static_cast<const char*>(impl->data());
      auto& copies = staged.now ? now : result.deferred;
      for (std::size_t done = 0; done < impl->nbytes(); done += kCopyChunk) {
        copies.push_back(
            {source + done, target + done, std::min(kCopyChunk, impl->nbytes() - done)});
      }
      if (!staged.now) result.sources.push_back(staged.source);
      staged.storage = c10::Storage(c10::Storage::use_byte_size_t(), impl->nbytes(),
                                    at::DataPtr(target, target, &no_delete, at::Device(at::kCPU)),
                                    nullptr, false);
    } else {
      device_copies.emplace_back(staged.source, staged.offset);
      result.sources.push_back(staged.source);
      // A host storage that the file still records as on `device`, as a synchronous save does.
      staged.storage = c10::Storage(c10::Storage::use_byte_size_t(), impl->nbytes(),
                                    host_copy_data_ptr(target, device), nullptr, false);
    }
  }
  if (!device_copies.empty()) {
    const at::Tensor staging =
        pinned_.defined() ? pinned_
                          : at::from_blob(base_, {static_cast<int64_t>(capacity_)}, at::kByte);
    result.device_copies = issue_device_copies(device_copies, staging);
  }
  copy(now);  // without defer, all the time save() blocks for, with the wait for the devices:
  if (!defer) wait_for_devices(result);
  result.checkpoint = Checkpoint{
      StateDict::from_ivalue(copy_of(states[0])), StateDict::from_ivalue(copy_of(states[1])),
      StateDict::from_ivalue(copy_of(states[2])), StateDict::from_ivalue(copy_of(states[3])),
      StateDict::from_ivalue(copy_of(states[4])), StateDict::from_ivalue(copy_of(states[5]))};
  storages_.clear();
  return result;
}

void Stager::allocate(uint64_t needed, bool pinned) {
  staging_.reset();  // the old buffer goes before the new one comes: one buffer at a time
  pinned_ = at::Tensor();
  base_ = nullptr;
  capacity_ = 0;
  const uint64_t size = (needed + kHugePage - 1) / kHugePage * kHugePage;
  if (pinned) {
    try {
      pinned_ = at::empty({static_cast<int64_t>(size)},
                          at::TensorOptions().dtype(at::kByte).pinned_memory(true));
    } catch (const c10::Error&) {
      throw CheckpointError("cannot stage a checkpoint of " + std::to_string(needed) +
                                " bytes for a background save: out of page-locked memory",
                            {}, ENOMEM);
    }
    base_ = static_cast<char*>(pinned_.data_ptr());
  } else {
    // In transparent huge pages where the system allows it: fewer page faults the first time.
    staging_.reset(static_cast<char*>(std::aligned_alloc(kHugePage, size)));
    if (!staging_) {
      throw CheckpointError("cannot stage a checkpoint of " + std::to_string(needed) +
                                " bytes for a background save: out of memory",
                            {}, ENOMEM);
    }
    ::madvise(staging_.get(), size, MADV_HUGEPAGE);  // advice only: failure is harmless
    base_ = staging_.get();
  }
  capacity_ = needed;
}

void Stager::wait_for_devices(Snapshot& snapshot) {
  for (const c10::Event& event : snapshot.device_copies) compat::synchronize(event);
  snapshot.device_copies.clear();
}

void Stager::copy(const std::vector<Copy>& copies) {
  at::parallel_for(0, static_cast<int64_t>(copies.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) std::memcpy(copies[i].to, copies[i].from, copies[i].size);
  });
}

void Stager::plan(const c10::IValue& value, bool now, uint64_t& needed) {
  if (value.isTensor()) {
    const at::Tensor& tensor = value.toTensor();
    if (!stageable(tensor)) return;
    c10::StorageImpl* impl = tensor.storage().unsafeGetStorageImpl();
    if (storages_.count(impl) == 0) {
      Staged& staged = storages_[impl];
      staged.offset = needed;
      staged.now = now;
      staged.source = tensor.storage();
      needed += (impl->nbytes() + kAlignment - 1) / kAlignment * kAlignment;
    }
  } else if (value.isGenericDict()) {
    for (const auto& item : value.toGenericDict()) plan(item.value(), now, needed);
  } else if (value.isList()) {
    for (const auto& item : value.toListRef()) plan(item, now, needed);
  } else if (value.isTuple()) {
    for (const auto& item : value.toTupleRef().elements()) plan(item, now, needed);
  }
}

c10::IValue Stager::copy_of(const c10::IValue& value) {
  if (value.isTensor()) {
    const at::Tensor& tensor = value.toTensor();
    if (!stageable(tensor)) return value;
    const auto& staged = storages_.at(tensor.storage().unsafeGetStorageImpl());
    at::Tensor copy = at::empty({0}, at::TensorOptions().dtype(tensor.dtype()));
    copy.set_(staged.storage, tensor.storage_offset(), tensor.sizes(), tensor.strides());
    if (tensor.requires_grad()) copy.set_requires_grad(true);
    return copy;
  }
  if (value.isGenericDict()) {
    const auto dict = value.toGenericDict();
    c10::impl::GenericDict copy(dict.keyType(), dict.valueType());
    copy.reserve(dict.size());
    for (const auto& item : dict) copy.insert(item.key(), copy_of(item.value()));
    return copy;
  }
  if (value.isList()) {
    const auto list = value.toList();
    c10::impl::GenericList copy(list.elementType());
    copy.reserve(list.size());
    for (const auto& item : value.toListRef()) copy.push_back(copy_of(item));
    return copy;
  }
  if (value.isTuple()) {
    std::vector<c10::IValue> elements;
    for (const auto& item : value.toTupleRef().elements()) elements.push_back(copy_of(item));
    return c10::ivalue::Tuple::create(std::move(elements));
  }
  return value;  // ints, doubles, bools, None and strings are immutable
}

BackgroundWriter::BackgroundWriter(Write write)
    : write_(std::move(write)), worker_([this] { run(); }) {}

BackgroundWriter::~BackgroundWriter() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  worker_.join();  // after the job in flight, if any, has finished
}

void BackgroundWriter::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    changed_.wait(lock, [&] { return stop_ || job_.has_value(); });
    if (!job_) return;
    lock.unlock();
    std::exception_ptr error;
    std::string what;
    try {
      if (!job_->snapshot.deferred.empty() || !job_->snapshot.device_copies.empty()) {
        Stager::copy(job_->snapshot.deferred);
        Stager::wait_for_devices(job_->snapshot);
        job_->snapshot.sources.clear();  // the live storages are no longer needed here
        lock.lock();
        staging_ = false;
        lock.unlock();
        changed_.notify_all();
      }
      write_(job_->snapshot.checkpoint, job_->name, job_->must_land);
    } catch (const std::exception& e) {
      error = std::current_exception();
      what = e.what();
    } catch (...) {
      error = std::current_exception();
      what = "unknown exception";
    }
    if (error) {
      logger()->error("background save of checkpoint index={} failed: {}", job_->name.index, what);
    }
    lock.lock();
    job_.reset();  // releases the snapshot's tensors before the staging memory can be reused
    staging_ = false;
    if (error) {
      failure_ = error;
      failure_what_ = what;
    }
    changed_.notify_all();
  }
}

void BackgroundWriter::submit(const Checkpoint& checkpoint, const CheckpointName& name,
                              bool stage_in_background, bool must_land) {
  Stager::Snapshot snapshot = stager_.snapshot(checkpoint, stage_in_background);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    staging_ = !snapshot.deferred.empty() || !snapshot.device_copies.empty();
    job_ = Job{std::move(snapshot), name, must_land};
  }
  changed_.notify_all();
}

void BackgroundWriter::wait_staged() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return !staging_; });
}

void BackgroundWriter::wait_idle() {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [&] { return !job_.has_value(); });
}

void BackgroundWriter::rethrow_failure() {
  std::exception_ptr error;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    std::swap(error, failure_);
    failure_what_.clear();
  }
  if (error) std::rethrow_exception(error);
}

std::string BackgroundWriter::pending_failure() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return failure_ ? failure_what_ : std::string();
}

}  // namespace ckpt::detail
