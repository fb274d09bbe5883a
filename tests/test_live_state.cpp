// ckpt::save / ckpt::load of live objects (issue 15), Lightning Fabric's `fabric.save(path, state)`
// and `fabric.load(path, state)`: modules, optimizers, get_state/update_state objects and plain
// values restored in place, strict and non-strict reports, the remainder, partial reads, and
// files from Python.
#include <ckpt/checkpoint_error.h>
#include <ckpt/live_state.h>
#include <ckpt/module_state.h>
#include <ckpt/optimizer_state.h>
#include <ckpt/serialization.h>
#include <ckpt/trainer_state.h>

#include <torch/torch.h>

#include <atomic>
#include <limits>

#include "test_util.h"

using ckpt::test::message_contains;
using ckpt::test::TempDir;

namespace {

torch::nn::Sequential make_model(int64_t hidden = 16, uint64_t seed = 1) {
  torch::manual_seed(seed);
  return torch::nn::Sequential(torch::nn::Linear(8, hidden), torch::nn::Tanh(),
                               torch::nn::Linear(hidden, 2));
}

void train_step(torch::nn::Sequential& model, torch::optim::Optimizer& optimizer) {
  optimizer.zero_grad();
  model->forward(torch::randn({4, 8})).pow(2).sum().backward();
  optimizer.step();
}

// An object that is neither a module nor a value: it only offers get_state/update_state.
struct Counter {
  int64_t seen = 0;
  ckpt::StateDict get_state() const { return {{"seen", seen}}; }
  void update_state(const ckpt::StateDict& state) { seen = state.at("seen").toInt(); }
};

// Counts the bytes read through it (a mapped local file would bypass read(), so files are
// wrapped and read range by range).
class CountingStorage final : public ckpt::StorageWrapper {
 public:
  using StorageWrapper::StorageWrapper;
  std::atomic<uint64_t> bytes{0};
  std::unique_ptr<ckpt::RandomAccessFile> open(const std::filesystem::path& path) override {
    struct File final : ckpt::RandomAccessFile {
      std::unique_ptr<ckpt::RandomAccessFile> file;
      std::atomic<uint64_t>* bytes;
      uint64_t size() const override { return file->size(); }
      void read(uint64_t offset, std::size_t size, void* out) const override {
        *bytes += size;
        file->read(offset, size, out);
      }
    };
    auto file = std::make_unique<File>();
    file->file = target().open(path);
    file->bytes = &bytes;
    return file;
  }
};

bool same_parameters(torch::nn::Module& a, torch::nn::Module& b) {
  return ckpt::module_state(a) == ckpt::module_state(b);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(live_state)

BOOST_AUTO_TEST_CASE(saves_and_restores_every_kind_in_place) {
  TempDir dir;
  auto model = make_model();
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(1e-2));
  train_step(model, adam);
  int64_t iteration = 42;
  double best_loss = 0.125;
  bool warmed_up = true;
  std::string run_name = "digits-1";
  ckpt::StateDict extra{{"seed", int64_t{7}}};
  Counter counter;
  counter.seen = 9;
  const auto path = dir / "state.pt";
  ckpt::save(path, {{"model", model},
                    {"optimizer", adam},
                    {"iteration", iteration},
                    {"best_loss", best_loss},
                    {"warmed_up", warmed_up},
                    {"run_name", run_name},
                    {"extra", extra},
                    {"counter", counter}});
  const ckpt::StateDict saved_optimizer = ckpt::optimizer_state(adam);
  train_step(model, adam);  // the live objects move on; the file must bring them back

  auto model2 = make_model(16, 99);
  torch::optim::Adam adam2(model2->parameters(), torch::optim::AdamOptions(0.5));
  int64_t iteration2 = 0;
  double best_loss2 = 0;
  bool warmed_up2 = false;
  std::string run_name2;
  ckpt::StateDict extra2;
  Counter counter2;
  const ckpt::LiveState state{{"model", model2},         {"optimizer", adam2},
                              {"iteration", iteration2}, {"best_loss", best_loss2},
                              {"warmed_up", warmed_up2}, {"run_name", run_name2},
                              {"extra", extra2},         {"counter", counter2}};
  const ckpt::LoadResult result = ckpt::load(path, state);
  BOOST_TEST(result.ok());
  BOOST_TEST(result.remainder.empty());
  BOOST_TEST(ckpt::deep_equal(ckpt::load_state_file(path).at("model"),
                              ckpt::module_state(*model2).to_ivalue()));
  BOOST_TEST(ckpt::optimizer_state(adam2) == saved_optimizer);
  BOOST_TEST(iteration2 == 42);
  BOOST_TEST(best_loss2 == 0.125);
  BOOST_TEST(warmed_up2);
  BOOST_TEST(run_name2 == "digits-1");
  BOOST_TEST(extra2.at("seed").toInt() == 7);
  BOOST_TEST(counter2.seen == 9);

  // Python reads it as a dict of the same names.
  const auto check = ckpt::test::run_command(
      ckpt::test::quote(ckpt::test::python()) + " -c " +
      ckpt::test::quote("import torch\n"
                        "d = torch.load('" +
                        path.string() +
                        "')\n"
                        "assert list(d) == ['model', 'optimizer', 'iteration', 'best_loss',"
                        " 'warmed_up', 'run_name', 'extra', 'counter'], list(d)\n"
                        "assert d['iteration'] == 42 and d['run_name'] == 'digits-1'\n"
                        "m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),"
                        " torch.nn.Linear(16, 2))\n"
                        "m.load_state_dict(d['model'])\n"
                        "o = torch.optim.Adam(m.parameters())\n"
                        "o.load_state_dict(d['optimizer'])\n"
                        "print('python ok')\n"));
  BOOST_TEST(check.exit_code == 0, check.output);
}

BOOST_AUTO_TEST_CASE(fewer_names_restore_only_those_and_read_only_their_records) {
  TempDir dir;
  // Large enough that the directory and the 64 KiB read with it at open are a small part.
  auto model = make_model(16384);
  torch::optim::Adam adam(model->parameters());
  train_step(model, adam);
  int64_t iteration = 5;
  const auto path = dir / "state.pt";
  ckpt::save(path, {{"model", model}, {"optimizer", adam}, {"iteration", iteration}});

  CountingStorage counting(ckpt::Storage::local());
  auto model2 = make_model(16384, 3);
  ckpt::LoadOptions options;
  options.read_remainder = false;
  const ckpt::LoadResult only_model = ckpt::load(path, {{"model", model2}}, options, counting);
  BOOST_TEST(same_parameters(*model, *model2));
  BOOST_TEST(only_model.remainder.empty());
  const uint64_t file_size = std::filesystem::file_size(path);
  BOOST_TEST_MESSAGE("model only: read " << counting.bytes << " of " << file_size << " bytes");
  BOOST_TEST(counting.bytes.load() < file_size * 45 / 100);  // not the optimizer's two moments

  // The remainder: what nothing claimed, loaded, as Fabric returns it.
  auto model3 = make_model(16384, 4);
  const ckpt::LoadResult with_rest = ckpt::load(path, {{"model", model3}});
  BOOST_TEST(with_rest.remainder.keys() == std::vector<std::string>({"optimizer", "iteration"}),
             boost::test_tools::per_element());
  BOOST_TEST(with_rest.remainder.at("iteration").toInt() == 5);
  BOOST_TEST(ckpt::StateDict::from_ivalue(with_rest.remainder.at("optimizer")) ==
             ckpt::optimizer_state(adam));
  // And the raw dict.
  BOOST_TEST(
      ckpt::load(path).keys() == std::vector<std::string>({"model", "optimizer", "iteration"}),
      boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(strict_refuses_before_anything_changes_non_strict_reports) {
  TempDir dir;
  auto model = make_model(16);
  int64_t iteration = 5;
  const auto path = dir / "state.pt";
  ckpt::save(path, {{"model", model}, {"iteration", iteration}});

  // A missing name and a module of another shape: strict names both, nothing is restored.
  auto wider = make_model(32, 2);
  const ckpt::StateDict before = ckpt::module_state(*wider);
  int64_t iteration2 = 0;
  double lr = 0.5;
  BOOST_CHECK_EXCEPTION(
      ckpt::load(path, {{"iteration", iteration2}, {"model", wider}, {"lr", lr}}),
      ckpt::CheckpointError,
      message_contains("state.pt (strict)", "not in the file: lr",
                       "model:", "0.weight: checkpoint shape [16, 8] vs module shape [32, 8]"));
  BOOST_TEST(iteration2 == 0);
  BOOST_TEST(ckpt::module_state(*wider) == before);
  BOOST_TEST(lr == 0.5);

  // Non-strict: the report says the same, the rest is restored.
  auto other = torch::nn::Sequential(torch::nn::Linear(8, 16), torch::nn::Tanh(),
                                     torch::nn::Linear(16, 2), torch::nn::Linear(2, 2));
  ckpt::LoadOptions lenient;
  lenient.strict = false;
  const ckpt::LoadResult result =
      ckpt::load(path, {{"iteration", iteration2}, {"model", other}, {"lr", lr}}, lenient);
  BOOST_TEST(!result.ok());
  BOOST_TEST(result.missing_names == std::vector<std::string>({"lr"}),
             boost::test_tools::per_element());
  BOOST_REQUIRE_EQUAL(result.module_reports.size(), 1u);
  BOOST_TEST(result.module_reports[0].second.missing_keys ==
                 std::vector<std::string>({"3.weight", "3.bias"}),
             boost::test_tools::per_element());
  BOOST_TEST(result.to_string().find("not in the file: lr") != std::string::npos);
  BOOST_TEST(iteration2 == 5);
  BOOST_TEST(ckpt::deep_equal(ckpt::module_state(*other).at("0.weight"),
                              ckpt::module_state(*model).at("0.weight")));
  BOOST_TEST(lr == 0.5);
}

BOOST_AUTO_TEST_CASE(a_value_of_another_type_is_refused_naming_it) {
  TempDir dir;
  std::string name = "x";
  int64_t step = 3;
  const auto path = dir / "state.pt";
  ckpt::save(path, {{"name", name}, {"step", step}});
  int64_t as_int = 0;
  int64_t step2 = 0;
  ckpt::LoadOptions lenient;
  lenient.strict = false;
  BOOST_CHECK_EXCEPTION(ckpt::load(path, {{"step", step2}, {"name", as_int}}, lenient),
                        ckpt::CheckpointError,
                        message_contains("state.pt: 'name' is a String in the file, not an int"));
  BOOST_TEST(step2 == 0);  // checked before anything changed
  ckpt::StateDict not_a_dict;
  BOOST_CHECK_EXCEPTION(ckpt::load(path, {{"step", not_a_dict}}), ckpt::CheckpointError,
                        message_contains("'step'"));
}

BOOST_AUTO_TEST_CASE(other_numeric_types_are_stored_as_pythons_int_and_float) {
  TempDir dir;
  const auto path = dir / "numbers.pt";
  int epoch = 7;
  std::size_t samples = 123456789012u;
  uint8_t small = 200;
  float lr = 0.5f;
  long long big = -5;
  ckpt::save(path, {{"epoch", epoch}, {"samples", samples}, {"small", small}, {"lr", lr},
                    {"big", big}});
  // Stored as Python would: ints and a float, not tensors or strings.
  const ckpt::StateDict stored = ckpt::load(path);
  BOOST_TEST(stored.at("epoch").isInt());
  BOOST_TEST(stored.at("epoch").toInt() == 7);
  BOOST_TEST(stored.at("samples").toInt() == 123456789012);
  BOOST_TEST(stored.at("small").toInt() == 200);
  BOOST_TEST(stored.at("lr").isDouble());
  BOOST_TEST(stored.at("lr").toDouble() == 0.5);
  BOOST_TEST(stored.at("big").toInt() == -5);

  int epoch2 = 0;
  std::size_t samples2 = 0;
  uint8_t small2 = 0;
  float lr2 = 0;
  long long big2 = 0;
  ckpt::load(path, {{"epoch", epoch2}, {"samples", samples2}, {"small", small2}, {"lr", lr2},
                    {"big", big2}});
  BOOST_TEST(epoch2 == 7);
  BOOST_TEST(samples2 == 123456789012u);
  BOOST_TEST(small2 == 200);
  BOOST_TEST(lr2 == 0.5f);
  BOOST_TEST(big2 == -5);

  // A value that does not fit the variable, or of the other kind, is refused by name.
  int8_t tiny = 0;
  BOOST_CHECK_EXCEPTION(ckpt::load(path, {{"small", tiny}}), ckpt::CheckpointError,
                        message_contains("'small' is 200 in the file, out of the range of int8"));
  BOOST_TEST(tiny == 0);
  uint32_t unsigned_epoch = 0;
  BOOST_CHECK_EXCEPTION(ckpt::load(path, {{"lr", unsigned_epoch}}), ckpt::CheckpointError,
                        message_contains("'lr' is a Double in the file, not an int"));
  float as_float = 0;
  BOOST_CHECK_EXCEPTION(ckpt::load(path, {{"epoch", as_float}}), ckpt::CheckpointError,
                        message_contains("'epoch' is a Int in the file, not a float"));
  uint64_t huge = std::numeric_limits<uint64_t>::max();
  BOOST_CHECK_EXCEPTION(ckpt::save(dir / "huge.pt", {{"huge", huge}}), ckpt::CheckpointError,
                        message_contains("18446744073709551615", "does not fit"));
}

BOOST_AUTO_TEST_CASE(trainer_state_from_optimizers_and_schedulers_in_one_call) {
  TempDir dir;
  auto model = make_model();
  torch::optim::Adam adam(model->parameters(), torch::optim::AdamOptions(0.01));
  torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  Counter scheduler;
  scheduler.seen = 4;
  train_step(model, adam);
  train_step(model, sgd);
  ckpt::Checkpoint checkpoint{ckpt::module_state(*model),
                              ckpt::trainer_state(3, {adam, sgd}, {scheduler})};
  ckpt::set_metrics(checkpoint, {{"val_loss", 0.5}});
  BOOST_TEST(checkpoint.trainer_state.keys() ==
                 (std::vector<std::string>{"last_epoch", "optimizers", "schedulers"}),
             boost::test_tools::per_element());
  BOOST_TEST(checkpoint.trainer_state.at("optimizers").toListRef().size() == 2u);
  BOOST_TEST((ckpt::StateDict::from_ivalue(
                  checkpoint.trainer_state.at("optimizers").toListRef()[0]) ==
              ckpt::optimizer_state(adam)));
  ckpt::save_checkpoint_file(checkpoint, dir / "c.pt");

  auto model2 = make_model(16, 2);
  torch::optim::Adam adam2(model2->parameters(), torch::optim::AdamOptions(0.01));
  torch::optim::SGD sgd2(model2->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  Counter scheduler2;
  const ckpt::Checkpoint loaded = ckpt::load_checkpoint_file(dir / "c.pt");
  BOOST_TEST(ckpt::load_trainer_state(loaded.trainer_state, {adam2, sgd2}, {scheduler2}) == 3);
  BOOST_TEST((ckpt::optimizer_state(adam2) == ckpt::optimizer_state(adam)));
  BOOST_TEST((ckpt::optimizer_state(sgd2) == ckpt::optimizer_state(sgd)));
  BOOST_TEST(scheduler2.seen == 4);
  BOOST_TEST(ckpt::metrics(loaded).at(0).second == 0.5);

  // From a container of pointers, as a trainer holds them.
  std::vector<std::shared_ptr<Counter>> schedulers{std::make_shared<Counter>()};
  BOOST_TEST(ckpt::load_trainer_state(loaded.trainer_state, {adam2, sgd2},
                                      ckpt::live_objects(schedulers)) == 3);
  BOOST_TEST(schedulers[0]->seen == 4);

  // A count that differs is refused before anything is restored.
  Counter untouched;
  BOOST_CHECK_EXCEPTION(ckpt::load_trainer_state(loaded.trainer_state, {adam2}, {untouched}),
                        ckpt::CheckpointError,
                        message_contains("trainer_state.optimizers has 2 entries, but 1 were given"));
  BOOST_TEST(untouched.seen == 0);
  BOOST_CHECK_EXCEPTION(ckpt::load_trainer_state(ckpt::StateDict{}, {adam2}),
                        ckpt::CheckpointError,
                        message_contains("trainer_state.last_epoch is missing"));
}

BOOST_AUTO_TEST_CASE(a_python_file_restores_the_same_way) {
  TempDir dir;
  const auto path = dir / "fabric.pt";
  const auto wrote = ckpt::test::run_command(
      ckpt::test::quote(ckpt::test::python()) + " -c " +
      ckpt::test::quote("import torch\n"
                        "torch.manual_seed(0)\n"
                        "m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(),"
                        " torch.nn.Linear(16, 2))\n"
                        "o = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)\n"
                        "m(torch.randn(4, 8)).sum().backward(); o.step()\n"
                        "torch.save({'model': m.state_dict(), 'optimizer': o.state_dict(),"
                        " 'iteration': 11, 'note': 'from python'}, '" +
                        path.string() + "')\n"));
  BOOST_REQUIRE_MESSAGE(wrote.exit_code == 0, wrote.output);
  auto model = make_model(16, 5);
  torch::optim::SGD sgd(model->parameters(), torch::optim::SGDOptions(0.5).momentum(0.1));
  int64_t iteration = 0;
  const ckpt::LoadResult result =
      ckpt::load(path, {{"model", model}, {"optimizer", sgd}, {"iteration", iteration}});
  BOOST_TEST(result.ok());
  BOOST_TEST(iteration == 11);
  BOOST_TEST(result.remainder.at("note").toStringRef() == "from python");
  const auto& group = static_cast<torch::optim::SGDOptions&>(sgd.param_groups()[0].options());
  BOOST_TEST(group.lr() == 0.1);
  BOOST_TEST(group.momentum() == 0.9);
  const ckpt::StateDict raw = ckpt::load_state_file(path);
  BOOST_TEST(ckpt::deep_equal(raw.at("model"), ckpt::module_state(*model).to_ivalue()));
}

BOOST_AUTO_TEST_SUITE_END()
