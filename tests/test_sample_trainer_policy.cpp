// Issue 5 through the sample trainer: mid-epoch checkpoints and exact resume, the final save that
// is never a duplicate, registered state, hyperparameter drift, and the executable's signal path,
// retention under SIGKILL and its option checks.
#ifdef CKPT_SAMPLE_TRAINER

#include "test_sample_trainer_helpers.h"

#include <sample_trainer/digits_module.h>
#include <sample_trainer/single_process.h>
#include <sample_trainer/trainer.h>

#include <ckpt/checkpoint_error.h>
#include <ckpt/default_checkpointer.h>
#include <ckpt/serialization.h>

#include "failing_storage.h"

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <boost/test/unit_test.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace sample_trainer;
using namespace sample_trainer::test;
namespace fs = std::filesystem;

namespace {

const DigitsData& digits() {
  static const DigitsData data = load_digits(CKPT_SOURCE_DIR "/data/digits.csv.gz");
  return data;
}

// 23 batches of 64 per epoch.
TrainerArguments args_in(const fs::path& dir, int64_t epochs) {
  TrainerArguments args;
  args.epochs = epochs;
  args.batch_size = 64;
  args.seed = 7;
  args.checkpointer_args.save_dir = dir;
  args.checkpointer_args.model_state_save_dir = dir;
  args.checkpointer_args.load_dir = dir;
  return args;
}

std::shared_ptr<DigitsModule> make_module(uint64_t init_seed) {
  at::set_num_threads(1);
  at::manual_seed(init_seed);
  return std::make_shared<DigitsModule>(digits());
}

void check_states_equal(const ckpt::StateDict& a, const ckpt::StateDict& b) {
  BOOST_REQUIRE(a.keys() == b.keys());
  for (const auto& [key, value] : a) {
    BOOST_TEST_CONTEXT("key " << key) {
      if (value.isTensor()) {
        BOOST_CHECK(torch::equal(value.toTensor(), b.at(key).toTensor()));
      } else {
        BOOST_CHECK(ckpt::deep_equal(value, b.at(key)));
      }
    }
  }
}

std::vector<std::string> matching(const fs::path& dir, const std::string& pattern) {
  std::vector<std::string> result;
  const std::regex re(pattern);
  for (const auto& name : files_in(dir)) {
    if (std::regex_match(name, re)) result.push_back(name);
  }
  return result;
}

// Captures what the trainer logs through spdlog's default logger while alive.
class TrainerLog {
 public:
  TrainerLog() : sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(stream_)) {
    spdlog::default_logger()->sinks().push_back(sink_);
  }
  ~TrainerLog() {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  bool contains(const std::string& part) const {
    spdlog::default_logger()->flush();
    return stream_.str().find(part) != std::string::npos;
  }
  std::string text() const { return stream_.str(); }

 private:
  std::ostringstream stream_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
};

// Stops training once `step` optimizer steps have run.
struct StopAt {
  explicit StopAt(int64_t step) : step(step) {}
  ProgressCallback progress() {
    return [this](int64_t, int64_t, double) { ++done; };
  }
  std::function<bool()> stop() {
    return [this] { return done >= step; };
  }
  int64_t step;
  int64_t done = 0;
};

}  // namespace

BOOST_AUTO_TEST_SUITE(mid_epoch_resume)

