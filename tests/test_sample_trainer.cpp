// The sample trainer in-process: scheduler, backend and module state, the trainer's lifecycle
// through a user-written checkpointer, and exact resume.
#ifdef CKPT_SAMPLE_TRAINER

#include "test_sample_trainer_helpers.h"

#include <sample_trainer/digits_module.h>
#include <sample_trainer/distributed.h>
#include <sample_trainer/lr_scheduler.h>
#include <sample_trainer/single_process.h>
#include <sample_trainer/trainer.h>

#include <ckpt/abstract_checkpointer.h>
#include <ckpt/checkpoint_error.h>
#include <ckpt/optimizer_state.h>

#include <torch/torch.h>
#include <boost/program_options.hpp>
#include <boost/test/unit_test.hpp>

#include <memory>
#include <sstream>
#include <string>
#include <vector>

using namespace sample_trainer;
using sample_trainer::test::TempDir;

namespace {

// ---- docs/sample-trainer.md example: a user-written checkpointer ----

/// Keeps the latest checkpoint and the final weights in memory and records every call. The states
/// it is handed share memory with the live model, so it stores deep copies.
class MemoryCheckpointer final : public ckpt::AbstractCheckpointer {
 public:
  std::optional<std::filesystem::path> save(const ckpt::Checkpoint& checkpoint, int64_t index,
                                            bool force) override {
    calls.push_back("save(" + std::to_string(index) + (force ? ", force)" : ")"));
    latest = ckpt::deep_copy(checkpoint);  // all six parts, sharing no tensor
    return std::nullopt;  // nothing was written to a file
  }

  std::optional<std::filesystem::path> save_model(const ckpt::StateDict& model_state,
                                                  int64_t index) override {
    calls.push_back("save_model(" + std::to_string(index) + ")");
    model = ckpt::deep_copy(model_state);
    return std::nullopt;
  }

  ckpt::Checkpoint load() override {
    calls.push_back("load()");
    return latest;  // empty on the first run: a fresh start
  }

  std::vector<std::string> calls;
  ckpt::Checkpoint latest;
  ckpt::StateDict model;
};

// Copies a save's tensors only when the trainer calls wait_staged(), as a checkpointer that stages
// in the background does, and counts the tensors that had changed by then: a trainer that changed
// a saved tensor before calling wait_staged() would show here.
class DeferredCopyCheckpointer final : public ckpt::AbstractCheckpointer {
 public:
  std::optional<std::filesystem::path> save(const ckpt::Checkpoint& checkpoint, int64_t,
                                            bool) override {
    pending = checkpoint;  // shares the live tensors
    at_save = deep(checkpoint.module_interface_state, checkpoint.trainer_state);
    return std::nullopt;
  }
  ckpt::Checkpoint load() override { return {}; }
  void wait_staged() override {
    ++wait_staged_calls;
    if (!pending) return;
    const auto now = deep(pending->module_interface_state, pending->trainer_state);
    ++staged;
    if (!ckpt::deep_equal(now, at_save)) ++torn;
    pending.reset();
  }
  void wait() override { wait_staged(); }

  std::optional<ckpt::Checkpoint> pending;
  c10::IValue at_save;
  int wait_staged_calls = 0;
  int staged = 0;
  int torn = 0;

