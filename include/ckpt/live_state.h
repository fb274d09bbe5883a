#pragma once

#include <ckpt/module_state.h>
#include <ckpt/state_dict.h>
#include <ckpt/storage.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <initializer_list>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace torch {
namespace nn {
class Module;
template <typename Contained>
class ModuleHolder;
}  // namespace nn
namespace optim {
class Optimizer;
}  // namespace optim
}  // namespace torch

namespace ckpt {

namespace detail {
template <class T>
constexpr const char* integer_type_name() {
  if constexpr (std::is_signed_v<T>) {
    return sizeof(T) == 1 ? "int8" : sizeof(T) == 2 ? "int16" : sizeof(T) == 4 ? "int32" : "int64";
  } else {
    return sizeof(T) == 1 ? "uint8" : sizeof(T) == 2 ? "uint16" : sizeof(T) == 4 ? "uint32" : "uint64";
  }
}
template <class T, class = void>
struct has_state_methods : std::false_type {};
template <class T>
struct has_state_methods<
    T, std::void_t<decltype(std::declval<StateDict&>() = std::declval<const T&>().get_state()),
                   decltype(std::declval<T&>().update_state(std::declval<const StateDict&>()))>>
    : std::true_type {};
}  // namespace detail

/// A live object of a LiveState, held by reference: how to read its state for a save and how to
/// restore a loaded state into it in place. Made implicitly from
/// - a `torch::nn::Module` (or a module holder such as `torch::nn::Linear`, or a
///   `std::shared_ptr` to a module): its parameters and buffers (module_state / load_module_state);
/// - a `torch::optim::Optimizer` (SGD, Adam, AdamW, RMSprop, Adagrad): optimizer_state /
///   load_optimizer_state;
/// - any object with `StateDict get_state() const` and `void update_state(const StateDict&)`;
/// - a `bool`, `std::string` or `StateDict` variable, stored as the value;
/// - a variable of any other arithmetic type, stored as the Python type it becomes: an integer
///   (`int`, `int64_t`, `size_t`, `uint8_t`, ...) as an int, `float` or `double` as a float. A
///   restore checks the saved kind (an int is not restored into a `double`) and that the value
///   fits the variable's type (CheckpointError naming both otherwise); saving a `uint64_t` above
///   INT64_MAX throws.
/// The referenced object must outlive the LiveObject.
class LiveObject {
 public:
  /// The type-erased halves of every kind: the state to save, and restore (or, with `dry_run`,
  /// only check) a saved one.
  using Getter = std::function<c10::IValue()>;
  using Setter = std::function<ModuleLoadReport(const c10::IValue&, const std::string& what,
                                                bool strict, bool dry_run)>;

  LiveObject(torch::nn::Module& module);           // NOLINT(google-explicit-constructor)
  LiveObject(torch::optim::Optimizer& optimizer);  // NOLINT(google-explicit-constructor)
  LiveObject(int64_t& value);                      // NOLINT(google-explicit-constructor)
  LiveObject(double& value);                       // NOLINT(google-explicit-constructor)
  LiveObject(bool& value);                         // NOLINT(google-explicit-constructor)
  LiveObject(std::string& value);                  // NOLINT(google-explicit-constructor)
  LiveObject(StateDict& value);                    // NOLINT(google-explicit-constructor)
  template <class T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool> &&
                                          !std::is_same_v<T, int64_t>,
                                      int> = 0>
  LiveObject(T& value)  // NOLINT(google-explicit-constructor)
      : LiveObject(
            Kind::other,
            [&value]() -> c10::IValue {
              if constexpr (std::is_unsigned_v<T>) {
                return unsigned_state(static_cast<uint64_t>(value));
              } else {
                return static_cast<int64_t>(value);
              }
            },
            integer_setter([&value](int64_t v) { value = static_cast<T>(v); },
                           static_cast<int64_t>(std::numeric_limits<T>::lowest()),
                           static_cast<uint64_t>(std::numeric_limits<T>::max()),
                           detail::integer_type_name<T>())) {}
  template <class T, std::enable_if_t<std::is_floating_point_v<T> && !std::is_same_v<T, double>,
                                      int> = 0>
  LiveObject(T& value)  // NOLINT(google-explicit-constructor)
      : LiveObject(
            Kind::other, [&value] { return c10::IValue(static_cast<double>(value)); },
            float_setter([&value](double v) { value = static_cast<T>(v); })) {}
  template <class M>
  LiveObject(torch::nn::ModuleHolder<M>& holder)  // NOLINT(google-explicit-constructor)
      : LiveObject(static_cast<torch::nn::Module&>(*holder)) {}
  template <class M, class = std::enable_if_t<std::is_base_of_v<torch::nn::Module, M>>>
  LiveObject(const std::shared_ptr<M>& module)  // NOLINT(google-explicit-constructor)
      : LiveObject(static_cast<torch::nn::Module&>(*module)) {}
  template <class T, class = std::enable_if_t<detail::has_state_methods<T>::value>>
  LiveObject(T& object)  // NOLINT(google-explicit-constructor)
      : kind_(Kind::object),
        get_([&object] { return object.get_state().to_ivalue(); }),
        set_([&object](const c10::IValue& value, const std::string& what, bool, bool dry_run) {
          const StateDict state = StateDict::from_ivalue(value, what);
          if (!dry_run) object.update_state(state);
          return ModuleLoadReport{};
        }) {}

