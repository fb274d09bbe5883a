#include "format/pickle_writer.h"

#include "format/device_copies.h"

#include <ckpt/checkpoint_error.h>

#include <ATen/ATen.h>

#include <cstring>

namespace ckpt::detail {
namespace {

// Pickle opcodes (Python's Lib/pickle.py).
constexpr char kProto = '\x80';
constexpr char kStop = '.';
constexpr char kMark = '(';
constexpr char kNone = 'N';
constexpr char kNewTrue = '\x88';
constexpr char kNewFalse = '\x89';
constexpr char kBinInt = 'J';
constexpr char kBinInt1 = 'K';
constexpr char kBinInt2 = 'M';
constexpr char kLong1 = '\x8a';
constexpr char kBinFloat = 'G';
constexpr char kBinUnicode = 'X';
constexpr char kEmptyList = ']';
constexpr char kAppends = 'e';
constexpr char kEmptyTuple = ')';
constexpr char kTuple = 't';
constexpr char kEmptyDict = '}';
constexpr char kSetItems = 'u';
constexpr char kGlobal = 'c';
constexpr char kReduce = 'R';
constexpr char kBinPersId = 'Q';
constexpr char kLongBinPut = 'r';
constexpr char kLongBinGet = 'j';

constexpr int kMaxDepth = 512;

void append_le32(std::string& out, uint32_t value) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

std::string child(const std::string& where, const std::string& key) {
  return where.empty() ? key : where + "." + key;
}

}  // namespace

std::string storage_type_name(c10::ScalarType type) {
  switch (type) {
    case c10::ScalarType::Float: return "FloatStorage";
    case c10::ScalarType::Double: return "DoubleStorage";
    case c10::ScalarType::Half: return "HalfStorage";
    case c10::ScalarType::BFloat16: return "BFloat16Storage";
    case c10::ScalarType::Long: return "LongStorage";
    case c10::ScalarType::Int: return "IntStorage";
    case c10::ScalarType::Short: return "ShortStorage";
    case c10::ScalarType::Char: return "CharStorage";
    case c10::ScalarType::Byte: return "ByteStorage";
    case c10::ScalarType::Bool: return "BoolStorage";
    case c10::ScalarType::ComplexFloat: return "ComplexFloatStorage";
    case c10::ScalarType::ComplexDouble: return "ComplexDoubleStorage";
    default: return {};
  }
}

std::string PickleWriter::pickle(const c10::IValue& value) {
  out_.clear();
  storages_.clear();
  storage_memo_.clear();
  next_memo_ = 0;
  out_.push_back(kProto);
  out_.push_back('\x02');
  push(value, "", 0);
  op(kStop);
  return std::move(out_);
}

void PickleWriter::push_int(int64_t value) {
  if (value >= 0 && value < 256) {
    op(kBinInt1);
    out_.push_back(static_cast<char>(value));
  } else if (value >= 0 && value < 65536) {
    op(kBinInt2);
    out_.push_back(static_cast<char>(value & 0xff));
    out_.push_back(static_cast<char>((value >> 8) & 0xff));
  } else if (value >= INT32_MIN && value <= INT32_MAX) {
    op(kBinInt);
    append_le32(out_, static_cast<uint32_t>(static_cast<int32_t>(value)));
  } else {
    op(kLong1);
    out_.push_back('\x08');
    const auto bits = static_cast<uint64_t>(value);
    for (int i = 0; i < 8; ++i) out_.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
  }
}

void PickleWriter::push_double(double value) {
  op(kBinFloat);
  uint64_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  for (int i = 7; i >= 0; --i) out_.push_back(static_cast<char>((bits >> (8 * i)) & 0xff));
}

void PickleWriter::push_string(const std::string& value) {
  op(kBinUnicode);
  append_le32(out_, static_cast<uint32_t>(value.size()));
  out_ += value;
}

void PickleWriter::push_global(const char* module, const char* name) {
  op(kGlobal);
  out_ += module;
  out_.push_back('\n');
  out_ += name;
  out_.push_back('\n');
}

void PickleWriter::push_tuple_of_ints(c10::IntArrayRef values) {
  op(kMark);
  for (int64_t v : values) push_int(v);
  op(kTuple);
}

void PickleWriter::push_tensor(const at::Tensor& tensor, const std::string& where) {
  if (!tensor.defined()) {
    throw CheckpointError("cannot save '" + where + "': undefined tensor");
  }
  if (tensor.layout() != c10::kStrided || tensor.is_quantized()) {
    throw CheckpointError("cannot save '" + where + "': only dense tensors are supported");
  }
  if (tensor.device().is_meta()) {
    throw CheckpointError("cannot save '" + where + "': tensor is on the meta device (no data)");
  }
  const std::string type_name = storage_type_name(tensor.scalar_type());
  if (type_name.empty()) {
    throw CheckpointError("cannot save '" + where + "': unsupported dtype " +
                          std::string(c10::toString(tensor.scalar_type())));
  }
  push_global("torch._utils", "_rebuild_tensor_v2");
  op(kMark);
  const c10::Storage& storage = tensor.storage();
  const void* key = storage.unsafeGetStorageImpl();
  bool memoized = false;
  for (const auto& entry : storage_memo_) {
    if (entry.first == key) {
      op(kLongBinGet);
      append_le32(out_, entry.second);
      memoized = true;
      break;
    }
  }
  if (!memoized) {
    op(kMark);
    push_string("storage");
    push_global("torch", type_name.c_str());
    push_string(std::to_string(storages_.size()));
    push_string(storage_location(storage));  // as torch.save: "cpu", "cuda:0", ...
    push_int(static_cast<int64_t>(storage.nbytes() / tensor.element_size()));
    op(kTuple);
    op(kBinPersId);
    op(kLongBinPut);
    append_le32(out_, next_memo_);
    storage_memo_.emplace_back(key, next_memo_++);
    storages_.push_back(tensor);
  }
  push_int(tensor.storage_offset());
  push_tuple_of_ints(tensor.sizes());
  push_tuple_of_ints(tensor.strides());
  op(tensor.requires_grad() ? kNewTrue : kNewFalse);
  push_global("collections", "OrderedDict");  // backward hooks: always empty
  op(kEmptyTuple);
  op(kReduce);
  op(kTuple);
  op(kReduce);
}

void PickleWriter::push(const c10::IValue& value, const std::string& where, int depth) {
  if (depth > kMaxDepth) {
    throw CheckpointError("cannot save '" + where + "': nested deeper than " +
                          std::to_string(kMaxDepth) + " levels");
  }
  if (value.isNone()) {
    op(kNone);
  } else if (value.isBool()) {
    op(value.toBool() ? kNewTrue : kNewFalse);
  } else if (value.isInt()) {
    push_int(value.toInt());
  } else if (value.isDouble()) {
    push_double(value.toDouble());
  } else if (value.isString()) {
    push_string(value.toStringRef());
  } else if (value.isTensor()) {
    push_tensor(value.toTensor(), where);
  } else if (value.isList()) {
    op(kEmptyList);
    auto items = value.toListRef();
    if (!items.empty()) {
      op(kMark);
      for (std::size_t i = 0; i < items.size(); ++i) {
        push(items[i], child(where, std::to_string(i)), depth + 1);
      }
      op(kAppends);
    }
  } else if (value.isTuple()) {
    const auto& items = value.toTupleRef().elements();
    if (items.empty()) {
      op(kEmptyTuple);
    } else {
      op(kMark);
      for (std::size_t i = 0; i < items.size(); ++i) {
        push(items[i], child(where, std::to_string(i)), depth + 1);
      }
      op(kTuple);
    }
  } else if (value.isGenericDict()) {
    op(kEmptyDict);
    auto dict = value.toGenericDict();
    if (!dict.empty()) {
      op(kMark);
      for (const auto& entry : dict) {
        const c10::IValue& k = entry.key();
        if (!(k.isString() || k.isInt() || k.isBool() || k.isDouble())) {
          throw CheckpointError("cannot save '" + where + "': dict key of type " + k.tagKind() +
                                " (keys must be strings, ints, floats or bools)");
        }
        push(k, where, depth + 1);
        const std::string name = k.isString() ? k.toStringRef() : c10::str(k);
        push(entry.value(), child(where, name), depth + 1);
      }
      op(kSetItems);
    }
  } else {
    throw CheckpointError("cannot save '" + where + "': unsupported value of type " +
                          value.tagKind());
  }
}

}  // namespace ckpt::detail
