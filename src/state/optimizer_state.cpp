#include <ckpt/optimizer_state.h>

#include <ckpt/checkpoint_error.h>

#include "torch_compat.h"

#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

namespace ckpt {
namespace {

using torch::optim::OptimizerOptions;
using torch::optim::OptimizerParamState;

compat::OptimizerStateKey param_key(const at::Tensor& p) { return compat::optimizer_state_key(p); }

at::Tensor step_tensor(int64_t step) {
  return at::scalar_tensor(static_cast<double>(step), at::kFloat);
}

// ---- reading helpers: every failure names the key ----

[[noreturn]] void bad(const std::string& key, const std::string& what) {
  throw CheckpointError("optimizer state: '" + key + "' " + what);
}

const c10::IValue& field(const c10::impl::GenericDict& dict, const std::string& prefix,
                         const char* name) {
  auto it = dict.find(std::string(name));
  if (it == dict.end()) bad(prefix + name, "is missing");
  return it->value();
}

double number(const c10::IValue& v, const std::string& key) {
  if (v.isDouble()) return v.toDouble();
  if (v.isInt()) return static_cast<double>(v.toInt());
  if (v.isTensor() && v.toTensor().numel() == 1) return v.toTensor().item<double>();
  bad(key, std::string("must be a number, got ") + v.tagKind());
}

bool boolean(const c10::IValue& v, const std::string& key) {
  if (v.isBool()) return v.toBool();
  bad(key, std::string("must be a bool, got ") + v.tagKind());
}

int64_t step_count(const c10::IValue& v, const std::string& key) {
  const double d = number(v, key);
  if (d < 0 || d != std::floor(d))
    bad(key, "must be a non-negative whole number, got " + c10::str(d));
  return static_cast<int64_t>(d);
}

// Optional fields default to "absent"; a present one must have the parameter's shape.
at::Tensor tensor_like(const c10::impl::GenericDict& dict, const std::string& prefix,
                       const char* name, const at::Tensor& param, bool required) {
  auto it = dict.find(std::string(name));
  if (it == dict.end() || it->value().isNone()) {
    if (required) bad(prefix + name, "is missing");
    return {};
  }
  if (!it->value().isTensor())
    bad(prefix + name, std::string("must be a tensor, got ") + it->value().tagKind());
  at::Tensor t = it->value().toTensor();
  if (t.sizes() != param.sizes()) {
    bad(prefix + name, "has shape " + c10::str(t.sizes()) + " but the parameter has shape " +
                           c10::str(param.sizes()));
  }
  // As Python's load_state_dict: floating state follows the parameter's dtype and device.
  if (t.is_floating_point()) t = t.to(param.options(), /*non_blocking=*/false, /*copy=*/true);
  return t;
}

// ---- per-optimizer layouts ----

struct Layout {
  virtual ~Layout() = default;
  virtual void write_group(const OptimizerOptions& o, c10::impl::GenericDict& g) const = 0;
  virtual std::unique_ptr<OptimizerOptions> read_group(const OptimizerOptions& current,
                                                       const c10::impl::GenericDict& g,
                                                       const std::string& prefix) const = 0;
  // The buffers themselves, not copies: optimizer_state() copies them unless asked to share.
  virtual c10::impl::GenericDict write_state(const OptimizerParamState& s) const = 0;
  virtual std::unique_ptr<OptimizerParamState> read_state(const c10::impl::GenericDict& s,
                                                          const std::string& prefix,
                                                          const at::Tensor& param,
                                                          const OptimizerOptions& group) const = 0;
};

c10::impl::GenericDict new_dict() {
  return c10::impl::GenericDict(c10::StringType::get(), c10::AnyType::get());
}

c10::IValue betas_value(const std::tuple<double, double>& betas) {
  return c10::ivalue::Tuple::create({std::get<0>(betas), std::get<1>(betas)});
}

std::tuple<double, double> read_betas(const c10::IValue& v, const std::string& key) {
  std::vector<c10::IValue> items;
  if (v.isTuple()) {
    items = v.toTupleRef().elements().vec();
  } else if (v.isList()) {
    items = v.toListRef().vec();
  }
  if (items.size() != 2) bad(key, "must be a pair of numbers");
  return {number(items[0], key + ".0"), number(items[1], key + ".1")};
}

template <class Options, class State>
struct AdamLike : Layout {
  bool is_adamw;
  explicit AdamLike(bool adamw) : is_adamw(adamw) {}
  void write_group(const OptimizerOptions& base, c10::impl::GenericDict& g) const override {
    const auto& o = static_cast<const Options&>(base);
    g.insert("lr", o.lr());
    g.insert("betas", betas_value(o.betas()));
    g.insert("eps", o.eps());
    g.insert("weight_decay", o.weight_decay());
    g.insert("amsgrad", o.amsgrad());
    g.insert("maximize", false);
    g.insert("foreach", c10::IValue());
    g.insert("capturable", false);
    if (!is_adamw) {
      g.insert("differentiable", false);
      g.insert("fused", false);
    }
  }
  std::unique_ptr<OptimizerOptions> read_group(const OptimizerOptions& current,
                                               const c10::impl::GenericDict& g,
                                               const std::string& p) const override {
    auto o = std::make_unique<Options>(static_cast<const Options&>(current));
    o->lr(number(field(g, p, "lr"), p + "lr"));
    o->betas(read_betas(field(g, p, "betas"), p + "betas"));
    o->eps(number(field(g, p, "eps"), p + "eps"));
    o->weight_decay(number(field(g, p, "weight_decay"), p + "weight_decay"));
    o->amsgrad(boolean(field(g, p, "amsgrad"), p + "amsgrad"));
    return o;
  }
  c10::impl::GenericDict write_state(const OptimizerParamState& base) const override {
    const auto& s = static_cast<const State&>(base);
    auto d = new_dict();
    d.insert("step", step_tensor(s.step()));
    d.insert("exp_avg", s.exp_avg());
    d.insert("exp_avg_sq", s.exp_avg_sq());
    if (s.max_exp_avg_sq().defined()) d.insert("max_exp_avg_sq", s.max_exp_avg_sq());
    return d;
  }
  std::unique_ptr<OptimizerParamState> read_state(const c10::impl::GenericDict& d,
                                                  const std::string& p, const at::Tensor& param,
                                                  const OptimizerOptions& group) const override {
    auto s = std::make_unique<State>();
    s->step(step_count(field(d, p, "step"), p + "step"));
    s->exp_avg(tensor_like(d, p, "exp_avg", param, true));
    s->exp_avg_sq(tensor_like(d, p, "exp_avg_sq", param, true));
    const bool amsgrad = static_cast<const Options&>(group).amsgrad();
    s->max_exp_avg_sq(tensor_like(d, p, "max_exp_avg_sq", param, amsgrad));
    return s;
  }
};

struct SgdLayout : Layout {
  using Options = torch::optim::SGDOptions;
  using State = torch::optim::SGDParamState;
  void write_group(const OptimizerOptions& base, c10::impl::GenericDict& g) const override {
    const auto& o = static_cast<const Options&>(base);
    g.insert("lr", o.lr());
    g.insert("momentum", o.momentum());
    g.insert("dampening", o.dampening());
    g.insert("weight_decay", o.weight_decay());
    g.insert("nesterov", o.nesterov());
    g.insert("maximize", false);
    g.insert("foreach", c10::IValue());
    g.insert("differentiable", false);
  }
  std::unique_ptr<OptimizerOptions> read_group(const OptimizerOptions& current,
                                               const c10::impl::GenericDict& g,
                                               const std::string& p) const override {
    auto o = std::make_unique<Options>(static_cast<const Options&>(current));
    o->lr(number(field(g, p, "lr"), p + "lr"));
    o->momentum(number(field(g, p, "momentum"), p + "momentum"));
    o->dampening(number(field(g, p, "dampening"), p + "dampening"));
    o->weight_decay(number(field(g, p, "weight_decay"), p + "weight_decay"));
    o->nesterov(boolean(field(g, p, "nesterov"), p + "nesterov"));
    return o;
  }
  c10::impl::GenericDict write_state(const OptimizerParamState& base) const override {
    const auto& s = static_cast<const State&>(base);
    auto d = new_dict();
    d.insert("momentum_buffer",
             s.momentum_buffer().defined() ? c10::IValue(s.momentum_buffer()) : c10::IValue());
    return d;
  }
  std::unique_ptr<OptimizerParamState> read_state(const c10::impl::GenericDict& d,
                                                  const std::string& p, const at::Tensor& param,
                                                  const OptimizerOptions&) const override {
    at::Tensor buffer = tensor_like(d, p, "momentum_buffer", param, false);
    if (!buffer.defined()) return nullptr;  // Python's None: LibTorch keeps no state then
    auto s = std::make_unique<State>();
    s->momentum_buffer(buffer);
    return s;
  }
};

struct RmspropLayout : Layout {
  using Options = torch::optim::RMSpropOptions;
  using State = torch::optim::RMSpropParamState;
  void write_group(const OptimizerOptions& base, c10::impl::GenericDict& g) const override {
    const auto& o = static_cast<const Options&>(base);
    g.insert("lr", o.lr());
    g.insert("momentum", o.momentum());
    g.insert("alpha", o.alpha());
    g.insert("eps", o.eps());
    g.insert("centered", o.centered());
    g.insert("weight_decay", o.weight_decay());
    g.insert("foreach", c10::IValue());
    g.insert("maximize", false);
    g.insert("differentiable", false);
  }
  std::unique_ptr<OptimizerOptions> read_group(const OptimizerOptions& current,
                                               const c10::impl::GenericDict& g,
                                               const std::string& p) const override {
    auto o = std::make_unique<Options>(static_cast<const Options&>(current));
    o->lr(number(field(g, p, "lr"), p + "lr"));
    o->momentum(number(field(g, p, "momentum"), p + "momentum"));
    o->alpha(number(field(g, p, "alpha"), p + "alpha"));
    o->eps(number(field(g, p, "eps"), p + "eps"));
    o->centered(boolean(field(g, p, "centered"), p + "centered"));
    o->weight_decay(number(field(g, p, "weight_decay"), p + "weight_decay"));
    return o;
  }
  c10::impl::GenericDict write_state(const OptimizerParamState& base) const override {
    const auto& s = static_cast<const State&>(base);
    auto d = new_dict();
    d.insert("step", s.step());  // Python 1.13's RMSprop keeps a plain int
    d.insert("square_avg", s.square_avg());
    if (s.momentum_buffer().defined()) d.insert("momentum_buffer", s.momentum_buffer());
    if (s.grad_avg().defined()) d.insert("grad_avg", s.grad_avg());
    return d;
  }
  std::unique_ptr<OptimizerParamState> read_state(const c10::impl::GenericDict& d,
                                                  const std::string& p, const at::Tensor& param,
                                                  const OptimizerOptions& group) const override {
    const auto& o = static_cast<const Options&>(group);
    auto s = std::make_unique<State>();
    s->step(step_count(field(d, p, "step"), p + "step"));
    s->square_avg(tensor_like(d, p, "square_avg", param, true));
    s->momentum_buffer(tensor_like(d, p, "momentum_buffer", param, o.momentum() > 0));
    s->grad_avg(tensor_like(d, p, "grad_avg", param, o.centered()));
    return s;
  }
};

struct AdagradLayout : Layout {
  using Options = torch::optim::AdagradOptions;
  using State = torch::optim::AdagradParamState;
  void write_group(const OptimizerOptions& base, c10::impl::GenericDict& g) const override {
    const auto& o = static_cast<const Options&>(base);
    g.insert("lr", o.lr());
    g.insert("lr_decay", o.lr_decay());
    g.insert("eps", o.eps());
    g.insert("weight_decay", o.weight_decay());
    g.insert("initial_accumulator_value", o.initial_accumulator_value());
    g.insert("foreach", c10::IValue());
    g.insert("maximize", false);
  }
  std::unique_ptr<OptimizerOptions> read_group(const OptimizerOptions& current,
                                               const c10::impl::GenericDict& g,
                                               const std::string& p) const override {
    auto o = std::make_unique<Options>(static_cast<const Options&>(current));
    o->lr(number(field(g, p, "lr"), p + "lr"));
    o->lr_decay(number(field(g, p, "lr_decay"), p + "lr_decay"));
    o->eps(number(field(g, p, "eps"), p + "eps"));
    o->weight_decay(number(field(g, p, "weight_decay"), p + "weight_decay"));
    o->initial_accumulator_value(
        number(field(g, p, "initial_accumulator_value"), p + "initial_accumulator_value"));
    return o;
  }
  c10::impl::GenericDict write_state(const OptimizerParamState& base) const override {
    const auto& s = static_cast<const State&>(base);
    auto d = new_dict();
    d.insert("step", step_tensor(s.step()));
    d.insert("sum", s.sum());
    return d;
  }
  std::unique_ptr<OptimizerParamState> read_state(const c10::impl::GenericDict& d,
                                                  const std::string& p, const at::Tensor& param,
                                                  const OptimizerOptions&) const override {
    auto s = std::make_unique<State>();
    s->step(step_count(field(d, p, "step"), p + "step"));
    s->sum(tensor_like(d, p, "sum", param, true));
    return s;
  }
};

const Layout& layout_of(const torch::optim::Optimizer& optimizer) {
  static const AdamLike<torch::optim::AdamOptions, torch::optim::AdamParamState> adam(false);
  static const AdamLike<torch::optim::AdamWOptions, torch::optim::AdamWParamState> adamw(true);
  static const SgdLayout sgd;
  static const RmspropLayout rmsprop;
  static const AdagradLayout adagrad;
  if (dynamic_cast<const torch::optim::Adam*>(&optimizer)) return adam;
  if (dynamic_cast<const torch::optim::AdamW*>(&optimizer)) return adamw;
  if (dynamic_cast<const torch::optim::SGD*>(&optimizer)) return sgd;
  if (dynamic_cast<const torch::optim::RMSprop*>(&optimizer)) return rmsprop;
  if (dynamic_cast<const torch::optim::Adagrad*>(&optimizer)) return adagrad;
  throw CheckpointError(
      "optimizer state: unsupported optimizer type (supported: SGD, Adam, AdamW, RMSprop, "
      "Adagrad)");
}

}  // namespace

StateDict optimizer_state(const torch::optim::Optimizer& optimizer, StateTensors tensors) {
  const Layout& layout = layout_of(optimizer);
  c10::impl::GenericDict state(c10::IntType::get(), c10::AnyType::get());
  c10::impl::GenericList groups(c10::AnyType::get());
  int64_t index = 0;
  for (const auto& group : optimizer.param_groups()) {
    auto g = new_dict();
    layout.write_group(group.options(), g);
    c10::impl::GenericList ids(c10::AnyType::get());
    for (const auto& p : group.params()) {
      auto it = optimizer.state().find(param_key(p));
      if (it != optimizer.state().end()) {
        auto d = layout.write_state(*it->second);
        if (tensors == StateTensors::copies) {
          std::vector<c10::IValue> buffers;
          for (const auto& entry : d) {
            if (entry.value().isTensor()) buffers.push_back(entry.key());
          }
          for (const auto& key : buffers) d.insert_or_assign(key, d.at(key).toTensor().clone());
        }
        state.insert(index, d);
      }
      ids.push_back(index++);
    }
    g.insert("params", ids);
    groups.push_back(g);
  }
  StateDict result;
  result.insert_or_assign("state", state);
  result.insert_or_assign("param_groups", groups);
  return result;
}

void load_optimizer_state(torch::optim::Optimizer& optimizer, const StateDict& state) {
  const Layout& layout = layout_of(optimizer);
  const c10::IValue& groups_value = state.at("param_groups");
  const c10::IValue& state_value = state.at("state");
  if (!groups_value.isList()) bad("param_groups", "must be a list");
  if (!state_value.isGenericDict()) bad("state", "must be a dict");
  const auto saved_groups = groups_value.toListRef();
  auto& groups = optimizer.param_groups();
  if (saved_groups.size() != groups.size()) {
    bad("param_groups", "has " + std::to_string(saved_groups.size()) +
                            " groups but the optimizer has " + std::to_string(groups.size()));
  }
  // Build everything first, then commit, so a bad state leaves the optimizer untouched.
  std::vector<std::unique_ptr<OptimizerOptions>> new_options;
  std::vector<std::pair<int64_t, const at::Tensor*>> id_to_param;  // saved id -> parameter
  std::vector<std::size_t> group_of;
  for (std::size_t i = 0; i < groups.size(); ++i) {
    const std::string prefix = "param_groups." + std::to_string(i) + ".";
    if (!saved_groups[i].isGenericDict())
      bad(prefix.substr(0, prefix.size() - 1), "must be a dict");
    auto g = saved_groups[i].toGenericDict();
    const c10::IValue& ids = field(g, prefix, "params");
    if (!ids.isList()) bad(prefix + "params", "must be a list");
    const auto id_list = ids.toListRef();
    if (id_list.size() != groups[i].params().size()) {
      bad(prefix + "params", "lists " + std::to_string(id_list.size()) +
                                 " parameters but the optimizer's group has " +
                                 std::to_string(groups[i].params().size()));
    }
    for (std::size_t j = 0; j < id_list.size(); ++j) {
      if (!id_list[j].isInt()) bad(prefix + "params", "must hold ints");
      id_to_param.emplace_back(id_list[j].toInt(), &groups[i].params()[j]);
      group_of.push_back(i);
    }
    new_options.push_back(layout.read_group(groups[i].options(), g, prefix));
  }
  std::vector<std::pair<compat::OptimizerStateKey, std::unique_ptr<OptimizerParamState>>> new_state;
  std::vector<bool> seen(id_to_param.size(), false);
  for (const auto& entry : state_value.toGenericDict()) {
    if (!entry.key().isInt()) bad("state", "must have int keys");
    const int64_t id = entry.key().toInt();
    std::size_t k = 0;
    while (k < id_to_param.size() && id_to_param[k].first != id) ++k;
    const std::string prefix = "state." + std::to_string(id) + ".";
    if (k == id_to_param.size()) bad("state." + std::to_string(id), "refers to no parameter");
    if (!entry.value().isGenericDict()) bad("state." + std::to_string(id), "must be a dict");
    auto ps = layout.read_state(entry.value().toGenericDict(), prefix, *id_to_param[k].second,
                                *new_options[group_of[k]]);
    seen[k] = true;
    if (ps) new_state.emplace_back(param_key(*id_to_param[k].second), std::move(ps));
  }
  for (std::size_t i = 0; i < groups.size(); ++i) groups[i].set_options(std::move(new_options[i]));
  for (std::size_t k = 0; k < id_to_param.size(); ++k) {
    if (!seen[k]) optimizer.state().erase(param_key(*id_to_param[k].second));
  }
  for (auto& [key, ps] : new_state) optimizer.state()[key] = std::move(ps);
}

}  // namespace ckpt