  /// The object's state as it is saved.
  c10::IValue state() const { return get_(); }
  /// Restores `value` (the saved state of this object; `what` names it in errors) in place. For a
  /// module, `strict` as load_module_state; the report lists what did not match. Throws
  /// CheckpointError naming `what` if the value does not fit the object.
  ModuleLoadReport restore(const c10::IValue& value, const std::string& what, bool strict) const {
    return set_(value, what, strict, /*dry_run=*/false);
  }
  /// What restore() would report, changing nothing: a module's missing, unexpected and mismatched
  /// keys, a plain value's type. Throws CheckpointError naming `what` where restore() would for
  /// those; an optimizer's or other object's own checks happen only in restore().
  ModuleLoadReport check(const c10::IValue& value, const std::string& what) const {
    return set_(value, what, /*strict=*/false, /*dry_run=*/true);
  }
  bool is_module() const noexcept { return kind_ == Kind::module; }

 private:
  enum class Kind { module, other, object };
  LiveObject(Kind kind, Getter get, Setter set)
      : kind_(kind), get_(std::move(get)), set_(std::move(set)) {}

  static c10::IValue unsigned_state(uint64_t value);
  static Setter integer_setter(std::function<void(int64_t)> assign, int64_t lowest,
                               uint64_t highest, const char* type);
  static Setter float_setter(std::function<void(double)> assign);

  Kind kind_;
  Getter get_;
  Setter set_;
};

/// Named live objects saved together and restored in place, in the manner of Lightning Fabric's
/// `state = {"model": model, "optimizer": optimizer, "iteration": iteration}`:
///
///   int64_t iteration = 0;
///   ckpt::LiveState state{{"model", model}, {"optimizer", optimizer}, {"iteration", iteration}};
///   ckpt::save("run/state.pt", state);             // atomic, durable, torch.load-compatible
///   ckpt::LoadResult result = ckpt::load("run/state.pt", state);  // restores all three in place
///
/// Names are the top-level keys of the file (Python reads it as a dict of state dicts).
class LiveState {
 public:
  struct Entry {
    std::string name;
    LiveObject object;
  };
  LiveState() = default;
  LiveState(std::initializer_list<Entry> entries);
  /// Adds (or replaces, keeping its position) the object under `name`.
  LiveState& add(std::string name, LiveObject object);
  const std::vector<Entry>& entries() const noexcept { return entries_; }
  bool empty() const noexcept { return entries_.empty(); }

 private:
  std::vector<Entry> entries_;
};

/// What ckpt::load restores and what it leaves.
struct LoadOptions {
  /// Every name of the LiveState must be in the file and every module must match its saved state
  /// exactly (keys and shapes); otherwise CheckpointError, before anything is restored. Without
  /// it, what is absent or does not match is reported and the rest restored.
  /// Default: true.
  bool strict = true;
  /// Read and return the file's other top-level keys (LoadResult::remainder), as Fabric does.
  /// Without it only the records of the LiveState's names are read. Default: true.
  bool read_remainder = true;
};

struct LoadResult {
  /// The file's top-level keys no object claimed, loaded (empty without read_remainder).
  StateDict remainder;
  /// Names of the LiveState absent from the file (only without strict).
  std::vector<std::string> missing_names;
  /// Per module, what did not match its saved state (only without strict).
  std::vector<std::pair<std::string, ModuleLoadReport>> module_reports;
  bool ok() const noexcept;
  /// One line listing every problem, e.g. for a log message.
  std::string to_string() const;
};

/// Saves every object of `state` under its name: a dict of their states, written as
/// save_state_file does (atomic, durable, checksummed, read by Python's `torch.load`). Returns
/// the bytes written. Throws CheckpointError naming `path`; a previous file there is then intact.
uint64_t save(const std::filesystem::path& path, const LiveState& state,
              Storage& storage = *Storage::by_location());

/// Restores each object of `state` in place from `path`, reading only the records of the names
/// asked for (plus, with read_remainder, the rest), each checked by its CRC-32 before use
/// (Verification::records_read). Files written by Python's `torch.save` of a dict load the same
/// way. With strict (the default), anything missing or mismatched throws CheckpointError naming
/// every problem before any object changes; so does, either way, a plain value saved with another
/// type (e.g. a string where an int64_t is restored). An optimizer or get_state/update_state
/// object that refuses its state throws CheckpointError naming it (the objects before it in
/// `state` are restored by then; the optimizer itself is unchanged).
LoadResult load(const std::filesystem::path& path, const LiveState& state,
                const LoadOptions& options = LoadOptions(),
                Storage& storage = *Storage::by_location());

/// The whole file as a dict, as Fabric's `load(path)` returns it (load_state_file).
StateDict load(const std::filesystem::path& path, Storage& storage = *Storage::by_location());

}  // namespace ckpt
