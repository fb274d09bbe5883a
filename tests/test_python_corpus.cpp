// Files a Python user writes with torch.save, under whichever Python torch CKPT_PYTHON has (CI:
// the 2.11 wheel in the normal build, Debian's 1.13 under the sanitizers): ckpt reads every kind,
// verifies it, the ckpt tool inspects it, and an optimizer state resumes to Python's own numbers.
// The corpus (tests/python/interop.py write_corpus) covers modules, the five optimizers and five
// schedulers, nested dicts, every dtype, shared storages and views, 0-dim and empty tensors, and a
// 16 MB record after an odd-sized one (torch 2.x pads each record to 64 bytes).
#if defined(CKPT_TOOL)

#include <ckpt/checkpoint_reader.h>
#include <ckpt/module_state.h>
#include <ckpt/optimizer_state.h>
#include <ckpt/serialization.h>

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <set>

#include "python_mirror.h"
#include "test_util.h"

using ckpt::StateDict;
using ckpt::test::quote;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// The corpus, written once per test run by CKPT_PYTHON.
struct Corpus {
  ckpt::test::TempDir dir;
  json facts;  // corpus.json: torch version, one file's records, resume targets
  Corpus() {
    ckpt::test::run_python("interop.py", "write_corpus " + quote(dir.path().string()));
    facts = json::parse(ckpt::test::read_text(dir / "corpus.json"));
  }
  fs::path file(const std::string& name) const { return dir / (name + ".pt"); }
  json described(const std::string& name) const {
    return json::parse(ckpt::test::read_text(dir / (name + ".json")));
  }
};

const Corpus& corpus() {
  static const Corpus instance;
  return instance;
}

const std::vector<std::string> kDescribed = {
    "optimizer_sgd",     "optimizer_adam", "optimizer_adamw", "optimizer_rmsprop",
    "optimizer_adagrad", "schedulers",     "module",          "dtypes",
    "shared"};

std::string python_dtype(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kComplexFloat: return "torch.complex64";
    case at::kComplexDouble: return "torch.complex128";
    case at::kByte: return "torch.uint8";
    case at::kChar: return "torch.int8";
    case at::kShort: return "torch.int16";
    case at::kInt: return "torch.int32";
    case at::kLong: return "torch.int64";
    case at::kBool: return "torch.bool";
    default: return std::string("unexpected ") + c10::toString(type);
  }
}

json number(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  return x;
}

