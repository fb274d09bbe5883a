#pragma once

#include <ATen/core/ivalue.h>

#include <string>
#include <vector>

namespace ckpt::detail {

/// Pickles an IValue with protocol 2 exactly as Python's `torch.save` lays out a dict: tensors
/// become `torch._utils._rebuild_tensor_v2` calls whose storages are persistent ids
/// `('storage', torch.<Type>Storage, '<key>', 'cpu', <numel>)`. Storages shared by several tensors
/// are written once (memoized). storages() lists the tensor whose storage goes in `data/<i>`.
class PickleWriter {
 public:
  /// Returns the pickle bytes of `value`. Throws CheckpointError naming the key path of a value
  /// that cannot be written (e.g. a non-CPU or sparse tensor, or an unsupported IValue kind).
  std::string pickle(const c10::IValue& value);
  const std::vector<at::Tensor>& storages() const noexcept { return storages_; }

 private:
  void push(const c10::IValue& value, const std::string& where, int depth);
  void push_tensor(const at::Tensor& tensor, const std::string& where);
  void push_int(int64_t value);
  void push_double(double value);
  void push_string(const std::string& value);
  void push_global(const char* module, const char* name);
  void push_tuple_of_ints(c10::IntArrayRef values);
  void op(char opcode) { out_.push_back(opcode); }

  std::string out_;
  std::vector<at::Tensor> storages_;
  std::vector<std::pair<const void*, uint32_t>> storage_memo_;  // StorageImpl* -> memo slot
  uint32_t next_memo_ = 0;
};

/// The Python storage class name for a dtype ("FloatStorage"), or empty if it has none.
std::string storage_type_name(c10::ScalarType type);

}  // namespace ckpt::detail
