#include <ckpt/live_state.h>
#include <ckpt/trainer_state.h>

#include <ckpt/checkpoint_error.h>
#include <ckpt/checkpoint_reader.h>
#include <ckpt/optimizer_state.h>
#include <ckpt/serialization.h>

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <limits>
#include <sstream>
#include <unordered_set>

namespace ckpt {
namespace {

// A plain value restored by assignment: `accepts` says whether a saved IValue has its type.
template <class T>
LiveObject::Setter plain_setter(T& target, bool (c10::IValue::*accepts)() const, const char* type,
                                T (*convert)(const c10::IValue&)) {
  return [&target, accepts, type, convert](const c10::IValue& value, const std::string& what, bool,
                                           bool dry_run) {
    if (!(value.*accepts)()) {
      throw CheckpointError(what + " is a " + std::string(value.tagKind()) + " in the file, not " +
                            type);
    }
    if (!dry_run) target = convert(value);
    return ModuleLoadReport{};
  };
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item;
  return out;
}

}  // namespace

LiveObject::LiveObject(torch::nn::Module& module)
    : LiveObject(
          Kind::module, [&module] { return module_state(module).to_ivalue(); },
          [&module](const c10::IValue& value, const std::string& what, bool strict, bool dry_run) {
            const StateDict state = StateDict::from_ivalue(value, what);
            return dry_run ? check_module_state(module, state)
                           : load_module_state(module, state, strict);
          }) {}

LiveObject::LiveObject(torch::optim::Optimizer& optimizer)
    : LiveObject(
          Kind::other,
          // Shared buffers: the save writes them at once, no copy of every moment is needed.
          [&optimizer] { return optimizer_state(optimizer, StateTensors::shared).to_ivalue(); },
          [&optimizer](const c10::IValue& value, const std::string& what, bool, bool dry_run) {
            const StateDict state = StateDict::from_ivalue(value, what);
            if (!dry_run) load_optimizer_state(optimizer, state);
            return ModuleLoadReport{};
          }) {}

LiveObject::LiveObject(int64_t& value)
    : LiveObject(
          Kind::other, [&value] { return c10::IValue(value); },
          plain_setter<int64_t>(value, &c10::IValue::isInt, "an int",
                                [](const c10::IValue& v) { return v.toInt(); })) {}

LiveObject::LiveObject(double& value)
    : LiveObject(
          Kind::other, [&value] { return c10::IValue(value); },
          plain_setter<double>(value, &c10::IValue::isDouble, "a float",
                               [](const c10::IValue& v) { return v.toDouble(); })) {}

LiveObject::LiveObject(bool& value)
    : LiveObject(
          Kind::other, [&value] { return c10::IValue(value); },
          plain_setter<bool>(value, &c10::IValue::isBool, "a bool",
                             [](const c10::IValue& v) { return v.toBool(); })) {}

LiveObject::LiveObject(std::string& value)
    : LiveObject(
          Kind::other, [&value] { return c10::IValue(value); },
          plain_setter<std::string>(value, &c10::IValue::isString, "a string",
                                    [](const c10::IValue& v) { return v.toStringRef(); })) {}

LiveObject::LiveObject(StateDict& value)
    : LiveObject(
          Kind::other, [&value] { return value.to_ivalue(); },
          [&value](const c10::IValue& saved, const std::string& what, bool, bool dry_run) {
            StateDict state = StateDict::from_ivalue(saved, what);
            if (!dry_run) value = std::move(state);
            return ModuleLoadReport{};
          }) {}

c10::IValue LiveObject::unsigned_state(uint64_t value) {
  if (value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    throw CheckpointError("value " + std::to_string(value) +
                          " does not fit the int64 a file stores an int as");
  }
  return static_cast<int64_t>(value);
}

LiveObject::Setter LiveObject::integer_setter(std::function<void(int64_t)> assign, int64_t lowest,
                                              uint64_t highest, const char* type) {
  return [assign = std::move(assign), lowest, highest, type](
             const c10::IValue& value, const std::string& what, bool, bool dry_run) {
    if (!value.isInt()) {
      throw CheckpointError(what + " is a " + std::string(value.tagKind()) +
                            " in the file, not an int");
    }
    const int64_t v = value.toInt();
    if (v < lowest || (v > 0 && static_cast<uint64_t>(v) > highest)) {
      throw CheckpointError(what + " is " + std::to_string(v) + " in the file, out of the range of " +
                            type + " (" + std::to_string(lowest) + " to " +
                            std::to_string(highest) + ")");
    }
    if (!dry_run) assign(v);
    return ModuleLoadReport{};
  };
}

LiveObject::Setter LiveObject::float_setter(std::function<void(double)> assign) {
  return [assign = std::move(assign)](const c10::IValue& value, const std::string& what, bool,
                                      bool dry_run) {
    if (!value.isDouble()) {
      throw CheckpointError(what + " is a " + std::string(value.tagKind()) +
                            " in the file, not a float");
    }
    if (!dry_run) assign(value.toDouble());
    return ModuleLoadReport{};
  };
}

LiveState::LiveState(std::initializer_list<Entry> entries) {
  for (const auto& entry : entries) add(entry.name, entry.object);
}

LiveState& LiveState::add(std::string name, LiveObject object) {
  for (auto& entry : entries_) {
    if (entry.name == name) {
      entry.object = std::move(object);
      return *this;
    }
  }
  entries_.push_back({std::move(name), std::move(object)});
  return *this;
}

bool LoadResult::ok() const noexcept {
  if (!missing_names.empty()) return false;
  for (const auto& [name, report] : module_reports) {
    if (!report.ok()) return false;
  }
  return true;
}

std::string LoadResult::to_string() const {
  std::string out;
  if (!missing_names.empty()) out = "not in the file: " + join(missing_names);
  for (const auto& [name, report] : module_reports) {
    if (report.ok()) continue;
    out += (out.empty() ? "" : "; ") + name + ": " + report.to_string();
  }
  return out;
}

uint64_t save(const std::filesystem::path& path, const LiveState& state, Storage& storage) {
  StateDict saved;
  for (const auto& entry : state.entries())
    saved.insert_or_assign(entry.name, entry.object.state());
  return save_state_file(saved, path, storage);
}

LoadResult load(const std::filesystem::path& path, const LiveState& state,
                const LoadOptions& options, Storage& storage) {
  const std::string file = path.string();
  const CheckpointReader reader(path, storage);
  const c10::IValue outline = reader.outline();
  if (!outline.isGenericDict()) {
    throw CheckpointError(
        file + " holds a " + std::string(outline.tagKind()) + ", not a dict of named states", path);
  }
  const auto top = outline.toGenericDict();
  // A top-level name as a key path: one step, unless it holds the separator. Those (and keys
  // that are not strings) are read with the whole value, then picked.
  auto read_top = [&](const c10::IValue& name) {
    if (name.isString() && name.toStringRef().find('/') == std::string::npos &&
        !name.toStringRef().empty()) {
      return reader.load(name.toStringRef(), Verification::records_read);
    }
    return reader.load("", Verification::records_read).toGenericDict().at(name);
  };
  LoadResult result;
  // Read (each record checked) and check everything before the first object changes.
  std::vector<std::pair<const LiveState::Entry*, c10::IValue>> values;
  std::unordered_set<std::string> claimed;
  for (const auto& entry : state.entries()) {
    claimed.insert(entry.name);
    const c10::IValue name(entry.name);
    if (!top.contains(name)) {
      result.missing_names.push_back(entry.name);
      continue;
    }
    c10::IValue value = read_top(name);
    const ModuleLoadReport report = entry.object.check(value, file + ": '" + entry.name + "'");
    if (entry.object.is_module()) result.module_reports.emplace_back(entry.name, report);
    values.emplace_back(&entry, std::move(value));
  }
  if (options.strict && !result.ok()) {
    throw CheckpointError("cannot restore from " + file + " (strict): " + result.to_string(), path);
  }
  for (const auto& [entry, value] : values) {
    entry->object.restore(value, file + ": '" + entry->name + "'", options.strict);
  }
  if (options.read_remainder) {
    for (const auto& item : top) {
      if (!item.key().isString() && !item.key().isInt()) {
        throw CheckpointError(file + " has a top-level key that is a " +
                                  std::string(item.key().tagKind()) + ", not a string or an int",
                              path);
      }
      const std::string name =
          item.key().isString() ? item.key().toStringRef() : std::to_string(item.key().toInt());
      if (item.key().isString() && claimed.count(name) != 0) continue;
      result.remainder.insert_or_assign(name, read_top(item.key()));
    }
  }
  return result;
}

StateDict load(const std::filesystem::path& path, Storage& storage) {
  return load_state_file(path, storage);
}

StateDict trainer_state(int64_t last_epoch, const std::vector<LiveObject>& optimizers,
                        const std::vector<LiveObject>& schedulers) {
  c10::impl::GenericList optimizer_states(c10::AnyType::get());
  for (const auto& optimizer : optimizers) optimizer_states.push_back(optimizer.state());
  c10::impl::GenericList scheduler_states(c10::AnyType::get());
  for (const auto& scheduler : schedulers) scheduler_states.push_back(scheduler.state());
  StateDict state;
  state.insert_or_assign("last_epoch", last_epoch);
  state.insert_or_assign("optimizers", optimizer_states);
  state.insert_or_assign("schedulers", scheduler_states);
  return state;
}

int64_t load_trainer_state(const StateDict& trainer_state,
                           const std::vector<LiveObject>& optimizers,
                           const std::vector<LiveObject>& schedulers) {
  if (!trainer_state.contains("last_epoch") || !trainer_state.at("last_epoch").isInt()) {
    throw CheckpointError("trainer_state.last_epoch is missing or not an int");
  }
  // Every count checked before the first object changes.
  auto list = [&](const char* key, std::size_t live) {
    const std::string what = std::string("trainer_state.") + key;
    if (!trainer_state.contains(key)) {
      if (live == 0) return std::vector<c10::IValue>{};
      throw CheckpointError(what + " is missing, and " + std::to_string(live) + " were given");
    }
    const c10::IValue& value = trainer_state.at(key);
    if (!value.isList()) {
      throw CheckpointError(what + " is a " + std::string(value.tagKind()) + ", not a list");
    }
    std::vector<c10::IValue> items = value.toListRef().vec();
    if (items.size() != live) {
      throw CheckpointError(what + " has " + std::to_string(items.size()) + " entries, but " +
                            std::to_string(live) + " were given");
    }
    return items;
  };
  const auto optimizer_states = list("optimizers", optimizers.size());
  const auto scheduler_states = list("schedulers", schedulers.size());
  for (std::size_t i = 0; i < optimizers.size(); ++i) {
    optimizers[i].restore(optimizer_states[i],
                          "trainer_state.optimizers[" + std::to_string(i) + "]", true);
  }
  for (std::size_t i = 0; i < schedulers.size(); ++i) {
    schedulers[i].restore(scheduler_states[i],
                          "trainer_state.schedulers[" + std::to_string(i) + "]", true);
  }
  return trainer_state.at("last_epoch").toInt();
}

}  // namespace ckpt
