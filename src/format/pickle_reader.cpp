#include "format/pickle_reader.h"

#include "format/pickle_writer.h"

#include <ckpt/checkpoint_error.h>

#include <ATen/ATen.h>

#include <cstring>
#include <optional>
#include <unordered_map>
#include <vector>

namespace ckpt::detail {
namespace {

constexpr int kMaxDepth = 512;
constexpr std::size_t kMaxTensorDims = 64;

// The allowlisted globals.
enum class Global { OrderedDict, Counter, RebuildTensorV2, RebuildParameter, Storage };

// One entry of the unpickler's stack or memo. Most are plain values; a few are objects that only
// exist while unpickling (a mark, an allowlisted global, a storage, or a tuple containing those).
struct Item {
  enum class Kind { Value, Mark, Global, Storage, SpecialTuple };
  Kind kind = Kind::Value;
  c10::IValue value;
  Global global = Global::OrderedDict;
  c10::ScalarType storage_type = c10::ScalarType::Float;  // Global::Storage, Kind::Storage
  c10::Storage storage;                                   // Kind::Storage
  std::vector<Item> items;                                // Kind::SpecialTuple

  static Item of(c10::IValue v) {
    Item item;
    item.value = std::move(v);
    return item;
  }
};

std::optional<c10::ScalarType> storage_type_from_name(const std::string& name) {
  static const c10::ScalarType kTypes[] = {
      c10::ScalarType::Float, c10::ScalarType::Double,   c10::ScalarType::Half,
      c10::ScalarType::BFloat16, c10::ScalarType::Long,  c10::ScalarType::Int,
      c10::ScalarType::Short, c10::ScalarType::Char,     c10::ScalarType::Byte,
      c10::ScalarType::Bool,  c10::ScalarType::ComplexFloat, c10::ScalarType::ComplexDouble};
  for (auto type : kTypes) {
    if (storage_type_name(type) == name) return type;
  }
  return std::nullopt;
}

class Reader {
 public:
  Reader(const char* data, std::size_t size, const StorageLoader& load_storage,
         const std::string& source)
      : data_(data), size_(size), load_storage_(load_storage), source_(source) {}

  c10::IValue run();

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw CheckpointError("malformed pickle in " + source_ + " at byte " +
                              std::to_string(opcode_pos_) + ": " + what,
                          source_);
  }
  const char* take(std::size_t n) {
    if (n > size_ - pos_) fail("truncated (needs " + std::to_string(n) + " more bytes)");
    const char* p = data_ + pos_;
    pos_ += n;
    return p;
  }
  uint8_t u8() { return static_cast<uint8_t>(*take(1)); }
  uint64_t le(std::size_t n) {
    const auto* p = reinterpret_cast<const unsigned char*>(take(n));
    uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
    return v;
  }
  std::string line() {
    const void* end = std::memchr(data_ + pos_, '\n', size_ - pos_);
    if (end == nullptr) fail("unterminated GLOBAL name");
    const std::size_t n = static_cast<const char*>(end) - (data_ + pos_);
    std::string s(data_ + pos_, n);
    pos_ += n + 1;
    return s;
  }
  Item pop() {
    if (stack_.empty()) fail("stack underflow");
    Item item = std::move(stack_.back());
    stack_.pop_back();
    return item;
  }
  c10::IValue pop_value(const char* what) {
    Item item = pop();
    if (item.kind != Item::Kind::Value) fail(std::string(what) + " expects a plain value");
    return std::move(item.value);
  }
  // Items above the topmost mark, removing them and the mark.
  std::vector<Item> pop_to_mark() {
    if (marks_.empty()) fail("no MARK on the stack");
    const std::size_t start = marks_.back();
    marks_.pop_back();
    if (start > stack_.size()) fail("MARK beyond the stack");
    std::vector<Item> items(std::make_move_iterator(stack_.begin() + start),
                            std::make_move_iterator(stack_.end()));
    stack_.resize(start);
    return items;
  }
  Item& top() {
    if (stack_.empty()) fail("stack underflow");
    return stack_.back();
  }
  void push(Item item) {
    if (stack_.size() > size_) fail("stack larger than the pickle");
    stack_.push_back(std::move(item));
  }
  Item make_tuple(std::vector<Item> items);
  void memo_put(uint64_t index) {
    if (stack_.empty()) fail("PUT on an empty stack");
    if (memo_.size() > size_) fail("too many memo entries");
    memo_[index] = stack_.back();
  }
  void memo_get(uint64_t index) {
    auto it = memo_.find(index);
    if (it == memo_.end()) fail("GET of unknown memo entry " + std::to_string(index));
    push(it->second);
  }
  void append_to_list(Item& list, std::vector<Item> items);
  void set_items(Item& dict, std::vector<Item> items);
  Item global(const std::string& module, const std::string& name);
  Item reduce(Item callable, Item args);
  Item persistent_load(Item pid);
  at::Tensor rebuild_tensor(std::vector<Item>& args);
  void check_depth(const c10::IValue& value, int depth);

