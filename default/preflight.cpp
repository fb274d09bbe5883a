#include "preflight.h"

#include <ckpt/checkpoint_error.h>
#include <ckpt/logger.h>

#include <spdlog/spdlog.h>

#include <ATen/core/ivalue.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <vector>

namespace ckpt::detail {
namespace {

double megabytes(uint64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

}  // namespace

uint64_t estimate_bytes(const Checkpoint& checkpoint) {
  std::set<const void*> seen;
  uint64_t bytes = 64 * 1024;
  std::vector<c10::IValue> pending;
  for (const StateDict* part : {&checkpoint.module_interface_state, &checkpoint.trainer_state,
                                &checkpoint.trainer_backend_state, &checkpoint.registered_state,
                                &checkpoint.hyperparameters, &checkpoint.metadata}) {
    for (const auto& entry : *part) pending.push_back(entry.second);
  }
  while (!pending.empty()) {
    const c10::IValue value = std::move(pending.back());
    pending.pop_back();
    bytes += 64;
    if (value.isTensor()) {
      const at::Tensor& tensor = value.toTensor();
      if (tensor.defined() && seen.insert(tensor.storage().unsafeGetStorageImpl()).second) {
        bytes += tensor.storage().nbytes() + 256;
      }
    } else if (value.isGenericDict()) {
      for (const auto& entry : value.toGenericDict()) pending.push_back(entry.value());
    } else if (value.isList()) {
      for (const auto& element : value.toListRef()) pending.push_back(element);
    } else if (value.isTuple()) {
      for (const auto& element : value.toTupleRef().elements()) pending.push_back(element);
    } else if (value.isString()) {
      bytes += value.toStringRef().size();
    }
  }
  return bytes;
}

void Preflight::check(const Checkpoint& checkpoint, const std::filesystem::path& path,
                      bool may_prune) {
  const auto dir = path.parent_path();
  auto available = storage_.available_space(dir);
  if (!available) return;  // the storage does not know: an object store, some FUSE filesystems
  const uint64_t expected = estimate_bytes(checkpoint);
  const auto margin = static_cast<uint64_t>(args_.disk_margin_mb * 1024 * 1024);
  if (*available >= expected + margin) return;
  if (may_prune && args_.keep_last_n > 1) {
    // Make room now for what retention would delete after this save anyway, keeping the newest
    // resumable checkpoints, at least one, until the new one is durable; but only if that is
    // enough: a save that fails anyway must not have cost a checkpoint.
    const auto victims = retention_.victims(args_.keep_last_n - 1);
    uint64_t freeable = 0;
    for (const auto& victim : victims) {
      if (const auto info = storage_.stat(victim)) freeable += info->size;
    }
    if (!victims.empty() && *available + freeable >= expected + margin) {
      logger()->warn("{:.2f} MB free in {}, {:.2f} MB needed: applying retention before the save",
                     megabytes(*available), dir.string(), megabytes(expected + margin));
      retention_.apply(args_.keep_last_n - 1);
      available = storage_.available_space(dir);
      if (!available || *available >= expected + margin) return;
    }
  }
  throw CheckpointError("not enough free space to save " + path.string() + ": about " +
                            std::to_string(static_cast<int64_t>(megabytes(expected) + 0.5)) +
                            " MB expected plus disk_margin_mb " +
                            std::to_string(static_cast<int64_t>(args_.disk_margin_mb)) +
                            " MB needed, " +
                            std::to_string(static_cast<int64_t>(megabytes(*available))) +
                            " MB free; nothing was written (" + std::strerror(ENOSPC) + ")",
                        path, ENOSPC);
}

}  // namespace ckpt::detail