BOOST_AUTO_TEST_CASE(stopped_mid_epoch_then_resumed_equals_an_uninterrupted_run_bitwise) {
  TempDir straight_dir, split_dir;
  const TrainResult straight =
      Trainer(std::make_shared<SingleProcess>(), make_module(1), args_in(straight_dir.path(), 3))
          .train();

  // Stop after step 30: batch 7 of 23 in epoch 1.
  StopAt stop(30);
  const TrainResult first =
      Trainer(std::make_shared<SingleProcess>(), make_module(1), args_in(split_dir.path(), 3))
          .train(stop.progress(), stop.stop());
  BOOST_REQUIRE(first.stopped);
  BOOST_CHECK_EQUAL(first.global_step, 30);
  BOOST_CHECK_EQUAL(first.last_epoch, 0);
  BOOST_REQUIRE(first.checkpoint_path);
  BOOST_CHECK_EQUAL(first.checkpoint_path->filename().string(), "model_1_step_30.pt");
  BOOST_CHECK(!first.model_path);  // no final weights for a stopped run
  const ckpt::Checkpoint position = ckpt::load_checkpoint_file(*first.checkpoint_path);
  BOOST_CHECK_EQUAL(position.trainer_backend_state.at("epoch_in_progress").toInt(), 1);
  BOOST_CHECK_EQUAL(position.trainer_backend_state.at("batch_in_epoch").toInt(), 7);

  torch::rand({1000});  // disturb the global generator: the checkpoint must restore it
  TrainerLog log;
  Trainer resumed(std::make_shared<SingleProcess>(), make_module(12345),
                  args_in(split_dir.path(), 3));
  const TrainResult second = resumed.train();
  BOOST_CHECK(log.contains("continuing epoch 1 at batch 8 of 23"));
  BOOST_CHECK_EQUAL(second.global_step, straight.global_step);
  // Same data, same randomness: the same weights, optimizer state and logged metrics.
  BOOST_REQUIRE_EQUAL(second.epochs.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    BOOST_CHECK_EQUAL(second.epochs[i].train_loss, straight.epochs[i + 1].train_loss);
    BOOST_CHECK_EQUAL(second.epochs[i].val.loss, straight.epochs[i + 1].val.loss);
  }
  const auto a = ckpt::load_checkpoint_file(straight_dir / "model_2.pt");
  const auto b = ckpt::load_checkpoint_file(split_dir / "model_2.pt");
  check_states_equal(a.module_interface_state, b.module_interface_state);
  BOOST_CHECK(ckpt::deep_equal(a.trainer_state.to_ivalue(), b.trainer_state.to_ivalue()));
  BOOST_CHECK(
      ckpt::deep_equal(a.trainer_backend_state.to_ivalue(), b.trainer_backend_state.to_ivalue()));
}

BOOST_AUTO_TEST_CASE(with_async_saves_and_a_step_trigger_the_resume_is_still_bitwise) {
  TempDir straight_dir, split_dir;
  Trainer(std::make_shared<SingleProcess>(), make_module(1), args_in(straight_dir.path(), 3))
      .train();
  auto args = args_in(split_dir.path(), 3);
  args.checkpointer_args.async = true;
  args.checkpointer_args.every_n_train_steps = 5;
  args.checkpointer_args.keep_last_n = 2;
  StopAt stop(33);  // batch 10 of epoch 1: a forced step save, in the background
  const TrainResult first = Trainer(std::make_shared<SingleProcess>(), make_module(1), args)
                                .train(stop.progress(), stop.stop());
  BOOST_REQUIRE(first.stopped);
  BOOST_CHECK((matching(split_dir.path(), "model_[0-9]+(_step_[0-9]+)?\\.pt") ==
               std::vector<std::string>{"model_1_step_30.pt", "model_1_step_33.pt"}));
  BOOST_CHECK_EQUAL(read_text(split_dir / "model_latest"), "model_1_step_33.pt\n");
  Trainer(std::make_shared<SingleProcess>(), make_module(12345), args).train();
  const auto a = ckpt::load_checkpoint_file(straight_dir / "model_2.pt");
  const auto b = ckpt::load_checkpoint_file(split_dir / "model_2.pt");
  check_states_equal(a.module_interface_state, b.module_interface_state);
  BOOST_CHECK(ckpt::deep_equal(a.trainer_state.to_ivalue(), b.trainer_state.to_ivalue()));
}

BOOST_AUTO_TEST_CASE(step_trigger_writes_mid_epoch_checkpoints_and_none_at_an_epoch_end) {
  TempDir dir;
  auto args = args_in(dir.path(), 2);  // 46 steps; epochs end at 23 and 46
  args.checkpointer_args.every_n_train_steps = 10;
  Trainer(std::make_shared<SingleProcess>(), make_module(1), args).train();
  BOOST_CHECK((matching(dir.path(), "model_.*_step_.*") ==
               std::vector<std::string>{"model_0_step_10.pt", "model_0_step_20.pt",
                                        "model_1_step_30.pt", "model_1_step_40.pt"}));
  // A due step that ends an epoch is that epoch's checkpoint, not a second file.
  TempDir aligned;
  auto every_epoch = args_in(aligned.path(), 2);
  every_epoch.checkpointer_args.every_n_train_steps = 23;
  every_epoch.checkpointer_args.period = 5;  // only the step trigger saves epoch 1
  Trainer(std::make_shared<SingleProcess>(), make_module(1), every_epoch).train();
  BOOST_CHECK(matching(aligned.path(), "model_.*_step_.*").empty());
  BOOST_CHECK((matching(aligned.path(), "model_[0-9]+\\.pt") ==
               std::vector<std::string>{"model_0.pt", "model_1.pt"}));
}