 private:
  // Deep copies (compared with ckpt::deep_equal: tensors by value).
  static c10::IValue deep(const ckpt::StateDict& a, const ckpt::StateDict& b) {
    return c10::ivalue::Tuple::create({a.to_ivalue().deepcopy(), b.to_ivalue().deepcopy()});
  }
};

// Usage, as in docs/sample-trainer.md:
//   auto checkpointer = std::make_shared<MemoryCheckpointer>();
//   Trainer trainer(std::make_shared<SingleProcess>(), module, args, checkpointer);
//   trainer.train();

// ---- fixtures ----

const DigitsData& digits() {
  static const DigitsData data = load_digits(CKPT_SOURCE_DIR "/data/digits.csv.gz");
  return data;
}

TrainerArguments quick_args(int64_t epochs) {
  TrainerArguments args;
  args.epochs = epochs;
  args.batch_size = 64;
  args.seed = 7;
  return args;
}

// A module as the sample program builds one: seeded weights, one intra-op thread.
std::shared_ptr<DigitsModule> make_module(uint64_t init_seed) {
  at::set_num_threads(1);
  at::manual_seed(init_seed);
  return std::make_shared<DigitsModule>(digits());
}

void check_tensors_equal(const ckpt::StateDict& a, const ckpt::StateDict& b) {
  BOOST_REQUIRE(a.keys() == b.keys());
  for (const auto& [key, value] : a) {
    BOOST_TEST_CONTEXT("key " << key) {
      BOOST_CHECK(torch::equal(value.toTensor(), b.at(key).toTensor()));
    }
  }
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "<no exception>";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(sample_trainer_units)

BOOST_AUTO_TEST_CASE(step_lr_follows_python_and_round_trips) {
  torch::nn::Linear linear(2, 2);
  auto sgd =
      std::make_shared<torch::optim::SGD>(linear->parameters(), torch::optim::SGDOptions(1.0));
  StepLR scheduler(sgd, /*step_size=*/2, /*gamma=*/0.5);
  // Python: StepLR(SGD(lr=1), 2, 0.5).state_dict() right after construction.
  const std::vector<std::string> python_keys = {"step_size",
                                                "gamma",
                                                "base_lrs",
                                                "last_epoch",
                                                "verbose",
                                                "_step_count",
                                                "_get_lr_called_within_step",
                                                "_last_lr"};
  BOOST_CHECK(scheduler.get_state().keys() == python_keys);
  BOOST_CHECK_EQUAL(scheduler.get_state().at("last_epoch").toInt(), 0);
  BOOST_CHECK_EQUAL(scheduler.get_state().at("_step_count").toInt(), 1);

  std::vector<double> lrs;
  for (int i = 0; i < 5; ++i) {
    scheduler.step();
    lrs.push_back(sgd->param_groups()[0].options().get_lr());
  }
  BOOST_CHECK((lrs == std::vector<double>{1.0, 0.5, 0.5, 0.25, 0.25}));
  BOOST_CHECK(scheduler.get_last_lr() == std::vector<double>{0.25});

  const ckpt::StateDict saved = scheduler.get_state();
  auto other_sgd =
      std::make_shared<torch::optim::SGD>(linear->parameters(), torch::optim::SGDOptions(0.25));
  StepLR restored(other_sgd, 7, 0.9);
  restored.update_state(saved);
  BOOST_CHECK(restored.get_state() == saved);
  scheduler.step();
  restored.step();
  BOOST_CHECK_EQUAL(other_sgd->param_groups()[0].options().get_lr(), 0.125);
  BOOST_CHECK(restored.get_state() == scheduler.get_state());
}

BOOST_AUTO_TEST_CASE(step_lr_rejects_bad_state_unchanged) {
  torch::nn::Linear linear(2, 2);
  auto sgd =
      std::make_shared<torch::optim::SGD>(linear->parameters(), torch::optim::SGDOptions(1.0));
  StepLR scheduler(sgd, 2, 0.5);
  scheduler.step();
  const ckpt::StateDict before = scheduler.get_state();

  ckpt::StateDict missing = before;
  missing.erase("gamma");
  BOOST_CHECK_EQUAL(error_of([&] { scheduler.update_state(missing); }),
                    "scheduler state: 'gamma' is missing");

  ckpt::StateDict two_groups = before;
  two_groups.insert_or_assign("base_lrs", c10::List<double>({1.0, 2.0}));
  BOOST_CHECK_EQUAL(
      error_of([&] { scheduler.update_state(two_groups); }),
      "scheduler state: 'base_lrs' has 2 entries but the optimizer has 1 param groups");

  ckpt::StateDict wrong_type = before;
  wrong_type.insert_or_assign("last_epoch", std::string("three"));
  BOOST_CHECK_EQUAL(error_of([&] { scheduler.update_state(wrong_type); }),
                    "scheduler state: 'last_epoch' must be an int, got String");
  BOOST_CHECK(scheduler.get_state() == before);

  BOOST_CHECK_EQUAL(error_of([&] { StepLR(sgd, 0, 0.5); }),
                    "StepLR: invalid step_size 0: must be >= 1");
}

BOOST_AUTO_TEST_CASE(single_process_state_restores_counters_rng_and_order) {
  auto module = make_module(1);
  auto opt = module->get_optimizers_schedulers({0.01, 1, 23});
  SingleProcess backend;
  backend.init({module, opt.optimizers, opt.schedulers, 64, 5});
  BOOST_CHECK(backend.get_state().keys() ==
              (std::vector<std::string>{"global_step_completed", "batches_completed", "rng_state",
                                        "shuffle_seed", "epoch_in_progress", "batch_in_epoch",
                                        "epoch_loss_sum"}));
  backend.train_epoch(0, {});
  BOOST_CHECK_EQUAL(backend.global_step_completed(), 23);  // ceil(1438 / 64)
  BOOST_CHECK_EQUAL(backend.batches_completed(), 23);

  const ckpt::StateDict saved = backend.get_state();
  BOOST_CHECK(saved.at("rng_state").toTensor().scalar_type() == at::kByte);
  const at::Tensor expected = torch::rand({4});  // what the generator gives after `saved`
  torch::rand({100});

  SingleProcess fresh;
  fresh.init({module, opt.optimizers, opt.schedulers, 64, /*seed=*/999});
  fresh.update_state(saved);
  BOOST_CHECK(torch::equal(torch::rand({4}), expected));
  BOOST_CHECK_EQUAL(fresh.global_step_completed(), 23);
  BOOST_CHECK_EQUAL(fresh.get_state().at("shuffle_seed").toInt(), 5);

  // The data order is a function of (seed, epoch) alone.
  BOOST_CHECK(
      torch::equal(SingleProcess::epoch_order(100, 5, 3), SingleProcess::epoch_order(100, 5, 3)));
  BOOST_CHECK(
      !torch::equal(SingleProcess::epoch_order(100, 5, 3), SingleProcess::epoch_order(100, 5, 4)));
  BOOST_CHECK(
      !torch::equal(SingleProcess::epoch_order(100, 5, 3), SingleProcess::epoch_order(100, 6, 3)));
}

BOOST_AUTO_TEST_CASE(single_process_rejects_bad_state_unchanged) {
  auto module = make_module(1);
  auto opt = module->get_optimizers_schedulers({0.01, 1, 23});
  SingleProcess backend;
  backend.init({module, opt.optimizers, opt.schedulers, 64, 5});
  backend.train_epoch(0, {});
  const ckpt::StateDict good = backend.get_state();

  SingleProcess fresh;
  fresh.init({module, opt.optimizers, opt.schedulers, 64, 5});
  ckpt::StateDict bad_rng = good;
  bad_rng.insert_or_assign("rng_state", torch::zeros({5056}, torch::kFloat));
  BOOST_CHECK_EQUAL(
      error_of([&] { fresh.update_state(bad_rng); }),
      "trainer_backend_state: 'rng_state' must be a uint8 tensor of shape [5056], got "
      "Float [5056]");
  ckpt::StateDict missing = good;
  missing.erase("batches_completed");
  BOOST_CHECK_EQUAL(error_of([&] { fresh.update_state(missing); }),
                    "trainer_backend_state: 'batches_completed' is missing");
  BOOST_CHECK_EQUAL(fresh.global_step_completed(), 0);
  fresh.update_state({});  // empty: a fresh start
  BOOST_CHECK_EQUAL(fresh.global_step_completed(), 0);

  BOOST_CHECK_EQUAL(error_of([&] {
                      fresh.init({module, {}, {}, 0, 5});
                    }),
                    "SingleProcess::init: invalid batch_size 0: must be >= 1");
}

BOOST_AUTO_TEST_CASE(module_update_state_empty_is_noop_and_mismatch_names_key) {
  auto module = make_module(3);
  const ckpt::StateDict before =
      ckpt::StateDict::from_ivalue(module->get_state().to_ivalue().deepcopy());
  BOOST_CHECK(
      module->get_state().keys() ==
      (std::vector<std::string>{"0.weight", "0.bias", "3.weight", "3.bias", "6.weight", "6.bias"}));
  module->update_state({});
  check_tensors_equal(module->get_state(), before);

  ckpt::StateDict wrong = before;
  wrong.insert_or_assign("3.bias", torch::zeros({5}));
  const std::string message = error_of([&] { module->update_state(wrong); });
  BOOST_CHECK_MESSAGE(contains(message, "3.bias: checkpoint shape [5] vs module shape [64]"),
                      message);
  check_tensors_equal(module->get_state(), before);
}

BOOST_AUTO_TEST_CASE(load_digits_reads_the_data_and_names_bad_files) {
  BOOST_CHECK_EQUAL(digits().images.size(0), 1797);
  BOOST_CHECK_EQUAL(digits().images.size(1), 64);
  BOOST_CHECK_EQUAL(digits().labels.max().item<int64_t>(), 9);
  BOOST_CHECK_LE(digits().images.max().item<float>(), 1.0f);
  const DigitsSplit split = split_digits(1797, 0);
  BOOST_CHECK_EQUAL(split.val_indices.size(0), 359);
  BOOST_CHECK_EQUAL(split.train_indices.size(0), 1438);
  // Python: torch.randperm(1797, generator=torch.Generator().manual_seed(0))[:3]
  BOOST_CHECK_EQUAL(split.val_indices[0].item<int64_t>(), 362);
  BOOST_CHECK_EQUAL(split.val_indices[1].item<int64_t>(), 1568);
  BOOST_CHECK_EQUAL(split.val_indices[2].item<int64_t>(), 1440);

  TempDir dir;
  const auto bad = dir / "bad.csv";
  std::string line;
  for (int i = 0; i < 64; ++i) line += "1,";
  sample_trainer::test::write_text(bad, line + "3\n" + line + "11\n");
  BOOST_CHECK_EQUAL(error_of([&] { load_digits(bad); }),
                    "malformed data file " + bad.string() + " line 2: label 11 is not in 0..9");
  const std::string missing = error_of([&] { load_digits(dir / "none.csv.gz"); });
  BOOST_CHECK_MESSAGE(contains(missing, "cannot open data file " + (dir / "none.csv.gz").string()),
                      missing);
}

BOOST_AUTO_TEST_CASE(option_binders_keep_a_programs_presets) {
  namespace po = boost::program_options;
  TrainerArguments args;
  args.epochs = 9;
  args.lr = 0.01;
  args.checkpointer_args.save_dir = "/runs/preset";
  args.checkpointer_args.keep_last_n = 2;
  DistArguments dist;
  dist.timeout = 42;
  dist.master_addr = "10.0.0.1";
  auto parse = [&](std::vector<const char*> argv) {
    po::options_description desc;
    desc.add(trainer_options(args))
        .add(ckpt::default_checkpointer_options(args.checkpointer_args))
        .add(dist_options(dist));
    argv.insert(argv.begin(), "sample_trainer");
    po::variables_map vm;
    po::store(po::parse_command_line(static_cast<int>(argv.size()), argv.data(), desc), vm);
    po::notify(vm);
    std::ostringstream help;
    help << desc;
    return help.str();
  };
  const std::string help = parse({});
  BOOST_TEST(args.epochs == 9);
  BOOST_TEST(args.lr == 0.01);
  BOOST_TEST(args.checkpointer_args.save_dir == "/runs/preset");
  BOOST_TEST(args.checkpointer_args.keep_last_n == 2);
  BOOST_TEST(dist.timeout == 42);
  BOOST_TEST(dist.master_addr.value() == "10.0.0.1");
  BOOST_TEST(!dist.rank.has_value());
  for (const char* shown : {"--trainer.epochs arg (=9)", "--trainer.lr arg (=0.01)",
                            "--chkp.save_dir arg (=/runs/preset)", "--dist.timeout arg (=42)",
                            "--dist.master_addr arg (=10.0.0.1)"}) {
    BOOST_CHECK_MESSAGE(help.find(shown) != std::string::npos,
                        "help lacks '" << shown << "':\n" << help);
  }
  parse({"--trainer.epochs", "4", "--chkp.keep_last_n", "5", "--dist.timeout", "7"});
  BOOST_TEST(args.epochs == 4);
  BOOST_TEST(args.checkpointer_args.keep_last_n == 5);
  BOOST_TEST(dist.timeout == 7);
  BOOST_TEST(args.lr == 0.01);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(sample_trainer_lifecycle)

BOOST_AUTO_TEST_CASE(custom_checkpointer_is_called_as_specified) {
  auto checkpointer = std::make_shared<MemoryCheckpointer>();
  auto first = make_module(1);
  {
    Trainer trainer(std::make_shared<SingleProcess>(), first, quick_args(3), checkpointer);
    BOOST_CHECK(checkpointer->calls == std::vector<std::string>{"load()"});
    const TrainResult result = trainer.train();
    BOOST_CHECK_EQUAL(result.epochs.size(), 3u);
    BOOST_CHECK_EQUAL(result.last_epoch, 2);
    BOOST_CHECK(!result.model_path);  // this checkpointer writes no files
  }
  BOOST_CHECK(
      (checkpointer->calls == std::vector<std::string>{"load()", "save(0)", "save(1)", "save(2)",
                                                       "save(2, force)", "save_model(2)"}));
  // The states handed to the checkpointer share memory with the model; the double copied them.
  BOOST_CHECK(checkpointer->model.at("0.weight").toTensor().data_ptr() !=
              first->get_state().at("0.weight").toTensor().data_ptr());

  // The checkpoint's layout.
  const ckpt::Checkpoint saved = checkpointer->latest;
  BOOST_CHECK((saved.trainer_state.keys() ==
               std::vector<std::string>{"last_epoch", "optimizers", "schedulers"}));
  BOOST_CHECK_EQUAL(saved.trainer_state.at("last_epoch").toInt(), 2);
  BOOST_REQUIRE_EQUAL(saved.trainer_state.at("optimizers").toListRef().size(), 1u);
  BOOST_REQUIRE_EQUAL(saved.trainer_state.at("schedulers").toListRef().size(), 1u);
  const auto optimizer =
      ckpt::StateDict::from_ivalue(saved.trainer_state.at("optimizers").toListRef()[0]);
  BOOST_CHECK((optimizer.keys() == std::vector<std::string>{"state", "param_groups"}));
  const auto scheduler =
      ckpt::StateDict::from_ivalue(saved.trainer_state.at("schedulers").toListRef()[0]);
  BOOST_CHECK_EQUAL(scheduler.at("last_epoch").toInt(), 3 * 23);  // 23 batches of 64 per epoch
  BOOST_CHECK_EQUAL(saved.trainer_backend_state.at("global_step_completed").toInt(), 3 * 23);
  check_tensors_equal(checkpointer->model, saved.module_interface_state);
  check_tensors_equal(first->get_state(), saved.module_interface_state);

  // A second run resumes from load(): the weights come from the checkpoint, one epoch is left.
  checkpointer->calls.clear();
  auto module = make_module(99);
  Trainer resumed(std::make_shared<SingleProcess>(), module, quick_args(4), checkpointer);
  check_tensors_equal(module->get_state(), saved.module_interface_state);
  BOOST_CHECK_EQUAL(resumed.last_epoch(), 2);
  const TrainResult result = resumed.train();
  BOOST_CHECK_EQUAL(result.epochs.size(), 1u);
  BOOST_CHECK((checkpointer->calls ==
               std::vector<std::string>{"load()", "save(3)", "save(3, force)", "save_model(3)"}));
  BOOST_CHECK_EQUAL(checkpointer->latest.trainer_backend_state.at("global_step_completed").toInt(),
                    4 * 23);

  // Nothing left to train: no epoch runs and the resumed step is saved already, so there is no
  // forced save (it would be a duplicate); the weights are still exported.
  checkpointer->calls.clear();
  auto done_module = make_module(5);
  const TrainResult done =
      Trainer(std::make_shared<SingleProcess>(), done_module, quick_args(3), checkpointer).train();
  BOOST_CHECK(done.epochs.empty());
  BOOST_CHECK_EQUAL(done.last_epoch, 3);
  BOOST_CHECK_EQUAL(done.final_val.correct, result.epochs.back().val.correct);
  BOOST_CHECK((checkpointer->calls == std::vector<std::string>{"load()", "save_model(3)"}));
}

BOOST_AUTO_TEST_CASE(the_trainer_calls_wait_staged_before_every_optimizer_step) {
  auto checkpointer = std::make_shared<DeferredCopyCheckpointer>();
  Trainer trainer(std::make_shared<SingleProcess>(), make_module(1), quick_args(3), checkpointer);
  const TrainResult result = trainer.train();
  // Once per step (3 epochs of 23), and once more by each of the two final wait()s.
  BOOST_CHECK_EQUAL(checkpointer->wait_staged_calls, 3 * 23 + 2);
  BOOST_CHECK_EQUAL(checkpointer->staged, 3);  // each epoch's save, copied at the next step
  BOOST_CHECK_EQUAL(checkpointer->torn, 0);    // nothing saved had changed before the copy
  BOOST_CHECK_GE(result.checkpoint_blocked_seconds, 0.0);
  BOOST_CHECK_LE(result.checkpoint_blocked_seconds, result.seconds);
  BOOST_CHECK_GT(result.seconds, 0.0);
}

BOOST_AUTO_TEST_CASE(resume_is_exact_in_process) {
  // LibTorch's SerializeTest.Optim, for the whole trainer: 4 epochs straight vs 2, then fresh
  // objects resumed from the checkpoint for the other 2.
  auto straight = std::make_shared<MemoryCheckpointer>();
  Trainer(std::make_shared<SingleProcess>(), make_module(1), quick_args(4), straight).train();

  auto split = std::make_shared<MemoryCheckpointer>();
  Trainer(std::make_shared<SingleProcess>(), make_module(1), quick_args(2), split).train();
  torch::rand({1000});  // disturb the global generator: the checkpoint must restore it
  Trainer(std::make_shared<SingleProcess>(), make_module(12345), quick_args(4), split).train();

  check_tensors_equal(straight->model, split->model);
  BOOST_CHECK(straight->latest == split->latest);  // optimizer, scheduler, counters, generator
}

BOOST_AUTO_TEST_CASE(reset_optimizers_schedulers_starts_them_afresh) {
  auto checkpointer = std::make_shared<MemoryCheckpointer>();
  Trainer(std::make_shared<SingleProcess>(), make_module(1), quick_args(2), checkpointer).train();

  TrainerArguments args = quick_args(4);
  args.reset_optimizers_schedulers = true;
  Trainer trainer(std::make_shared<SingleProcess>(), make_module(1), args, checkpointer);
  BOOST_CHECK_EQUAL(trainer.last_epoch(), 1);
  const auto& opt = trainer.optimizers_schedulers();
  BOOST_CHECK_EQUAL(opt.schedulers.at(0)->get_state().at("last_epoch").toInt(), 0);
  BOOST_CHECK_EQUAL(ckpt::optimizer_state(*opt.optimizers.at(0)).at("state").toGenericDict().size(),
                    0u);
  trainer.train();
  const ckpt::StateDict& state = checkpointer->latest.trainer_state;
  BOOST_CHECK_EQUAL(state.at("last_epoch").toInt(), 3);
  const auto scheduler = ckpt::StateDict::from_ivalue(state.at("schedulers").toListRef()[0]);
  BOOST_CHECK_EQUAL(scheduler.at("last_epoch").toInt(), 2 * 23);  // only the 2 epochs after reset
  BOOST_CHECK_EQUAL(checkpointer->latest.trainer_backend_state.at("global_step_completed").toInt(),
                    4 * 23);
}

BOOST_AUTO_TEST_CASE(trainer_rejects_bad_arguments_and_mismatched_state) {
  auto checkpointer = std::make_shared<MemoryCheckpointer>();
  TrainerArguments args = quick_args(0);
  BOOST_CHECK_EQUAL(
      error_of(
          [&] { Trainer(std::make_shared<SingleProcess>(), make_module(1), args, checkpointer); }),
      "invalid epochs 0: must be >= 1");
  BOOST_CHECK(checkpointer->calls.empty());  // validated before the checkpointer is used

  Trainer(std::make_shared<SingleProcess>(), make_module(1), quick_args(1), checkpointer).train();
  c10::impl::GenericList two(c10::AnyType::get());
  two.push_back(checkpointer->latest.trainer_state.at("optimizers").toListRef()[0]);
  two.push_back(checkpointer->latest.trainer_state.at("optimizers").toListRef()[0]);
  checkpointer->latest.trainer_state.insert_or_assign("optimizers", two);
  BOOST_CHECK_EQUAL(error_of([&] {
                      Trainer(std::make_shared<SingleProcess>(), make_module(1), quick_args(2),
                              checkpointer);
                    }),
                    "trainer_state: 'optimizers' has 2 entries but the module built 1 (use "
                    "--trainer.reset_optimizers_schedulers true to start them afresh)");
}

BOOST_AUTO_TEST_CASE(default_checkpointer_when_none_is_given) {
  TempDir dir;
  TrainerArguments args = quick_args(2);
  args.checkpointer_args.save_dir = dir / "save";
  args.checkpointer_args.model_state_save_dir = dir / "models";
  const TrainResult result =
      Trainer(std::make_shared<SingleProcess>(), make_module(1), args).train();
  BOOST_CHECK((sample_trainer::test::files_in(dir / "save") ==
               std::vector<std::string>{"model_0.pt", "model_1.pt", "model_latest"}));
  BOOST_REQUIRE(result.model_path);
  BOOST_CHECK_EQUAL(result.model_path->string(), (dir / "models" / "model_model_1.pt").string());
  BOOST_CHECK_EQUAL(result.checkpoint_path->string(), (dir / "save" / "model_1.pt").string());
}

BOOST_AUTO_TEST_SUITE_END()

#endif  // CKPT_SAMPLE_TRAINER
