// Files cross between C++ and Python's torch.save / torch.load (Debian's python3-torch).
#include <ckpt/checkpoint_error.h>
#include <ckpt/module_state.h>
#include <ckpt/optimizer_state.h>
#include <ckpt/serialization.h>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "python_mirror.h"
#include "test_util.h"

using ckpt::StateDict;
using ckpt::test::TempDir;
using nlohmann::json;
using ckpt::test::fill_deterministic;
using ckpt::test::make_optimizer;
using ckpt::test::tiny_model;
using ckpt::test::tiny_step;

namespace {

void check_close(const StateDict& state, const json& expected, double tolerance) {
  for (const auto& [key, values] : expected.items()) {
    const auto tensor = state.at(key).toTensor().flatten();
    BOOST_REQUIRE_EQUAL(tensor.numel(), static_cast<int64_t>(values.size()));
    for (int64_t i = 0; i < tensor.numel(); ++i) {
      BOOST_TEST(tensor[i].item<double>() == values[i].get<double>(),
                 boost::test_tools::tolerance(tolerance));
    }
  }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(interop)

BOOST_AUTO_TEST_CASE(python_torch_load_returns_plain_data) {
  TempDir dir;
  auto nested = StateDict{{"epoch", int64_t{3}}, {"name", std::string("run")}};
  c10::impl::GenericList list(c10::AnyType::get());
  list.push_back(int64_t{7});  // a one-element list: Python pickles it with APPEND
  list.push_back(torch::tensor({1.5, -2.0}, torch::kFloat64));
  const StateDict state{{"w", torch::arange(6., torch::kFloat32).reshape({2, 3})},
                        {"lr", 0.125},
                        {"flag", true},
                        {"none", c10::IValue()},
                        {"big", int64_t{1} << 40},
                        {"list", list},
                        {"pair", c10::ivalue::Tuple::create({int64_t{1}, 2.5})},
                        {"nested", nested.to_ivalue()}};
  ckpt::save_state_file(state, dir / "cpp.pt");
  const json d = json::parse(ckpt::test::run_python(
      "interop.py", "describe " + ckpt::test::quote((dir / "cpp.pt").string())));
  const auto& items = d.at("dict");
  BOOST_REQUIRE_EQUAL(items.size(), 8u);
  BOOST_TEST(items[0][0]["scalar"] == "w");
  BOOST_TEST(items[0][1]["tensor"] == "torch.float32");
  BOOST_TEST(items[0][1]["shape"] == json::parse("[2, 3]"));
  BOOST_TEST(items[0][1]["values"] == json::parse("[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]"));
  BOOST_TEST(items[1][1]["scalar"].get<double>() == 0.125);
  BOOST_TEST(items[2][1]["scalar"] == true);
  BOOST_TEST(items[3][1]["scalar"].is_null());
  BOOST_TEST(items[4][1]["scalar"].get<int64_t>() == (int64_t{1} << 40));
  BOOST_TEST(items[5][1]["list"][0]["scalar"] == 7);
  BOOST_TEST(items[5][1]["list"][1]["tensor"] == "torch.float64");
  BOOST_TEST(items[6][1].contains("tuple"));
  BOOST_TEST(items[7][1]["dict"][1][1]["scalar"] == "run");
}

BOOST_AUTO_TEST_CASE(a_legacy_format_file_is_refused_by_name_with_the_way_out) {
  TempDir dir;
  const std::filesystem::path file = dir / "legacy.pt";
  ckpt::test::run_python("interop.py", "write_legacy " + ckpt::test::quote(file.string()));
  BOOST_CHECK_EXCEPTION(ckpt::load_state_file(file), ckpt::CheckpointError,
                        ckpt::test::message_contains(file.string(), "legacy serialization format",
                                                     "_use_new_zipfile_serialization=False",
                                                     "torch.save(torch.load("));
  BOOST_CHECK_EXCEPTION(ckpt::verify_file(file), ckpt::CheckpointError,
                        ckpt::test::message_contains("legacy serialization format"));
}

BOOST_AUTO_TEST_CASE(python_complex_tensors_load_in_cpp) {
  TempDir dir;
  const std::filesystem::path file = dir / "dtypes.pt";
  ckpt::test::run_python("interop.py", "write_dtypes " + ckpt::test::quote(file.string()));
  const StateDict state = ckpt::load_state_file(file);
  BOOST_CHECK(state.at("c64").toTensor().scalar_type() == at::kComplexFloat);
  BOOST_CHECK(state.at("c128").toTensor().scalar_type() == at::kComplexDouble);
  BOOST_CHECK(torch::equal(state.at("c64").toTensor(),
                           torch::tensor({c10::complex<float>(1, 2), c10::complex<float>(3, -4)})));
}

BOOST_AUTO_TEST_CASE(python_model_state_dict_loads_in_cpp) {
  TempDir dir;
  ckpt::test::run_python("interop.py",
                         "write_state_dict " + ckpt::test::quote((dir / "py.pt").string()));
  const StateDict state = ckpt::load_state_file(dir / "py.pt");
  torch::nn::Sequential model(torch::nn::Linear(3, 4), torch::nn::ReLU(), torch::nn::Linear(4, 2),
                              torch::nn::BatchNorm1d(2));
  fill_deterministic(*model);
  const StateDict expected = ckpt::module_state(*model);
  // Python orders each module's parameters then its buffers; compare as a set of keys.
  BOOST_TEST(state.size() == expected.size());
  for (const auto& [key, value] : expected) {
    BOOST_TEST_CONTEXT(key) {
      BOOST_REQUIRE(state.contains(key));
      BOOST_TEST(ckpt::deep_equal(state.at(key), value));
    }
  }
  BOOST_TEST(ckpt::load_module_state(*model, state).ok());
}

BOOST_AUTO_TEST_CASE(pymarlin_checkpoint_with_adam_and_scheduler_resumes_in_cpp) {
  TempDir dir;
  const json after_two_more = json::parse(ckpt::test::run_python(
      "interop.py", "write_pymarlin " + ckpt::test::quote((dir / "pymarlin.pt").string())));
  const ckpt::Checkpoint checkpoint = ckpt::load_checkpoint_file(dir / "pymarlin.pt");
  BOOST_TEST(checkpoint.trainer_state.at("last_epoch").toInt() == 2);
  BOOST_TEST(checkpoint.trainer_backend_state.at("global_step_completed").toInt() == 3);
  const auto schedulers = checkpoint.trainer_state.at("schedulers").toListRef();
  BOOST_REQUIRE_EQUAL(schedulers.size(), 1u);
  const auto scheduler = StateDict::from_ivalue(schedulers[0]);
  BOOST_TEST(scheduler.at("step_size").toInt() == 2);
  BOOST_TEST(scheduler.at("gamma").toDouble() == 0.5);
  BOOST_TEST(scheduler.at("last_epoch").toInt() == 1);

  auto model = tiny_model();
  ckpt::load_module_state(*model, checkpoint.module_interface_state);
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(0.5));
  const auto optimizers = checkpoint.trainer_state.at("optimizers").toListRef();
  ckpt::load_optimizer_state(adam, StateDict::from_ivalue(optimizers[0]));
  BOOST_TEST(static_cast<torch::optim::AdamOptions&>(adam.param_groups()[0].options()).lr() ==
             0.01);
  tiny_step(model, adam);
  tiny_step(model, adam);
  // Python and LibTorch order their float operations differently: equal to float rounding.
  check_close(ckpt::module_state(*model), after_two_more, 1e-5);
}

BOOST_AUTO_TEST_CASE(python_optimizers_accept_cpp_state_and_continue_alike) {
  TempDir dir;
  for (const std::string name : {"sgd", "adam", "adamw", "rmsprop", "adagrad"}) {
    BOOST_TEST_CONTEXT("optimizer " << name) {
      auto model = tiny_model();
      auto optimizer = make_optimizer(name, model->parameters());
      for (int i = 0; i < 3; ++i) tiny_step(model, *optimizer);
      const auto path = dir / (name + ".pt");
      ckpt::save_state_file(StateDict{{"model", ckpt::module_state(*model).to_ivalue()},
                                      {"optimizer", ckpt::optimizer_state(*optimizer).to_ivalue()}},
                            path);
      const json python_result = json::parse(ckpt::test::run_python(
          "interop.py", "continue_optimizer " + ckpt::test::quote(path.string()) + " " + name));
      tiny_step(model, *optimizer);
      tiny_step(model, *optimizer);
      check_close(ckpt::module_state(*model), python_result, 1e-5);
    }
  }
}

BOOST_AUTO_TEST_SUITE_END()