BOOST_AUTO_TEST_CASE(time_trigger_saves_after_each_interval_of_training) {
  TempDir dir;
  auto args = args_in(dir.path(), 1);
  args.checkpointer_args.train_time_interval = 1e-9;  // every step is past the interval
  Trainer(std::make_shared<SingleProcess>(), make_module(1), args).train();
  // Every mid-epoch step (1..22), then the epoch's own checkpoint.
  BOOST_CHECK_EQUAL(matching(dir.path(), "model_0_step_[0-9]+\\.pt").size(), 22u);
  BOOST_CHECK(fs::exists(dir / "model_0.pt"));
}

BOOST_AUTO_TEST_CASE(the_final_forced_save_never_duplicates_a_saved_step) {
  const auto renames_of = [](ckpt::test::FailingStorage& storage, const fs::path& path) {
    const auto journal = storage.journal();
    return std::count(journal.begin(), journal.end(), "rename:" + path.string());
  };
  // period 1: the last epoch is saved already; the final save writes nothing more.
  TempDir dir;
  auto storage = std::make_shared<ckpt::test::FailingStorage>();
  auto args = args_in(dir.path(), 3);
  auto checkpointer = std::make_shared<ckpt::DefaultCheckpointer>(args.checkpointer_args, storage);
  TrainerLog log;
  const TrainResult result =
      Trainer(std::make_shared<SingleProcess>(), make_module(1), args, checkpointer).train();
  BOOST_CHECK_EQUAL(renames_of(*storage, dir / "model_2.pt"), 1);
  BOOST_CHECK(result.checkpoint_path == dir / "model_2.pt");
  BOOST_CHECK(log.contains("final checkpoint: step 69 is already saved"));
  // A resumed run with nothing left to train writes no checkpoint at all.
  auto resumed_storage = std::make_shared<ckpt::test::FailingStorage>();
  auto again = std::make_shared<ckpt::DefaultCheckpointer>(args.checkpointer_args, resumed_storage);
  Trainer(std::make_shared<SingleProcess>(), make_module(1), args, again).train();
  BOOST_CHECK_EQUAL(renames_of(*resumed_storage, dir / "model_2.pt"), 0);
  // period 2 with 2 epochs: epoch 1 is not due, so the final forced save writes it, once.
  TempDir odd;
  auto odd_storage = std::make_shared<ckpt::test::FailingStorage>();
  auto odd_args = args_in(odd.path(), 2);
  odd_args.checkpointer_args.period = 2;
  auto odd_checkpointer =
      std::make_shared<ckpt::DefaultCheckpointer>(odd_args.checkpointer_args, odd_storage);
  Trainer(std::make_shared<SingleProcess>(), make_module(1), odd_args, odd_checkpointer).train();
  BOOST_CHECK_EQUAL(renames_of(*odd_storage, odd / "model_0.pt"), 1);
  BOOST_CHECK_EQUAL(renames_of(*odd_storage, odd / "model_1.pt"), 1);
}

BOOST_AUTO_TEST_SUITE_END()

