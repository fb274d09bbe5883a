#include <ckpt/state_dict.h>

#include <ckpt/checkpoint_error.h>

#include <ATen/ATen.h>

namespace ckpt {

StateDict::StateDict(std::initializer_list<value_type> items) {
  for (const auto& item : items) insert_or_assign(item.first, item.second);
}

const c10::IValue& StateDict::at(const std::string& key) const {
  auto it = index_.find(key);
  if (it == index_.end()) {
    std::string present;
    for (const auto& item : items_) present += (present.empty() ? "'" : ", '") + item.first + "'";
    throw CheckpointError("no key '" + key + "' in state dict (keys: " +
                          (present.empty() ? std::string("none") : present) + ")");
  }
  return items_[it->second].second;
}

c10::IValue& StateDict::at(const std::string& key) {
  return const_cast<c10::IValue&>(static_cast<const StateDict&>(*this).at(key));
}

void StateDict::insert_or_assign(std::string key, c10::IValue value) {
  auto it = index_.find(key);
  if (it != index_.end()) {
    items_[it->second].second = std::move(value);
    return;
  }
  index_.emplace(key, items_.size());
  items_.emplace_back(std::move(key), std::move(value));
}

bool StateDict::erase(const std::string& key) {
  auto it = index_.find(key);
  if (it == index_.end()) return false;
  const std::size_t position = it->second;
  index_.erase(it);
  items_.erase(items_.begin() + static_cast<std::ptrdiff_t>(position));
  for (auto& entry : index_) {
    if (entry.second > position) --entry.second;
  }
  return true;
}

void StateDict::clear() noexcept {
  items_.clear();
  index_.clear();
}

std::vector<std::string> StateDict::keys() const {
  std::vector<std::string> result;
  result.reserve(items_.size());
  for (const auto& item : items_) result.push_back(item.first);
  return result;
}

c10::IValue StateDict::to_ivalue() const {
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  for (const auto& item : items_) dict.insert(item.first, item.second);
  return dict;
}

StateDict StateDict::from_ivalue(const c10::IValue& value, const std::string& what) {
  if (!value.isGenericDict()) {
    throw CheckpointError(what + " must be a dict, got " + value.tagKind());
  }
  StateDict result;
  for (const auto& entry : value.toGenericDict()) {
    if (!entry.key().isString()) {
      throw CheckpointError(what + " must have string keys, got a key of type " +
                            entry.key().tagKind());
    }
    result.insert_or_assign(entry.key().toStringRef(), entry.value());
  }
  return result;
}

namespace {

bool deep_equal_at(const c10::IValue& a, const c10::IValue& b, int depth) {
  if (depth > 512) throw CheckpointError("deep_equal: values nested deeper than 512 levels");
  if (a.isTensor() || b.isTensor()) {
    if (!a.isTensor() || !b.isTensor()) return false;
    const at::Tensor& x = a.toTensor();
    const at::Tensor& y = b.toTensor();
    if (x.defined() != y.defined()) return false;
    if (!x.defined()) return true;
    return x.scalar_type() == y.scalar_type() && x.sizes() == y.sizes() && x.equal(y);
  }
  if (a.isList() || b.isList()) {
    if (!a.isList() || !b.isList()) return false;
    auto x = a.toListRef();
    auto y = b.toListRef();
    if (x.size() != y.size()) return false;
    for (std::size_t i = 0; i < x.size(); ++i) {
      if (!deep_equal_at(x[i], y[i], depth + 1)) return false;
    }
    return true;
  }
  if (a.isTuple() || b.isTuple()) {
    if (!a.isTuple() || !b.isTuple()) return false;
    const auto& x = a.toTupleRef().elements();
    const auto& y = b.toTupleRef().elements();
    if (x.size() != y.size()) return false;
    for (std::size_t i = 0; i < x.size(); ++i) {
      if (!deep_equal_at(x[i], y[i], depth + 1)) return false;
    }
    return true;
  }
  if (a.isGenericDict() || b.isGenericDict()) {
    if (!a.isGenericDict() || !b.isGenericDict()) return false;
    auto x = a.toGenericDict();
    auto y = b.toGenericDict();
    if (x.size() != y.size()) return false;
    auto i = x.begin();
    auto j = y.begin();
    for (; i != x.end(); ++i, ++j) {
      if (!deep_equal_at(i->key(), j->key(), depth + 1) ||
          !deep_equal_at(i->value(), j->value(), depth + 1)) {
        return false;
      }
    }
    return true;
  }
  if (a.isNone() || b.isNone()) return a.isNone() && b.isNone();
  if (a.isBool() || b.isBool()) return a.isBool() && b.isBool() && a.toBool() == b.toBool();
  if (a.isInt() || b.isInt()) return a.isInt() && b.isInt() && a.toInt() == b.toInt();
  if (a.isDouble() || b.isDouble()) {
    return a.isDouble() && b.isDouble() && a.toDouble() == b.toDouble();
  }
  if (a.isString() || b.isString()) {
    return a.isString() && b.isString() && a.toStringRef() == b.toStringRef();
  }
  throw CheckpointError(std::string("deep_equal: unsupported value kind ") + a.tagKind());
}

}  // namespace

bool deep_equal(const c10::IValue& a, const c10::IValue& b) { return deep_equal_at(a, b, 0); }

bool deep_equal(const StateDict& a, const StateDict& b) { return a == b; }

StateDict deep_copy(const StateDict& state) {
  return StateDict::from_ivalue(state.to_ivalue().deepcopy(), "state");
}

bool operator==(const StateDict& a, const StateDict& b) {
  if (a.size() != b.size()) return false;
  auto i = a.begin();
  auto j = b.begin();
  for (; i != a.end(); ++i, ++j) {
    if (i->first != j->first || !deep_equal(i->second, j->second)) return false;
  }
  return true;
}

}  // namespace ckpt