  const char* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
  std::size_t opcode_pos_ = 0;
  const StorageLoader& load_storage_;
  const std::string& source_;
  std::vector<Item> stack_;
  std::vector<std::size_t> marks_;
  std::unordered_map<uint64_t, Item> memo_;
  std::unordered_map<std::string, c10::Storage> storages_;
};

Item Reader::make_tuple(std::vector<Item> items) {
  bool plain = true;
  for (const auto& item : items) {
    if (item.kind == Item::Kind::Mark) fail("MARK inside a tuple");
    if (item.kind != Item::Kind::Value) plain = false;
  }
  if (!plain) {
    Item tuple;
    tuple.kind = Item::Kind::SpecialTuple;
    tuple.items = std::move(items);
    return tuple;
  }
  std::vector<c10::IValue> values;
  values.reserve(items.size());
  for (auto& item : items) values.push_back(std::move(item.value));
  return Item::of(c10::ivalue::Tuple::create(std::move(values)));
}

void Reader::append_to_list(Item& list, std::vector<Item> items) {
  if (list.kind != Item::Kind::Value || !list.value.isList()) fail("APPEND to a non-list");
  auto target = list.value.toList();
  for (auto& item : items) {
    if (item.kind != Item::Kind::Value) fail("list element is not a plain value");
    target.push_back(std::move(item.value));
  }
}

void Reader::set_items(Item& dict, std::vector<Item> items) {
  if (dict.kind != Item::Kind::Value || !dict.value.isGenericDict()) fail("SETITEM on a non-dict");
  if (items.size() % 2 != 0) fail("SETITEMS with an odd number of items");
  auto target = dict.value.toGenericDict();
  for (std::size_t i = 0; i < items.size(); i += 2) {
    if (items[i].kind != Item::Kind::Value || items[i + 1].kind != Item::Kind::Value) {
      fail("dict key or value is not a plain value");
    }
    const c10::IValue& key = items[i].value;
    if (!(key.isString() || key.isInt() || key.isBool() || key.isDouble())) {
      fail(std::string("dict key of unsupported type ") + key.tagKind());
    }
    target.insert_or_assign(key, std::move(items[i + 1].value));
  }
}

Item Reader::global(const std::string& module, const std::string& name) {
  Item item;
  item.kind = Item::Kind::Global;
  if (module == "collections" && name == "OrderedDict") {
    item.global = Global::OrderedDict;
  } else if (module == "collections" && name == "Counter") {
    // A dict subclass (MultiStepLR's milestones), on torch.load's weights_only allowlist.
    item.global = Global::Counter;
  } else if (module == "torch._utils" && name == "_rebuild_tensor_v2") {
    item.global = Global::RebuildTensorV2;
  } else if (module == "torch._utils" && name == "_rebuild_parameter") {
    item.global = Global::RebuildParameter;
  } else if (module == "torch" && storage_type_from_name(name)) {
    item.global = Global::Storage;
    item.storage_type = *storage_type_from_name(name);
  } else {
    fail("global '" + module + "." + name +
         "' is not allowed (ckpt loads only tensors, storages, OrderedDict, Counter and plain data)");
  }
  return item;
}

Item Reader::persistent_load(Item pid) {
  // ('storage', torch.<T>Storage, key, location, numel)
  if (pid.kind != Item::Kind::SpecialTuple || pid.items.size() != 5) {
    fail("persistent id is not a ('storage', type, key, location, numel) tuple");
  }
  auto& f = pid.items;
  if (f[0].kind != Item::Kind::Value || !f[0].value.isString() ||
      f[0].value.toStringRef() != "storage") {
    fail("persistent id does not start with 'storage'");
  }
  if (f[1].kind != Item::Kind::Global || f[1].global != Global::Storage) {
    fail("persistent id has no storage type");
  }
  if (f[2].kind != Item::Kind::Value || !f[2].value.isString()) fail("storage key is not a string");
  if (f[3].kind != Item::Kind::Value || !f[3].value.isString()) {
    fail("storage location is not a string");
  }
  if (f[4].kind != Item::Kind::Value || !f[4].value.isInt() || f[4].value.toInt() < 0) {
    fail("storage size is not a non-negative int");
  }
  const std::string& key = f[2].value.toStringRef();
  Item storage;
  storage.kind = Item::Kind::Storage;
  storage.storage_type = f[1].storage_type;
  auto it = storages_.find(key);
  if (it != storages_.end()) {
    storage.storage = it->second;
  } else {
    storage.storage = load_storage_(key, f[1].storage_type, f[4].value.toInt());
    storages_.emplace(key, storage.storage);
  }
  const int64_t element_size = static_cast<int64_t>(c10::elementSize(storage.storage_type));
  if (static_cast<int64_t>(storage.storage.nbytes()) / element_size < f[4].value.toInt()) {
    fail("storage '" + key + "' holds fewer elements than its declared " +
         std::to_string(f[4].value.toInt()));
  }
  return storage;
}


at::Tensor Reader::rebuild_tensor(std::vector<Item>& args) {
  // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, md])
  if (args.size() < 6 || args.size() > 7) fail("_rebuild_tensor_v2 expects 6 or 7 arguments");
  if (args[0].kind != Item::Kind::Storage) fail("tensor without a storage");
  auto ints = [&](const Item& item, const char* what) {
    if (item.kind != Item::Kind::Value || !item.value.isTuple()) {
      fail(std::string("tensor ") + what + " is not a tuple");
    }
    const auto& elements = item.value.toTupleRef().elements();
    if (elements.size() > kMaxTensorDims) fail(std::string("tensor ") + what + " has too many dims");
    std::vector<int64_t> result;
    for (const auto& e : elements) {
      if (!e.isInt() || e.toInt() < 0) {
        fail(std::string("tensor ") + what + " holds a negative or non-int value");
      }
      result.push_back(e.toInt());
    }
    return result;
  };
  if (args[1].kind != Item::Kind::Value || !args[1].value.isInt() || args[1].value.toInt() < 0) {
    fail("tensor storage offset is not a non-negative int");
  }
  const int64_t offset = args[1].value.toInt();
  const std::vector<int64_t> sizes = ints(args[2], "size");
  const std::vector<int64_t> strides = ints(args[3], "stride");
  if (sizes.size() != strides.size()) fail("tensor size and stride differ in length");
  // The highest element index the view touches must lie inside the storage.
  const auto& storage = args[0].storage;
  const int64_t element_size = static_cast<int64_t>(c10::elementSize(args[0].storage_type));
  const int64_t storage_numel = static_cast<int64_t>(storage.nbytes()) / element_size;
  bool empty = false;
  for (int64_t s : sizes) empty = empty || s == 0;
  if (!empty) {
    unsigned __int128 last = static_cast<unsigned __int128>(offset);
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      last += static_cast<unsigned __int128>(sizes[i] - 1) * static_cast<uint64_t>(strides[i]);
    }
    if (last >= static_cast<unsigned __int128>(storage_numel)) {
      fail("tensor of shape " + c10::str(c10::IntArrayRef(sizes)) + " at offset " +
           std::to_string(offset) + " needs more than the storage's " +
           std::to_string(storage_numel) + " elements");
    }
  } else if (offset > storage_numel) {
    fail("tensor storage offset beyond its storage");
  }
  at::Tensor tensor = at::empty({0}, at::TensorOptions().dtype(args[0].storage_type));
  tensor.set_(storage, offset, sizes, strides);
  return tensor;
}