namespace {

// Something a user wants checkpointed that is neither module, trainer nor backend.
struct Counter {
  int64_t count = 0;
  std::string label = "none";
  ckpt::StateDict get_state() const {
    ckpt::StateDict state;
    state.insert_or_assign("count", count);
    state.insert_or_assign("label", label);
    return state;
  }
  void update_state(const ckpt::StateDict& state) {
    count = state.at("count").toInt();
    label = state.at("label").toStringRef();
  }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(registered_state)

BOOST_AUTO_TEST_CASE(round_trip_and_mismatches) {
  TempDir dir;
  {
    Trainer trainer(std::make_shared<SingleProcess>(), make_module(1), args_in(dir.path(), 1));
    auto counter = std::make_shared<Counter>();
    counter->label = "batches";
    trainer.register_for_checkpointing("counter", counter);
    BOOST_CHECK_THROW(trainer.register_for_checkpointing("counter", counter),
                      std::invalid_argument);
    BOOST_CHECK_THROW(trainer.register_for_checkpointing("", counter), std::invalid_argument);
    trainer.train([&](int64_t, int64_t, double) { ++counter->count; });
    BOOST_CHECK_EQUAL(counter->count, 23);
  }
  const auto saved = ckpt::load_checkpoint_file(dir / "model_0.pt");
  BOOST_CHECK((saved.registered_state.keys() == std::vector<std::string>{"counter"}));

  // Restored at registration.
  {
    Trainer trainer(std::make_shared<SingleProcess>(), make_module(1), args_in(dir.path(), 2));
    auto counter = std::make_shared<Counter>();
    trainer.register_for_checkpointing("counter", counter);
    BOOST_CHECK_EQUAL(counter->count, 23);
    BOOST_CHECK_EQUAL(counter->label, "batches");
  }
  // Strict (the default): a name the checkpoint lacks, and a name in it nobody registered.
  {
    Trainer trainer(std::make_shared<SingleProcess>(), make_module(1), args_in(dir.path(), 2));
    BOOST_CHECK_EXCEPTION(
        trainer.register_for_checkpointing("sampler", std::make_shared<Counter>()),
        ckpt::CheckpointError, [](const ckpt::CheckpointError& e) {
          const std::string m = e.what();
          return m.find("no registered state 'sampler'") != std::string::npos &&
                 m.find("it has: counter") != std::string::npos;
        });
  }
  {
    Trainer trainer(std::make_shared<SingleProcess>(), make_module(1), args_in(dir.path(), 2));
    BOOST_CHECK_EXCEPTION(trainer.train(), ckpt::CheckpointError,
                          [](const ckpt::CheckpointError& e) {
                            return std::string(e.what()).find("registered state 'counter'") !=
                                   std::string::npos;
                          });
  }
  // Not strict: warnings, and training goes on.
  auto lenient = args_in(dir.path(), 2);
  lenient.checkpointer_args.strict_registered_state = false;
  TrainerLog log;
  Trainer trainer(std::make_shared<SingleProcess>(), make_module(1), lenient);
  auto sampler = std::make_shared<Counter>();
  sampler->count = 5;
  trainer.register_for_checkpointing("sampler", sampler);
  BOOST_CHECK_EQUAL(sampler->count, 5);  // kept its own state
  BOOST_CHECK_EQUAL(trainer.train().epochs.size(), 1u);
  BOOST_CHECK(log.contains("no registered state 'sampler'"));
  BOOST_CHECK(log.contains("registered state 'counter', but nothing is registered"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(hyperparameters)

BOOST_AUTO_TEST_CASE(stored_in_every_checkpoint_and_drift_is_warned) {
  TempDir dir;
  Trainer(std::make_shared<SingleProcess>(), make_module(1), args_in(dir.path(), 1)).train();
  const auto saved = ckpt::load_checkpoint_file(dir / "model_0.pt");
  BOOST_CHECK_EQUAL(saved.hyperparameters.at("trainer.epochs").toInt(), 1);
  BOOST_CHECK_EQUAL(saved.hyperparameters.at("trainer.lr").toDouble(), 0.003);
  BOOST_CHECK_EQUAL(saved.hyperparameters.at("chkp.period").toInt(), 1);
  BOOST_CHECK_EQUAL(saved.hyperparameters.at("chkp.save_dir").toStringRef(), dir.path().string());

  auto changed = args_in(dir.path(), 2);
  changed.lr = 0.004;
  changed.checkpointer_args.keep_last_n = 3;
  TrainerLog log;
  Trainer(std::make_shared<SingleProcess>(), make_module(1), changed);
  BOOST_CHECK(log.contains("option trainer.lr differs from the checkpoint: 0.003 there, 0.004 now"));
  BOOST_CHECK(log.contains("option trainer.epochs differs from the checkpoint: 1 there, 2 now"));
  BOOST_CHECK(log.contains("option chkp.keep_last_n differs from the checkpoint: 0 there, 3 now"));
  BOOST_CHECK(!log.contains("option trainer.batch_size"));  // unchanged: no warning
}

BOOST_AUTO_TEST_SUITE_END()

namespace {

const std::string kTrainer = CKPT_SAMPLE_TRAINER;

std::string command_line(const std::vector<std::string>& args) {
  std::string command = quote(kTrainer);
  for (const auto& arg : args) command += " " + quote(arg);
  return command;
}

// Starts the trainer in `cwd` in the background; stdout and stderr go to files in `cwd`.
pid_t start(const fs::path& cwd, const std::vector<std::string>& args) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const std::string command = "cd " + quote(cwd.string()) + " && exec " + command_line(args) +
                                " > out.txt 2> err.txt < /dev/null";
    ::execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

void wait_for(const fs::path& path) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  while (!fs::exists(path)) {
    BOOST_REQUIRE_MESSAGE(std::chrono::steady_clock::now() < deadline, "no " << path);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

int exit_code_of(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

constexpr int kEpochs = 40;

// The final weights of an uninterrupted run, computed once.
const fs::path& uninterrupted_weights() {
  static TempDir dir;
  static const fs::path weights = [] {
    const RunResult r = run_in(dir.path(), dir / "logs",
                               command_line({"--trainer.epochs", std::to_string(kEpochs)}));
    BOOST_REQUIRE_MESSAGE(r.exit_code == 0, r.err);
    return dir / "checkpoints" / ("model_model_" + std::to_string(kEpochs - 1) + ".pt");
  }();
  return weights;
}

void check_weights_equal(const fs::path& a, const fs::path& b) {
  check_states_equal(ckpt::load_state_file(a), ckpt::load_state_file(b));
}

}  // namespace

BOOST_AUTO_TEST_SUITE(trainer_policy_cli)

BOOST_AUTO_TEST_CASE(sigterm_and_sigint_save_the_position_and_exit_3) {
  for (int signal : {SIGTERM, SIGINT}) {
    BOOST_TEST_CONTEXT(strsignal(signal)) {
      TempDir dir;
      const pid_t pid = start(dir.path(), {"--trainer.epochs", std::to_string(kEpochs)});
      wait_for(dir / "checkpoints" / "model_0.pt");
      ::kill(pid, signal);
      BOOST_REQUIRE_EQUAL(exit_code_of(pid), 3);
      const std::string err = read_text(dir / "err.txt");
      BOOST_CHECK(err.find(std::string("stopped by ") + strsignal(signal)) != std::string::npos);
      BOOST_CHECK_EQUAL(lines_of(err).size(), 1u);
      BOOST_CHECK(!fs::exists(dir / "checkpoints" /
                              ("model_model_" + std::to_string(kEpochs - 1) + ".pt")));
      // Resumed, it ends where an uninterrupted run ends, bit for bit.
      const RunResult resumed =
          run_in(dir.path(), dir / "logs",
                 command_line({"--trainer.epochs", std::to_string(kEpochs), "--chkp.load_dir",
                               "checkpoints"}));
      BOOST_REQUIRE_MESSAGE(resumed.exit_code == 0, resumed.err);
      check_weights_equal(
          dir / "checkpoints" / ("model_model_" + std::to_string(kEpochs - 1) + ".pt"),
          uninterrupted_weights());
    }
  }
  // With --chkp.save_on_signal false the signal keeps its default action.
  TempDir dir;
  const pid_t pid = start(dir.path(), {"--trainer.epochs", std::to_string(kEpochs),
                                       "--chkp.save_on_signal", "false"});
  wait_for(dir / "checkpoints" / "model_0.pt");
  ::kill(pid, SIGTERM);
  BOOST_CHECK_EQUAL(exit_code_of(pid), 128 + SIGTERM);
}

BOOST_AUTO_TEST_CASE(retention_under_sigkill_keeps_the_newest_and_only_deletes_its_own) {
  TempDir dir;
  const auto checkpoints = dir / "checkpoints";
  fs::create_directories(checkpoints);
  write_text(checkpoints / "notes.txt", "mine");
  write_text(checkpoints / "model_x.pt", "mine too");
  const std::vector<std::string> args{"--trainer.epochs",         std::to_string(kEpochs),
                                      "--chkp.load_dir",          "checkpoints",
                                      "--chkp.every_n_train_steps", "4",
                                      "--chkp.keep_last_n",       "2"};
  std::mt19937 random(1234);
  for (int kill = 0; kill < 6; ++kill) {
    const pid_t pid = start(dir.path(), args);
    // Once a checkpoint exists, let the run go on for a random while, then kill it.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
    while (matching(checkpoints, "model_[0-9]+(_step_[0-9]+)?\\.pt").empty()) {
      BOOST_REQUIRE(std::chrono::steady_clock::now() < deadline);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::uniform_int_distribution<int>(20, 400)(random)));
    ::kill(pid, SIGKILL);
    exit_code_of(pid);
    BOOST_TEST_CONTEXT("after kill " << kill) {
      const auto resumable = matching(checkpoints, "model_[0-9]+(_step_[0-9]+)?\\.pt");
      // Between a save and its prune there may be one more than the limit, never fewer than one
      // that verifies.
      BOOST_CHECK(resumable.size() <= 3u);
      int verifying = 0;
      for (const auto& name : resumable) {
        try {
          ckpt::verify_file(checkpoints / name);
          ++verifying;
        } catch (const ckpt::CheckpointError&) {
        }
      }
      BOOST_CHECK(verifying >= 1);
      BOOST_CHECK_EQUAL(read_text(checkpoints / "notes.txt"), "mine");
      BOOST_CHECK_EQUAL(read_text(checkpoints / "model_x.pt"), "mine too");
    }
  }
  const RunResult finished = run_in(dir.path(), dir / "logs", command_line(args));
  BOOST_REQUIRE_MESSAGE(finished.exit_code == 0, finished.err);
  BOOST_CHECK_EQUAL(matching(checkpoints, "model_[0-9]+(_step_[0-9]+)?\\.pt").size(), 2u);
  check_weights_equal(checkpoints / ("model_model_" + std::to_string(kEpochs - 1) + ".pt"),
                      uninterrupted_weights());
}

BOOST_AUTO_TEST_CASE(best_checkpoints_and_option_errors) {
  TempDir dir;
  const RunResult r =
      run_in(dir.path(), dir / "logs",
             command_line({"--trainer.epochs", "4", "--chkp.save_top_k", "2", "--chkp.monitor",
                           "val_acc", "--chkp.mode", "max", "--chkp.keep_last_n", "1"}));
  BOOST_REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  BOOST_CHECK_EQUAL(matching(dir / "checkpoints", "model_best_[0-9]+\\.pt").size(), 2u);
  BOOST_CHECK((matching(dir / "checkpoints", "model_[0-9]+\\.pt") ==
               std::vector<std::string>{"model_3.pt"}));
  BOOST_CHECK(r.out.find("best so far:") != std::string::npos);

  const std::vector<std::pair<std::vector<std::string>, std::string>> bad{
      {{"--chkp.save_top_k", "1", "--chkp.monitor", "val_f1"},
       "invalid monitor 'val_f1': the sample trainer reports train_loss, val_loss, val_acc "
       "(--chkp.monitor)"},
      {{"--chkp.save_top_k", "1"}, "(--chkp.save_top_k)"},
      {{"--chkp.mode", "avg"}, "invalid mode 'avg': must be min or max (--chkp.mode)"},
      {{"--chkp.keep_last_n=-1"}, "(--chkp.keep_last_n)"},
      {{"--chkp.every_n_train_steps=-5"}, "(--chkp.every_n_train_steps)"},
  };
  for (const auto& [args, message] : bad) {
    TempDir empty;
    const RunResult failed = run_in(empty.path(), empty / "logs", command_line(args));
    BOOST_TEST_CONTEXT(message) {
      BOOST_CHECK_EQUAL(failed.exit_code, 2);
      BOOST_CHECK(failed.err.find(message) != std::string::npos);
      BOOST_CHECK(!fs::exists(empty / "checkpoints"));
    }
  }
}

BOOST_AUTO_TEST_SUITE_END()

#endif  // CKPT_SAMPLE_TRAINER
