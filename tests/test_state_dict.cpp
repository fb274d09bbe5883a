#include <ckpt/checkpoint.h>
#include <ckpt/checkpoint_error.h>
#include <ckpt/serialization.h>
#include <ckpt/state_dict.h>

#include <torch/torch.h>

#include "test_util.h"

using ckpt::StateDict;
using ckpt::test::message_contains;
using ckpt::test::TempDir;

namespace {

c10::impl::GenericDict string_dict() {
  return c10::impl::GenericDict(c10::StringType::get(), c10::AnyType::get());
}

// One value of every kind a StateDict holds, nested.
StateDict every_kind() {
  auto nested = string_dict();
  nested.insert("inner_tensor", torch::arange(6, torch::kInt64).reshape({2, 3}));
  nested.insert("inner_string", std::string("deep"));
  auto int_keys = c10::impl::GenericDict(c10::IntType::get(), c10::AnyType::get());
  int_keys.insert(int64_t{0}, std::string("zero"));
  int_keys.insert(int64_t{7}, 1.5);
  c10::impl::GenericList list(c10::AnyType::get());
  list.push_back(int64_t{1});
  list.push_back(std::string("two"));
  list.push_back(torch::ones({2}));
  list.push_back(nested);
  c10::impl::GenericList single(c10::AnyType::get());
  single.push_back(int64_t{42});

  StateDict state;
  state.insert_or_assign("float", torch::randn({3, 4}));
  state.insert_or_assign("double", torch::randn({2}, torch::kFloat64));
  state.insert_or_assign("half", torch::randn({5}).to(torch::kHalf));
  state.insert_or_assign("bfloat16", torch::randn({5}).to(torch::kBFloat16));
  state.insert_or_assign("int8", torch::tensor({-3, 4}, torch::kInt8));
  state.insert_or_assign("uint8", torch::tensor({250, 4}, torch::kUInt8));
  state.insert_or_assign("bool_tensor", torch::tensor({true, false, true}));
  state.insert_or_assign("int32", torch::tensor({1, -2, 3}, torch::kInt32));
  state.insert_or_assign("scalar_tensor", torch::scalar_tensor(3.5));
  state.insert_or_assign("empty_tensor", torch::zeros({0, 3}));
  state.insert_or_assign("non_contiguous", torch::arange(12.).reshape({3, 4}).t());
  state.insert_or_assign("int", int64_t{-5});
  state.insert_or_assign("big_int", int64_t{1} << 40);
  state.insert_or_assign("min_int", std::numeric_limits<int64_t>::min());
  state.insert_or_assign("int16_range", int64_t{40000});
  state.insert_or_assign("double_value", 0.1);
  state.insert_or_assign("bool_true", true);
  state.insert_or_assign("bool_false", false);
  state.insert_or_assign("string", std::string("héllo\nworld"));
  state.insert_or_assign("empty_string", std::string());
  state.insert_or_assign("none", c10::IValue());
  state.insert_or_assign("list", list);
  state.insert_or_assign("single_list", single);
  state.insert_or_assign("empty_list", c10::impl::GenericList(c10::AnyType::get()));
  state.insert_or_assign("tuple", c10::ivalue::Tuple::create({int64_t{1}, 2.5}));
  state.insert_or_assign("empty_tuple", c10::ivalue::Tuple::create({}));
  state.insert_or_assign("nested", nested);
  state.insert_or_assign("empty_dict", string_dict());
  state.insert_or_assign("int_keys", int_keys);
  return state;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(state_dict)

BOOST_AUTO_TEST_CASE(keeps_insertion_order_and_replaces_in_place) {
  StateDict state;
  state.insert_or_assign("b", int64_t{1});
  state.insert_or_assign("a", int64_t{2});
  state.insert_or_assign("c", int64_t{3});
  state.insert_or_assign("a", int64_t{20});
  BOOST_TEST((state.keys() == std::vector<std::string>{"b", "a", "c"}));
  BOOST_TEST(state.at("a").toInt() == 20);
  BOOST_TEST(state.erase("b"));
  BOOST_TEST(!state.erase("b"));
  BOOST_TEST((state.keys() == std::vector<std::string>{"a", "c"}));
  BOOST_TEST(state.at("c").toInt() == 3);
}

BOOST_AUTO_TEST_CASE(missing_key_names_the_key_and_the_keys_present) {
  StateDict state{{"alpha", int64_t{1}}, {"beta", int64_t{2}}};
  BOOST_CHECK_EXCEPTION(state.at("gamma"), ckpt::CheckpointError,
                        message_contains("'gamma'", "'alpha'", "'beta'"));
}

BOOST_AUTO_TEST_CASE(equality_is_deep_and_order_sensitive) {
  StateDict a{{"x", torch::ones({2})}, {"y", int64_t{1}}};
  StateDict b{{"x", torch::ones({2})}, {"y", int64_t{1}}};
  BOOST_TEST((a == b));
  b.at("x").toTensor()[0] = 2;
  BOOST_TEST((a != b));
  StateDict reordered{{"y", int64_t{1}}, {"x", torch::ones({2})}};
  BOOST_TEST((a != reordered));
  StateDict other_dtype{{"x", torch::ones({2}, torch::kFloat64)}, {"y", int64_t{1}}};
  BOOST_TEST((a != other_dtype));
  StateDict int_vs_double{{"x", torch::ones({2})}, {"y", 1.0}};
  BOOST_TEST((a != int_vs_double));
}

BOOST_AUTO_TEST_CASE(every_value_kind_round_trips_through_a_file) {
  TempDir dir;
  const StateDict state = every_kind();
  ckpt::save_state_file(state, dir / "all.pt");
  const StateDict loaded = ckpt::load_state_file(dir / "all.pt");
  BOOST_TEST(loaded.keys() == state.keys(), boost::test_tools::per_element());
  for (const auto& [key, value] : state) {
    BOOST_TEST(ckpt::deep_equal(value, loaded.at(key)), "value of '" << key << "' changed");
  }
  BOOST_TEST((loaded == state));
  // Views keep their layout.
  const auto t = loaded.at("non_contiguous").toTensor();
  BOOST_TEST(t.strides().vec() == (std::vector<int64_t>{1, 4}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(shared_storage_is_written_once_and_stays_shared) {
  TempDir dir;
  auto base = torch::arange(1000.);
  StateDict state{{"whole", base}, {"view", base.slice(0, 10, 20)}};
  ckpt::save_state_file(state, dir / "shared.pt");
  BOOST_TEST(std::filesystem::file_size(dir / "shared.pt") < 2 * 1000 * sizeof(float));
  const StateDict loaded = ckpt::load_state_file(dir / "shared.pt");
  BOOST_TEST(torch::equal(loaded.at("view").toTensor(), torch::arange(10., 20.)));
  loaded.at("whole").toTensor()[15] = -1;
  BOOST_TEST(loaded.at("view").toTensor()[5].item<float>() == -1.f);
}

BOOST_AUTO_TEST_CASE(checkpoint_equality_and_round_trip) {
  TempDir dir;
  ckpt::Checkpoint checkpoint;
  BOOST_TEST(checkpoint.empty());
  checkpoint.module_interface_state = every_kind();
  checkpoint.trainer_state.insert_or_assign("last_epoch", int64_t{4});
  ckpt::save_checkpoint_file(checkpoint, dir / "c.pt");
  const ckpt::Checkpoint loaded = ckpt::load_checkpoint_file(dir / "c.pt");
  BOOST_TEST((loaded == checkpoint));
  BOOST_TEST(loaded.trainer_backend_state.empty());
  ckpt::Checkpoint changed = loaded;
  changed.trainer_state.insert_or_assign("last_epoch", int64_t{5});
  BOOST_TEST((changed != checkpoint));
}

BOOST_AUTO_TEST_CASE(deep_copy_copies_all_six_fields_and_shares_no_tensor) {
  ckpt::Checkpoint checkpoint;
  checkpoint.module_interface_state.insert_or_assign("w", torch::ones({3}));
  checkpoint.trainer_state.insert_or_assign("moments", torch::full({2}, 2.f));
  checkpoint.trainer_backend_state.insert_or_assign("rng", torch::zeros({4}, torch::kUInt8));
  checkpoint.registered_state.insert_or_assign("ema", StateDict{{"v", torch::ones({1})}}.to_ivalue());
  checkpoint.hyperparameters.insert_or_assign("chkp.period", int64_t{2});
  ckpt::set_metrics(checkpoint, {{"val_loss", 0.25}, {"val_acc", 0.75}});
  const ckpt::Checkpoint copy = ckpt::deep_copy(checkpoint);
  BOOST_TEST((copy == checkpoint));
  BOOST_TEST(ckpt::deep_equal(copy.registered_state, checkpoint.registered_state));
  // Training goes on: the copy does not change with the live tensors.
  checkpoint.module_interface_state.at("w").toTensor().add_(1);
  checkpoint.trainer_state.at("moments").toTensor().add_(1);
  checkpoint.trainer_backend_state.at("rng").toTensor().add_(1);
  StateDict::from_ivalue(checkpoint.registered_state.at("ema")).at("v").toTensor().add_(1);
  BOOST_TEST(copy.module_interface_state.at("w").toTensor().equal(torch::ones({3})));
  BOOST_TEST(copy.trainer_state.at("moments").toTensor().equal(torch::full({2}, 2.f)));
  BOOST_TEST(copy.trainer_backend_state.at("rng").toTensor().equal(torch::zeros({4}, torch::kUInt8)));
  BOOST_TEST(StateDict::from_ivalue(copy.registered_state.at("ema"))
                 .at("v")
                 .toTensor()
                 .equal(torch::ones({1})));
  BOOST_TEST(copy.hyperparameters.at("chkp.period").toInt() == 2);
  BOOST_TEST(!ckpt::deep_equal(copy.module_interface_state, checkpoint.module_interface_state));
  const auto metrics = ckpt::metrics(copy);
  BOOST_TEST(metrics.size() == 2u);
  BOOST_TEST(metrics.at(0).first == "val_loss");
  BOOST_TEST(metrics.at(0).second == 0.25);
  BOOST_TEST(metrics.at(1).first == "val_acc");
  BOOST_TEST(metrics.at(1).second == 0.75);
}

BOOST_AUTO_TEST_CASE(deep_equal_of_state_dicts_and_metrics_errors) {
  const StateDict a{{"x", torch::ones({2})}, {"n", int64_t{1}}};
  StateDict b{{"x", torch::ones({2})}, {"n", int64_t{1}}};
  BOOST_TEST(ckpt::deep_equal(a, b));
  b.insert_or_assign("n", int64_t{2});
  BOOST_TEST(!ckpt::deep_equal(a, b));
  const StateDict reordered{{"n", int64_t{1}}, {"x", torch::ones({2})}};
  BOOST_TEST(!ckpt::deep_equal(a, reordered));

  ckpt::Checkpoint checkpoint;
  BOOST_TEST(ckpt::metrics(checkpoint).empty());
  checkpoint.metadata.insert_or_assign("metrics",
                                       StateDict{{"val_loss", std::string("low")}}.to_ivalue());
  BOOST_CHECK_EXCEPTION(ckpt::metrics(checkpoint), ckpt::CheckpointError,
                        message_contains("metadata.metrics.val_loss", "not a number"));
}

BOOST_AUTO_TEST_CASE(unsupported_values_name_their_key) {
  TempDir dir;
  auto nested = string_dict();
  nested.insert("bad", torch::ones({2}).to_sparse());
  StateDict state{{"outer", nested}};
  BOOST_CHECK_EXCEPTION(ckpt::save_state_file(state, dir / "x.pt"), ckpt::CheckpointError,
                        message_contains("outer.bad", "dense"));
  BOOST_TEST(ckpt::test::count_files(dir.path()) == 0u);
}

BOOST_AUTO_TEST_SUITE_END()
