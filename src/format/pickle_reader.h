#pragma once

#include <ATen/core/ivalue.h>
#include <c10/core/Storage.h>

#include <cstddef>
#include <functional>
#include <string>

namespace ckpt::detail {

/// Loads the storage with the given key (the `data/<key>` record), holding `numel` elements of
/// `type`. Must throw CheckpointError if the record is missing or has the wrong size.
using StorageLoader =
    std::function<c10::Storage(const std::string& key, c10::ScalarType type, int64_t numel)>;

/// Unpickles the subset of pickle that Python's `torch.save` emits for dicts of tensors and plain
/// data (protocols 2 to 4). Globals are limited to an allowlist: `collections.OrderedDict`,
/// `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter` and `torch.<T>Storage`.
/// Every read is bounds-checked, nesting is limited, and any malformed input throws CheckpointError
/// with `source` (the file) and the byte offset in the message. Never executes code.
c10::IValue read_pickle(const char* data, std::size_t size, const StorageLoader& load_storage,
                        const std::string& source);

}  // namespace ckpt::detail
