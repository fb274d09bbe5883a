#include "background_writer.h"

#include <ckpt/checkpoint_error.h>
#include <ckpt/logger.h>

#include <spdlog/spdlog.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

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

// Tensors the writer can write (dense CPU) are staged; anything else passes through unchanged,
// to fail in the writer with the synchronous save's message.
bool stageable(const at::Tensor& tensor) {
  return tensor.defined() && tensor.layout() == at::kStrided && tensor.device().is_cpu() &&
         tensor.has_storage();
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
  if (needed > capacity_) {
    staging_.reset();  // the old buffer goes before the new one comes: one buffer at a time
    capacity_ = 0;
    // In transparent huge pages where the system allows it: fewer page faults the first time.
    const uint64_t size = (needed + kHugePage - 1) / kHugePage * kHugePage;
    staging_.reset(static_cast<char*>(std::aligned_alloc(kHugePage, size)));
    if (!staging_) {
      throw CheckpointError("cannot stage a checkpoint of " + std::to_string(needed) +
                                " bytes for a background save: out of memory",
                            {}, ENOMEM);
    }
    ::madvise(staging_.get(), size, MADV_HUGEPAGE);  // advice only: failure is harmless
    capacity_ = needed;
  }
  Snapshot result;
  std::vector<Copy> now;
  for (auto& [impl, staged] : storages_) {
    char* target = staging_.get() + staged.offset;
    const char* source = static_cast<const char*>(impl->data());
    auto& copies = staged.now ? now : result.deferred;
    for (std::size_t done = 0; done < impl->nbytes(); done += kCopyChunk) {
      copies.push_back({source + done, target + done, std::min(kCopyChunk, impl->nbytes() - done)});
    }
    if (!staged.now) {
      result.sources.push_back(staged.source);
    }
    staged.storage =
        c10::Storage(c10::Storage::use_byte_size_t(), impl->nbytes(),
                     at::DataPtr(target, target, &no_delete, at::Device(at::kCPU)), nullptr, false);
  }
  copy(now);  // without defer, all the time save() blocks for
  result.checkpoint = Checkpoint{
      StateDict::from_ivalue(copy_of(states[0])), StateDict::from_ivalue(copy_of(states[1])),
      StateDict::from_ivalue(copy_of(states[2])), StateDict::from_ivalue(copy_of(states[3])),
      StateDict::from_ivalue(copy_of(states[4])), StateDict::from_ivalue(copy_of(states[5]))};
  storages_.clear();
  return result;
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
      if (!job_->snapshot.deferred.empty()) {
        Stager::copy(job_->snapshot.deferred);
        job_->snapshot.sources.clear();  // the live storages are no longer needed here
        lock.lock();
        staging_ = false;
        lock.unlock();
        changed_.notify_all();
      }
      write_(job_->snapshot.checkpoint, job_->name);
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
                              bool stage_in_background) {
  Stager::Snapshot snapshot = stager_.snapshot(checkpoint, stage_in_background);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    staging_ = !snapshot.deferred.empty();
    job_ = Job{std::move(snapshot), name};
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
