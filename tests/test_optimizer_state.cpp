#include <ckpt/checkpoint_error.h>
#include <ckpt/module_state.h>
#include <ckpt/optimizer_state.h>
#include <ckpt/serialization.h>

#include <torch/torch.h>

#include "test_util.h"

using ckpt::test::message_contains;
using ckpt::test::TempDir;

namespace {

struct Net : torch::nn::Module {
  Net() {
    fc1 = register_module("fc1", torch::nn::Linear(4, 8));
    fc2 = register_module("fc2", torch::nn::Linear(8, 3));
  }
  torch::Tensor forward(const torch::Tensor& x) { return fc2(torch::tanh(fc1(x))); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};

using OptimizerFactory = std::function<std::unique_ptr<torch::optim::Optimizer>(Net&)>;

// Two parameter groups, so the numbering across groups is exercised.
std::vector<torch::optim::OptimizerParamGroup> groups(Net& net) {
  std::vector<torch::optim::OptimizerParamGroup> result;
  result.emplace_back(net.fc1->parameters());
  result.emplace_back(net.fc2->parameters());
  return result;
}

std::vector<std::pair<std::string, OptimizerFactory>> factories() {
  using namespace torch::optim;
  return {
      {"sgd",
       [](Net& n) {
         return std::make_unique<SGD>(groups(n), SGDOptions(0.05).momentum(0.9).nesterov(true));
       }},
      {"adam",
       [](Net& n) { return std::make_unique<Adam>(groups(n), AdamOptions(0.01).amsgrad(true)); }},
      {"adamw", [](Net& n) { return std::make_unique<AdamW>(groups(n), AdamWOptions(0.01)); }},
      {"rmsprop",
       [](Net& n) {
         return std::make_unique<RMSprop>(groups(n),
                                          RMSpropOptions(0.01).momentum(0.5).centered(true));
       }},
      {"adagrad", [](Net& n) { return std::make_unique<Adagrad>(groups(n), AdagradOptions(0.1)); }},
  };
}

void train(Net& net, torch::optim::Optimizer& optimizer, int first_step, int steps) {
  for (int s = first_step; s < first_step + steps; ++s) {
    torch::manual_seed(100 + s);
    auto x = torch::randn({16, 4});
    auto y = torch::randint(0, 3, {16});
    optimizer.zero_grad();
    torch::nn::functional::cross_entropy(net.forward(x), y).backward();
    optimizer.step();
  }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(optimizer_state)

// LibTorch's SerializeTest.Optim, for each optimizer: N steps straight equal k steps, a save and a
// load into fresh objects through a file, and N-k more steps, bitwise.
BOOST_AUTO_TEST_CASE(resumed_optimizers_continue_exactly) {
  TempDir dir;
  for (const auto& [name, make] : factories()) {
    BOOST_TEST_CONTEXT("optimizer " << name) {
      torch::manual_seed(0);
      Net straight;
      Net resumed_net;
      ckpt::load_module_state(resumed_net, ckpt::module_state(straight));
      auto straight_opt = make(straight);
      train(straight, *straight_opt, 0, 7);

      torch::manual_seed(0);
      Net first;
      auto first_opt = make(first);
      train(first, *first_opt, 0, 3);
      const auto path = dir / (name + ".pt");
      ckpt::save_state_file(
          ckpt::StateDict{{"model", ckpt::module_state(first).to_ivalue()},
                          {"optimizer", ckpt::optimizer_state(*first_opt).to_ivalue()}},
          path);
      // Keep training the first copy: the saved state must be a snapshot, not a view.
      train(first, *first_opt, 3, 2);

      const auto saved = ckpt::load_state_file(path);
      Net second;
      auto second_opt = make(second);
      ckpt::load_module_state(second, ckpt::StateDict::from_ivalue(saved.at("model")));
      ckpt::load_optimizer_state(*second_opt, ckpt::StateDict::from_ivalue(saved.at("optimizer")));
      train(second, *second_opt, 3, 4);

      for (const auto& [key, value] : ckpt::module_state(straight)) {
        BOOST_TEST(torch::equal(value.toTensor(), ckpt::module_state(second).at(key).toTensor()),
                   key << " differs after resume");
      }
      BOOST_TEST((ckpt::optimizer_state(*straight_opt) == ckpt::optimizer_state(*second_opt)));
    }
  }
}

BOOST_AUTO_TEST_CASE(layout_matches_python) {
  Net net;
  torch::optim::Adam adam(groups(net), torch::optim::AdamOptions(0.01));
  train(net, adam, 0, 1);
  const auto state = ckpt::optimizer_state(adam);
  BOOST_TEST(state.keys() == (std::vector<std::string>{"state", "param_groups"}),
             boost::test_tools::per_element());
  const auto per_param = state.at("state").toGenericDict();
  BOOST_TEST(per_param.size() == 4u);
  const auto first = per_param.at(int64_t{0}).toGenericDict();
  BOOST_TEST(first.at("step").toTensor().item<float>() == 1.f);
  BOOST_TEST(first.at("exp_avg").toTensor().sizes() == net.fc1->weight.sizes());
  const auto group_list = state.at("param_groups").toListRef();
  BOOST_TEST(group_list.size() == 2u);
  const auto second_group = group_list[1].toGenericDict();
  const auto ids = second_group.at("params").toListRef();
  BOOST_TEST(ids.size() == 2u);
  BOOST_TEST(ids[0].toInt() == 2);
  BOOST_TEST(ids[1].toInt() == 3);
  BOOST_TEST(second_group.at("lr").toDouble() == 0.01);
  BOOST_TEST(second_group.at("betas").isTuple());
}

BOOST_AUTO_TEST_CASE(mismatches_name_the_key_and_leave_the_optimizer_unchanged) {
  Net net;
  torch::optim::Adam adam(groups(net), torch::optim::AdamOptions(0.01));
  train(net, adam, 0, 1);
  auto state = ckpt::optimizer_state(adam);
  const auto before = ckpt::optimizer_state(adam);

  auto per_param = state.at("state").toGenericDict();
  auto third = per_param.at(int64_t{3}).toGenericDict();
  third.insert_or_assign("exp_avg", torch::zeros({7}));
  BOOST_CHECK_EXCEPTION(ckpt::load_optimizer_state(adam, state), ckpt::CheckpointError,
                        message_contains("state.3.exp_avg", "[7]", "[3]"));
  BOOST_TEST((ckpt::optimizer_state(adam) == before));

  Net other;
  torch::optim::Adam single(other.parameters(), torch::optim::AdamOptions(0.01));
  BOOST_CHECK_EXCEPTION(ckpt::load_optimizer_state(single, before), ckpt::CheckpointError,
                        message_contains("param_groups", "2 groups", "1"));

  torch::optim::SGD sgd(groups(other), torch::optim::SGDOptions(0.1));
  BOOST_CHECK_EXCEPTION(ckpt::load_optimizer_state(sgd, before), ckpt::CheckpointError,
                        message_contains("param_groups.0.momentum", "missing"));
}

BOOST_AUTO_TEST_CASE(hyperparameters_are_restored) {
  Net net;
  torch::optim::SGD saved_from(groups(net), torch::optim::SGDOptions(0.5).momentum(0.3));
  Net other;
  torch::optim::SGD target(groups(other), torch::optim::SGDOptions(0.1));
  ckpt::load_optimizer_state(target, ckpt::optimizer_state(saved_from));
  const auto& options =
      static_cast<const torch::optim::SGDOptions&>(target.param_groups()[1].options());
  BOOST_TEST(options.lr() == 0.5);
  BOOST_TEST(options.momentum() == 0.3);
}

// Copies by default (the state survives the next step); shared, the optimizer's own buffers, as
// Python's state_dict() returns them, in the same layout and with the same values.
BOOST_AUTO_TEST_CASE(state_tensors_are_copies_unless_shared) {
  for (const auto& [name, make] : factories()) {
    BOOST_TEST_CONTEXT(name) {
      Net net;
      auto optimizer = make(net);
      train(net, *optimizer, 0, 2);
      const ckpt::StateDict copies = ckpt::optimizer_state(*optimizer);
      const ckpt::StateDict shared = ckpt::optimizer_state(*optimizer, ckpt::StateTensors::shared);
      BOOST_CHECK(shared == copies);
      const auto buffers = [](const ckpt::StateDict& state) {
        std::vector<at::Tensor> tensors;
        for (const auto& entry : state.at("state").toGenericDict()) {
          for (const auto& field : entry.value().toGenericDict()) {
            if (field.key().toStringRef() != "step") tensors.push_back(field.value().toTensor());
          }
        }
        return tensors;
      };
      const auto c = buffers(copies);
      const auto s = buffers(shared);
      BOOST_REQUIRE(!c.empty());
      BOOST_REQUIRE_EQUAL(c.size(), s.size());
      train(net, *optimizer, 2, 1);  // changes every buffer in place
      // The shared buffers are the live ones, the copies the state as it was ("step" is a count
      // taken at the time either way).
      const auto after = buffers(ckpt::optimizer_state(*optimizer));
      bool any_changed = false;
      for (std::size_t i = 0; i < c.size(); ++i) {
        BOOST_CHECK(torch::equal(s[i], after[i]));
        any_changed = any_changed || !torch::equal(c[i], after[i]);
      }
      BOOST_CHECK(any_changed);
      for (std::size_t i = 0; i < c.size(); ++i) {
        BOOST_CHECK(!c[i].is_alias_of(s[i]));
      }
    }
  }
}

BOOST_AUTO_TEST_SUITE_END()