Item Reader::reduce(Item callable, Item args) {
  if (callable.kind != Item::Kind::Global) fail("REDUCE of something that is not a global");
  std::vector<Item> arguments;
  if (args.kind == Item::Kind::SpecialTuple) {
    arguments = std::move(args.items);
  } else if (args.kind == Item::Kind::Value && args.value.isTuple()) {
    for (const auto& e : args.value.toTupleRef().elements()) arguments.push_back(Item::of(e));
  } else {
    fail("REDUCE arguments are not a tuple");
  }
  switch (callable.global) {
    case Global::OrderedDict:
      if (!arguments.empty()) fail("OrderedDict() with arguments");
      return Item::of(c10::impl::GenericDict(c10::AnyType::get(), c10::AnyType::get()));
    case Global::Counter:
      // Counter.__reduce__ gives (Counter, (dict(self),)): read as that plain dict.
      if (arguments.empty()) {
        return Item::of(c10::impl::GenericDict(c10::AnyType::get(), c10::AnyType::get()));
      }
      if (arguments.size() != 1 || arguments[0].kind != Item::Kind::Value ||
          !arguments[0].value.isGenericDict()) {
        fail("Counter() expects one dict");
      }
      return Item::of(arguments[0].value);
    case Global::RebuildTensorV2:
      return Item::of(rebuild_tensor(arguments));
    case Global::RebuildParameter:
      // _rebuild_parameter(data, requires_grad, backward_hooks)
      if (arguments.size() != 3 || arguments[0].kind != Item::Kind::Value ||
          !arguments[0].value.isTensor()) {
        fail("_rebuild_parameter expects (tensor, requires_grad, hooks)");
      }
      return Item::of(arguments[0].value);
    case Global::Storage:
      break;
  }
  fail("storage types cannot be called");
}