// The C++ twin of describe_loose in tests/python/interop.py, for what ckpt loaded.
json describe(const c10::IValue& value) {
  if (value.isTensor()) {
    const at::Tensor flat = value.toTensor().flatten().contiguous();
    json values = json::array();
    if (flat.is_complex()) {
      const at::Tensor pairs = at::view_as_real(flat).to(at::kDouble);
      for (int64_t i = 0; i < flat.numel(); ++i) {
        values.push_back(
            json::array({number(pairs[i][0].item<double>()), number(pairs[i][1].item<double>())}));
      }
    } else if (flat.is_floating_point()) {
      const at::Tensor doubles = flat.to(at::kDouble);
      for (int64_t i = 0; i < flat.numel(); ++i) values.push_back(number(doubles[i].item<double>()));
    } else if (flat.scalar_type() == at::kBool) {
      for (int64_t i = 0; i < flat.numel(); ++i) values.push_back(flat[i].item<bool>());
    } else {
      for (int64_t i = 0; i < flat.numel(); ++i) values.push_back(flat[i].item<int64_t>());
    }
    return {{"tensor", python_dtype(flat.scalar_type())},
            {"shape", value.toTensor().sizes().vec()},
            {"values", values}};
  }
  if (value.isGenericDict()) {
    json items = json::array();
    for (const auto& entry : value.toGenericDict()) {
      items.push_back({describe(entry.key()), describe(entry.value())});
    }
    return {{"dict", items}};
  }
  if (value.isList() || value.isTuple()) {
    json items = json::array();
    const auto elements =
        value.isList() ? value.toListRef().vec() : value.toTupleRef().elements().vec();
    for (const auto& element : elements) items.push_back(describe(element));
    return {{value.isList() ? "list" : "tuple", items}};
  }
  if (value.isNone()) return {{"scalar", nullptr}, {"type", "NoneType"}};
  if (value.isBool()) return {{"scalar", value.toBool()}, {"type", "bool"}};
  if (value.isInt()) return {{"scalar", value.toInt()}, {"type", "int"}};
  if (value.isDouble()) return {{"scalar", number(value.toDouble())}, {"type", "float"}};
  if (value.isString()) return {{"scalar", value.toStringRef()}, {"type", "str"}};
  return {{"unexpected", value.tagKind()}};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(python_corpus)

BOOST_AUTO_TEST_CASE(the_corpus_has_the_records_of_its_torch_version) {
  // So that the cases below exercise what that version writes: 2.x adds .format_version,
  // byteorder, .data/serialization_id and .storage_alignment to what 1.13 wrote.
  const json& facts = corpus().facts;
  const std::string version = facts.at("torch");
  BOOST_TEST_MESSAGE("Python torch " << version);
  std::set<std::string> records;
  for (const auto& record : facts.at("records")) records.insert(record.get<std::string>());
  for (const char* always : {"data.pkl", "version", "data/0", "data/1"}) {
    BOOST_TEST(records.count(always) == 1u, always);
  }
  if (version.rfind("1.", 0) != 0) {
    for (const char* added : {".format_version", "byteorder", ".data/serialization_id"}) {
      BOOST_TEST(records.count(added) == 1u, added << " in a torch " << version << " file");
    }
  }
}

BOOST_AUTO_TEST_CASE(every_file_verifies_and_loads_to_what_python_saved) {
  for (const auto& name : kDescribed) {
    BOOST_TEST_CONTEXT(name) {
      const fs::path path = corpus().file(name);
      BOOST_CHECK_NO_THROW(ckpt::verify_file(path));
      const json expected = corpus().described(name);
      const json loaded = describe(ckpt::load_ivalue_file(path));
      BOOST_TEST((loaded == expected), "ckpt loaded\n" << loaded.dump().substr(0, 2000)
                                                       << "\nPython saved\n"
                                                       << expected.dump().substr(0, 2000));
      // The lazy reader reads the same, whole and key by key.
      const ckpt::CheckpointReader reader(path);
      BOOST_TEST((describe(reader.load()) == expected));
      const auto& items = expected.at("dict");
      for (const auto& item : items) {
        const std::string key = item[0].at("scalar");
        BOOST_TEST((describe(reader.load(key)) == item[1]), key);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(views_keep_sharing_their_storage_and_their_strides) {
  const StateDict state = ckpt::load_state_file(corpus().file("shared"));
  const at::Tensor base = state.at("base").toTensor();
  for (const char* view : {"slice", "matrix", "transposed", "every_third"}) {
    BOOST_TEST(state.at(view).toTensor().storage().is_alias_of(base.storage()), view);
  }
  BOOST_TEST(state.at("slice").toTensor().storage_offset() == 4);
  BOOST_TEST(state.at("transposed").toTensor().strides().vec() == (std::vector<int64_t>{1, 6}));
  BOOST_TEST(state.at("every_third").toTensor().strides().vec() == (std::vector<int64_t>{3}));
  BOOST_TEST(state.at("zero_dim").toTensor().dim() == 0);
  BOOST_TEST(state.at("zero_dim").toTensor().item<double>() == 2.5);
  // One shared storage is written once: a change through the base shows through every view.
  base[5].fill_(-1.0);
  BOOST_TEST(state.at("slice").toTensor()[1].item<double>() == -1.0);
}

BOOST_AUTO_TEST_CASE(a_large_record_after_an_odd_sized_one_loads_exactly_and_in_part) {
  const fs::path path = corpus().file("large");
  BOOST_CHECK_NO_THROW(ckpt::verify_file(path));
  const at::Tensor expected = torch::arange(4 << 20, torch::kFloat32) * 0.5;
  const StateDict state = ckpt::load_state_file(path);
  BOOST_TEST(torch::equal(state.at("big").toTensor(), expected));
  BOOST_TEST(torch::equal(state.at("odd").toTensor(), torch::arange(3, torch::kUInt8)));
  const ckpt::CheckpointReader reader(path);
  BOOST_TEST(torch::equal(reader.load("odd").toTensor(), torch::arange(3, torch::kUInt8)));
  BOOST_TEST(reader.bytes_read() < reader.file_size() / 2, "a partial load of 3 bytes read "
                                                                << reader.bytes_read() << " of "
                                                                << reader.file_size());
}

BOOST_AUTO_TEST_CASE(each_python_optimizer_state_resumes_in_cpp_to_pythons_numbers) {
  const json& targets = corpus().facts.at("after_two_more");
  for (const std::string name : {"sgd", "adam", "adamw", "rmsprop", "adagrad"}) {
    BOOST_TEST_CONTEXT("optimizer " << name) {
      const StateDict saved = ckpt::load_state_file(corpus().file("optimizer_" + name));
      auto model = ckpt::test::tiny_model();
      // Other hyperparameters than Python's: the loaded state must bring Python's.
      auto optimizer = ckpt::test::make_optimizer(name, model->parameters(), /*lr=*/0.5);
      BOOST_REQUIRE(ckpt::load_module_state(*model, StateDict::from_ivalue(saved.at("model"))).ok());
      ckpt::load_optimizer_state(*optimizer, StateDict::from_ivalue(saved.at("optimizer")));
      // StepLR halved the learning rate at step 2: the loaded param group says so.
      BOOST_TEST(optimizer->param_groups()[0].options().get_lr() ==
                     (name == "adagrad" ? 0.05 : 0.005),
                 boost::test_tools::tolerance(1e-12));
      ckpt::test::tiny_step(model, *optimizer);
      ckpt::test::tiny_step(model, *optimizer);
      const StateDict after = ckpt::module_state(*model);
      for (const auto& [key, values] : targets.at(name).items()) {
        const at::Tensor tensor = after.at(key).toTensor().flatten();
        BOOST_REQUIRE_EQUAL(tensor.numel(), static_cast<int64_t>(values.size()));
        for (int64_t i = 0; i < tensor.numel(); ++i) {
          // Python and LibTorch order their float operations differently: equal to rounding.
          BOOST_TEST(tensor[i].item<double>() == values[i].get<double>(),
                     boost::test_tools::tolerance(1e-5));
        }
      }
      const StateDict scheduler = StateDict::from_ivalue(saved.at("scheduler"));
      BOOST_TEST(scheduler.at("last_epoch").toInt() == 3);
      BOOST_TEST(scheduler.at("step_size").toInt() == 2);
    }
  }
}

BOOST_AUTO_TEST_CASE(the_tool_verifies_and_inspects_every_file) {
  std::vector<std::string> names = kDescribed;
  names.push_back("large");
  for (const auto& name : names) {
    BOOST_TEST_CONTEXT(name) {
      const std::string file = quote(corpus().file(name).string());
      const auto verified = ckpt::test::run_command(quote(CKPT_TOOL) + " verify " + file);
      BOOST_TEST(verified.exit_code == 0, verified.output);
      const auto inspected = ckpt::test::run_command(quote(CKPT_TOOL) + " inspect " + file);
      BOOST_TEST(inspected.exit_code == 0, inspected.output);
      // Every top-level key of the file is in the listing.
      if (name != "large") {
        const json described = corpus().described(name);  // the loop below reads into it
        for (const auto& item : described.at("dict")) {
          const std::string key = item[0].at("scalar");
          BOOST_TEST(inspected.output.find(key) != std::string::npos, key);
        }
      } else {
        BOOST_TEST(inspected.output.find("big") != std::string::npos, inspected.output);
      }
    }
  }
}

BOOST_AUTO_TEST_SUITE_END()

#endif  // CKPT_TOOL
