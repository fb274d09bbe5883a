#include <ckpt/checkpoint_error.h>
#include <ckpt/module_state.h>

#include <torch/torch.h>

#include "test_util.h"

using ckpt::test::message_contains;

namespace {

struct Net : torch::nn::Module {
  Net(int64_t hidden = 4) {
    fc1 = register_module("fc1", torch::nn::Linear(3, hidden));
    bn = register_module("bn", torch::nn::BatchNorm1d(hidden));
    fc2 = register_module("fc2", torch::nn::Linear(hidden, 2));
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::BatchNorm1d bn{nullptr};
};

}  // namespace

BOOST_AUTO_TEST_SUITE(module_state)

BOOST_AUTO_TEST_CASE(uses_pytorch_dotted_names_parameters_then_buffers) {
  Net net;
  const auto state = ckpt::module_state(net);
  const std::vector<std::string> expected{
      "fc1.weight", "fc1.bias", "bn.weight",  "bn.bias",          "fc2.weight",
      "fc2.bias",   "bn.running_mean", "bn.running_var", "bn.num_batches_tracked"};
  BOOST_TEST(state.keys() == expected, boost::test_tools::per_element());
  BOOST_TEST(!state.at("fc1.weight").toTensor().requires_grad());
}

BOOST_AUTO_TEST_CASE(strict_load_copies_every_tensor) {
  torch::manual_seed(1);
  Net source;
  torch::manual_seed(2);
  Net target;
  const auto report = ckpt::load_module_state(target, ckpt::module_state(source));
  BOOST_TEST(report.ok());
  const auto a = ckpt::module_state(source);
  const auto b = ckpt::module_state(target);
  BOOST_TEST((a == b));
  BOOST_TEST(target.fc1->weight.requires_grad());
}

BOOST_AUTO_TEST_CASE(strict_load_names_every_bad_key_and_both_shapes_and_changes_nothing) {
  Net source(5);
  Net target(4);
  auto state = ckpt::module_state(source);
  state.erase("fc2.bias");
  state.insert_or_assign("extra.weight", torch::ones({1}));
  const auto before = ckpt::module_state(target);
  std::vector<at::Tensor> copies;
  for (const auto& [key, value] : before) copies.push_back(value.toTensor().clone());
  BOOST_CHECK_EXCEPTION(
      ckpt::load_module_state(target, state), ckpt::CheckpointError,
      message_contains("missing keys: fc2.bias", "unexpected keys: extra.weight",
                       "fc1.weight: checkpoint shape [5, 3] vs module shape [4, 3]"));
  std::size_t i = 0;
  for (const auto& [key, value] : ckpt::module_state(target)) {
    BOOST_TEST(torch::equal(value.toTensor(), copies[i++]), key << " was modified");
  }
}

BOOST_AUTO_TEST_CASE(non_strict_load_reports_and_copies_what_matches) {
  Net source(5);
  Net target(4);
  auto state = ckpt::module_state(source);
  state.erase("fc2.bias");
  state.insert_or_assign("extra", int64_t{1});
  const auto report = ckpt::load_module_state(target, state, /*strict=*/false);
  BOOST_TEST(report.missing_keys == std::vector<std::string>{"fc2.bias"},
             boost::test_tools::per_element());
  BOOST_TEST(report.unexpected_keys == std::vector<std::string>{"extra"},
             boost::test_tools::per_element());
  BOOST_TEST(report.mismatched_keys.size() == 7u);  // everything sized by `hidden`
  BOOST_TEST(torch::equal(target.fc2->weight, source.fc2->weight) == false);
  // fc2.weight is [2, hidden]: mismatched too; nothing of fc1 copied.
  BOOST_TEST(!report.ok());
}

BOOST_AUTO_TEST_SUITE_END()