void Reader::check_depth(const c10::IValue& value, int depth) {
  if (depth > kMaxDepth) {
    fail("containers nested deeper than " + std::to_string(kMaxDepth) +
         " levels (or a container that contains itself)");
  }
  if (value.isList()) {
    for (const auto& e : value.toListRef()) check_depth(e, depth + 1);
  } else if (value.isTuple()) {
    for (const auto& e : value.toTupleRef().elements()) check_depth(e, depth + 1);
  } else if (value.isGenericDict()) {
    for (const auto& e : value.toGenericDict()) check_depth(e.value(), depth + 1);
  }
}

c10::IValue Reader::run() {
  while (true) {
    opcode_pos_ = pos_;
    const char opcode = static_cast<char>(u8());
    switch (opcode) {
      case '\x80':  // PROTO
        if (u8() > 5) fail("unsupported pickle protocol");
        break;
      case '\x95':  // FRAME (protocol 4): frames are just a hint
        take(8);
        break;
      case '.': {  // STOP
        if (stack_.size() != 1 || !marks_.empty()) fail("STOP with a stack of the wrong shape");
        Item result = pop();
        if (result.kind != Item::Kind::Value) fail("the pickled object is not plain data");
        opcode_pos_ = pos_;
        check_depth(result.value, 0);
        return std::move(result.value);
      }
      case '(':  // MARK
        if (marks_.size() > size_) fail("too many MARKs");
        marks_.push_back(stack_.size());
        break;
      case 'N': push(Item::of(c10::IValue())); break;
      case '\x88': push(Item::of(true)); break;
      case '\x89': push(Item::of(false)); break;
      case 'J': push(Item::of(static_cast<int64_t>(static_cast<int32_t>(le(4))))); break;
      case 'K': push(Item::of(static_cast<int64_t>(u8()))); break;
      case 'M': push(Item::of(static_cast<int64_t>(le(2)))); break;
      case '\x8a': {  // LONG1
        const std::size_t n = u8();
        if (n > 8) fail("integer wider than 64 bits");
        uint64_t v = n == 0 ? 0 : le(n);
        if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);  // sign
        push(Item::of(static_cast<int64_t>(v)));
        break;
      }
      case '\x8b': {  // LONG4
        const uint64_t n = le(4);
        if (n > 8) fail("integer wider than 64 bits");
        uint64_t v = n == 0 ? 0 : le(n);
        if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);
        push(Item::of(static_cast<int64_t>(v)));
        break;
      }
      case 'G': {  // BINFLOAT, big-endian
        const auto* p = reinterpret_cast<const unsigned char*>(take(8));
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | p[i];
        double d;
        std::memcpy(&d, &bits, sizeof d);
        push(Item::of(d));
        break;
      }
      case 'X': {  // BINUNICODE
        const uint64_t n = le(4);
        const char* p = take(n);
        push(Item::of(std::string(p, n)));
        break;
      }
      case '\x8c': {  // SHORT_BINUNICODE
        const uint64_t n = u8();
        const char* p = take(n);
        push(Item::of(std::string(p, n)));
        break;
      }
      case '\x8d': {  // BINUNICODE8
        const uint64_t n = le(8);
        const char* p = take(n);
        push(Item::of(std::string(p, n)));
        break;
      }
      case ']': push(Item::of(c10::impl::GenericList(c10::AnyType::get()))); break;
      case 'l': {  // LIST
        auto items = pop_to_mark();
        Item list = Item::of(c10::impl::GenericList(c10::AnyType::get()));
        append_to_list(list, std::move(items));
        push(std::move(list));
        break;
      }
      case 'a': {  // APPEND
        Item value = pop();
        std::vector<Item> items;
        items.push_back(std::move(value));
        append_to_list(top(), std::move(items));
        break;
      }
      case 'e': {  // APPENDS
        auto items = pop_to_mark();
        append_to_list(top(), std::move(items));
        break;
      }
      case ')': push(make_tuple({})); break;
      case 't': push(make_tuple(pop_to_mark())); break;
      case '\x85': {
        std::vector<Item> items(1);
        items[0] = pop();
        push(make_tuple(std::move(items)));
        break;
      }
      case '\x86': {
        std::vector<Item> items(2);
        items[1] = pop();
        items[0] = pop();
        push(make_tuple(std::move(items)));
        break;
      }
      case '\x87': {
        std::vector<Item> items(3);
        items[2] = pop();
        items[1] = pop();
        items[0] = pop();
        push(make_tuple(std::move(items)));
        break;
      }
      case '}':
        push(Item::of(c10::impl::GenericDict(c10::AnyType::get(), c10::AnyType::get())));
        break;
      case 'd': {  // DICT
        auto items = pop_to_mark();
        Item dict = Item::of(c10::impl::GenericDict(c10::AnyType::get(), c10::AnyType::get()));
        set_items(dict, std::move(items));
        push(std::move(dict));
        break;
      }
      case 's': {  // SETITEM
        std::vector<Item> items(2);
        items[1] = pop();
        items[0] = pop();
        set_items(top(), std::move(items));
        break;
      }
      case 'u': {  // SETITEMS
        auto items = pop_to_mark();
        set_items(top(), std::move(items));
        break;
      }
      case 'q': memo_put(u8()); break;
      case 'r': memo_put(le(4)); break;
      case '\x94': memo_put(memo_.size()); break;  // MEMOIZE
      case 'h': memo_get(u8()); break;
      case 'j': memo_get(le(4)); break;
      case 'c': {  // GLOBAL
        std::string module = line();
        std::string name = line();
        push(global(module, name));
        break;
      }
      case '\x93': {  // STACK_GLOBAL
        c10::IValue name = pop_value("STACK_GLOBAL");
        c10::IValue module = pop_value("STACK_GLOBAL");
        if (!name.isString() || !module.isString()) fail("STACK_GLOBAL of non-strings");
        push(global(module.toStringRef(), name.toStringRef()));
        break;
      }
      case 'R': {  // REDUCE
        Item args = pop();
        Item callable = pop();
        push(reduce(std::move(callable), std::move(args)));
        break;
      }
      case 'Q': push(persistent_load(pop())); break;  // BINPERSID
      case 'b': {  // BUILD: OrderedDict's __dict__ (`_metadata`) is dropped
        Item state = pop();
        if (state.kind != Item::Kind::Value) fail("BUILD with a state that is not plain data");
        const Item& target = top();
        if (target.kind != Item::Kind::Value || !target.value.isGenericDict()) {
          fail("BUILD on something that is not an OrderedDict");
        }
        break;
      }
      case '0':  // POP
        pop();
        break;
      default: {
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02x", static_cast<unsigned char>(opcode));
        fail(std::string("unknown or unsupported opcode ") + hex);
      }
    }
  }
}

}  // namespace

c10::IValue read_pickle(const char* data, std::size_t size, const StorageLoader& load_storage,
                        const std::string& source) {
  return Reader(data, size, load_storage, source).run();
}

}  // namespace ckpt::detail
