#pragma once

#include <ATen/core/ivalue.h>

#include <cstddef>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ckpt {

/// An insertion-ordered, string-keyed dictionary of `c10::IValue`: tensors, ints, doubles, bools,
/// strings, None, lists, tuples and nested dicts (`c10::impl::GenericDict`). It is the object
/// Python's `torch.save` writes for a dict, so a file written from a StateDict loads in Python as a
/// plain `dict` and a Python dict loads back as a StateDict.
///
///   ckpt::StateDict state;
///   state.insert_or_assign("last_epoch", int64_t{3});
///   state.insert_or_assign("fc1.weight", torch::zeros({4, 4}));
///   int64_t epoch = state.at("last_epoch").toInt();
///
/// Not synchronised: guard concurrent use yourself.
class StateDict {
 public:
  using value_type = std::pair<std::string, c10::IValue>;
  using const_iterator = std::vector<value_type>::const_iterator;
  using iterator = std::vector<value_type>::iterator;

  StateDict() = default;
  StateDict(std::initializer_list<value_type> items);

  bool empty() const noexcept { return items_.empty(); }
  std::size_t size() const noexcept { return items_.size(); }
  bool contains(const std::string& key) const { return index_.count(key) != 0; }

  /// The value under `key`. Throws CheckpointError naming the key (and the keys present) if absent.
  const c10::IValue& at(const std::string& key) const;
  c10::IValue& at(const std::string& key);

  /// Inserts at the end, or replaces the value in place (keeping its position) if `key` exists.
  void insert_or_assign(std::string key, c10::IValue value);
  /// Removes `key`; returns whether it was present. Later keys keep their relative order.
  bool erase(const std::string& key);
  void clear() noexcept;

  /// The keys in insertion order.
  std::vector<std::string> keys() const;

  const_iterator begin() const noexcept { return items_.begin(); }
  const_iterator end() const noexcept { return items_.end(); }
  iterator begin() noexcept { return items_.begin(); }
  iterator end() noexcept { return items_.end(); }

  /// This dict as an IValue (`Dict[str, Any]`), e.g. to nest it inside another StateDict.
  c10::IValue to_ivalue() const;
  /// The inverse of to_ivalue(). Accepts any dict IValue whose keys are all strings; `what` names
  /// the value in the error thrown otherwise (e.g. "trainer_state").
  static StateDict from_ivalue(const c10::IValue& value, const std::string& what = "value");

 private:
  std::vector<value_type> items_;
  std::unordered_map<std::string, std::size_t> index_;
};

/// Deep equality: same kinds, same keys in the same order, equal scalars and strings, and tensors
/// with the same dtype, shape and elements (`torch::equal`). Doubles compare with `==`.
bool deep_equal(const c10::IValue& a, const c10::IValue& b);
/// deep_equal over two state dicts: the same keys in the same order, each value deep_equal (what
/// operator== does).
bool deep_equal(const StateDict& a, const StateDict& b);

/// A copy sharing nothing with `state`: every tensor cloned, every list and dict new (aliasing
/// inside `state`, one tensor under two keys, is kept).
StateDict deep_copy(const StateDict& state);

bool operator==(const StateDict& a, const StateDict& b);
inline bool operator!=(const StateDict& a, const StateDict& b) { return !(a == b); }

}  // namespace ckpt
