// Storage outages through the sample trainer (issue 36): a full disk and an S3 gateway that is
// killed, briefly or for longer than the retry budget or for good, around the trainer's saves.
// The in-process cases fill the disk or kill the gateway from the progress callback, at a chosen
// step, so that which saves fail is exact; the executable cases run the trainer as a user does.
#ifdef CKPT_SAMPLE_TRAINER

#include "test_sample_trainer_helpers.h"

#include <sample_trainer/digits_module.h>
#include <sample_trainer/single_process.h>
#include <sample_trainer/trainer.h>

#include <ckpt/checkpoint_error.h>
#include <ckpt/s3_storage.h>
#include <ckpt/serialization.h>

#include "second_gateway.h"
#include "small_disk.h"

#include <torch/torch.h>
#include <boost/test/unit_test.hpp>

#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

using namespace sample_trainer;
using namespace sample_trainer::test;
using ckpt::test::ScopedEnv;
using ckpt::test::run_command;
using ckpt::test::SecondGateway;
using ckpt::test::SmallDisk;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int64_t kStepsPerEpoch = 23;  // 1797 digits, 80% for training, batches of 64

const DigitsData& digits() {
  static const DigitsData data = load_digits(CKPT_SOURCE_DIR "/data/digits.csv.gz");
  return data;
}

std::shared_ptr<DigitsModule> make_module() {
  at::set_num_threads(1);
  at::manual_seed(1);
  return std::make_shared<DigitsModule>(digits());
}

TrainerArguments args_in(const std::string& dir, int64_t epochs) {
  TrainerArguments args;
  args.epochs = epochs;
  args.batch_size = 64;
  args.seed = 7;
  args.checkpointer_args.save_dir = dir;
  args.checkpointer_args.model_state_save_dir = dir;
  args.checkpointer_args.load_dir = dir;
  return args;
}

TrainResult train(const TrainerArguments& args, const ProgressCallback& progress = {}) {
  return Trainer(std::make_shared<SingleProcess>(), make_module(), args).train(progress);
}

// Calls `at_step[n]` after optimizer step n (1-based, counted over the whole run).
ProgressCallback at_steps(std::map<int64_t, std::function<void()>> at_step) {
  auto steps = std::make_shared<int64_t>(0);
  return [steps, at_step = std::move(at_step)](int64_t, int64_t, double) {
    const auto it = at_step.find(++*steps);
    if (it != at_step.end()) it->second();
  };
}

void check_bitwise_equal(const ckpt::StateDict& a, const ckpt::StateDict& b) {
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

std::vector<std::string> checkpoints_in(const std::vector<std::string>& names) {
  std::vector<std::string> result;
  for (const auto& name : names) {
    if (name.rfind("model_", 0) == 0) result.push_back(name);
  }
  return result;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(trainer_save_failures)

// The disk fills up at the end of epoch 1 and is freed during epoch 3: the saves of epochs 1 and 2
// fail, training goes on, the next ones land, and the final weights are those of a run that
// never saw the outage.
BOOST_AUTO_TEST_CASE(a_full_disk_for_two_saves_is_ridden_out_with_bitwise_equal_weights) {
  TempDir straight_dir, dir;
  const TrainResult straight = train(args_in(straight_dir.path().string(), 5));
  SmallDisk disk(dir / "disk", "4m");
  auto args = args_in((dir / "disk").string(), 5);
  args.checkpointer_args.disk_margin_mb = 0;
  const TrainResult result = train(args, at_steps({{2 * kStepsPerEpoch, [&] { disk.fill(); }},
                                                   {3 * kStepsPerEpoch + 1, [&] { disk.free(); }}}));
  BOOST_REQUIRE(result.save_health.has_value());
  BOOST_TEST(result.save_health->failed_saves == 2);
  BOOST_TEST(result.save_health->failures_in_a_row == 0);
  BOOST_TEST(result.save_health->last_durable.value_or("") == dir / "disk" / "model_4.pt");
  BOOST_TEST(result.save_health->longest_unsaved_seconds > 0);
  BOOST_TEST(checkpoints_in(files_in(dir / "disk")) ==
                 (std::vector<std::string>{"model_0.pt", "model_3.pt", "model_4.pt",
                                           "model_latest", "model_model_4.pt"}),
             boost::test_tools::per_element());
  BOOST_REQUIRE(result.epochs.size() == straight.epochs.size());
  for (std::size_t i = 0; i < result.epochs.size(); ++i) {
    BOOST_TEST(result.epochs[i].train_loss == straight.epochs[i].train_loss);
  }
  check_bitwise_equal(ckpt::load_state_file(dir / "disk" / "model_model_4.pt"),
                      ckpt::load_state_file(straight_dir / "model_model_4.pt"));
  // The newest durable checkpoint is the uninterrupted run's: a resume from it is exact.
  const auto a = ckpt::load_checkpoint_file(dir / "disk" / "model_4.pt");
  const auto b = ckpt::load_checkpoint_file(straight_dir / "model_4.pt");
  check_bitwise_equal(a.module_interface_state, b.module_interface_state);
  BOOST_CHECK(ckpt::deep_equal(a.trainer_state.to_ivalue(), b.trainer_state.to_ivalue()));
}

// The last epoch's save fails: the trainer saves the final state again, forced, and that save
// must land; it does once the disk is freed, while it is being retried.
BOOST_AUTO_TEST_CASE(a_failed_last_save_is_saved_again_before_the_weights_are_exported) {
  TempDir dir;
  SmallDisk disk(dir / "disk", "4m");
  auto args = args_in((dir / "disk").string(), 2);
  args.checkpointer_args.disk_margin_mb = 0;
  args.checkpointer_args.max_save_failures = 1000;
  std::thread freer;
  const TrainResult result = train(args, at_steps({{2 * kStepsPerEpoch, [&] {
                                                      disk.fill();
                                                      freer = std::thread([&] {
                                                        std::this_thread::sleep_for(
                                                            std::chrono::seconds(3));
                                                        disk.free();
                                                      });
                                                    }}}));
  freer.join();
  BOOST_REQUIRE(result.save_health.has_value());
  BOOST_TEST(result.save_health->failed_saves >= 2);  // epoch 1's, then the forced one's tries
  BOOST_TEST(result.save_health->failures_in_a_row == 0);
  BOOST_TEST(result.checkpoint_path.value_or("") == dir / "disk" / "model_1.pt");
  ckpt::verify_file(dir / "disk" / "model_1.pt");
  ckpt::verify_file(dir / "disk" / "model_model_1.pt");
}

// A disk that stays full: the run stops after max_save_failures, naming the last durable
// checkpoint and saying that no final weights were exported.
BOOST_AUTO_TEST_CASE(a_disk_that_stays_full_stops_the_run_naming_the_last_durable) {
  TempDir dir;
  SmallDisk disk(dir / "disk", "4m");
  auto args = args_in((dir / "disk").string(), 6);
  args.checkpointer_args.disk_margin_mb = 0;
  args.checkpointer_args.max_save_failures = 2;
  try {
    train(args, at_steps({{2 * kStepsPerEpoch, [&] { disk.fill(); }}}));
    BOOST_FAIL("the run did not stop");
  } catch (const ckpt::CheckpointError& e) {
    const std::string what = e.what();
    BOOST_TEST(what.find("stopping training: 2 saves failed in a row (max_save_failures 2)") !=
                   std::string::npos,
               what);
    BOOST_TEST(what.find("the last durable checkpoint is " + (dir / "disk" / "model_0.pt").string()) !=
                   std::string::npos,
               what);
    BOOST_TEST(what.find(std::strerror(ENOSPC)) != std::string::npos, what);
  }
  disk.free();
  BOOST_TEST(checkpoints_in(files_in(dir / "disk")) ==
                 (std::vector<std::string>{"model_0.pt", "model_latest"}),
             boost::test_tools::per_element());
  ckpt::verify_file(dir / "disk" / "model_0.pt");
}

BOOST_AUTO_TEST_SUITE_END()

// ---- S3: the gateway killed around the trainer's saves ----

namespace {

// Every checkpoint and weights file under `prefix` verifies; returns their names.
std::vector<std::string> verified_files_under(const std::string& prefix, ckpt::Storage& storage) {
  std::vector<std::string> names;
  for (const auto& file : storage.list(prefix, /*recursive=*/false)) {
    names.push_back(file.path.filename().string());
    if (file.path.extension() == ".pt") {
      BOOST_CHECK_NO_THROW(ckpt::verify_file(file.path, storage));
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::size_t count_of(const std::string& text, const std::string& part) {
  std::size_t count = 0;
  for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++count;
  return count;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(s3_outages)

// The executable with default options while its gateway is killed for 10 s just as a checkpoint
// is saved: the retries outlast the outage, the run finishes with exit 0, every checkpoint
// verifies, the weights are those of a run without the outage, and no upload is left.
BOOST_AUTO_TEST_CASE(gateway_down_10_s_around_a_save_with_default_options) {
  ckpt::test::s3_fixture();
  TempDir dir;
  const std::string prefix = ckpt::test::unique_s3_prefix("outage");
  const std::string common = quote(CKPT_SAMPLE_TRAINER) + " --trainer.epochs 6";
  const auto straight = run_command("cd " + quote(dir.path().string()) + " && " + common +
                                    " --chkp.save_dir local");
  BOOST_REQUIRE_MESSAGE(straight.exit_code == 0, straight.output);

  SecondGateway gateway;
  ScopedEnv endpoint("AWS_ENDPOINT_URL", gateway.start());  // the trainer's; inherited
  ckpt::S3Storage observer;  // the fixture's own gateway, which stays up
  const std::string command = common + " --chkp.save_dir " + quote(prefix);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const std::string shell = "cd " + quote(dir.path().string()) + " && exec " + command +
                              " > out.txt 2> err.txt < /dev/null";
    ::execl("/bin/sh", "sh", "-c", shell.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // Kill the gateway once the first checkpoint is there: the next save starts within an epoch.
  const auto deadline = Clock::now() + std::chrono::minutes(5);
  bool killed = false;
  while (Clock::now() < deadline) {
    if (!observer.list(prefix, false).empty()) {
      gateway.kill();
      killed = true;
      break;
    }
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const auto down = Clock::now();
  if (killed) {
    std::this_thread::sleep_for(std::chrono::seconds(10));
    gateway.start();
  }
  const double outage = std::chrono::duration<double>(Clock::now() - down).count();
  int status = 0;
  ::waitpid(pid, &status, 0);
  const double total = std::chrono::duration<double>(Clock::now() - down).count();
  const std::string log = read_text(dir / "out.txt") + read_text(dir / "err.txt");
  BOOST_REQUIRE_MESSAGE(killed, "the run finished before its first checkpoint was seen:\n" << log);
  BOOST_TEST(WIFEXITED(status));
  BOOST_TEST(WEXITSTATUS(status) == 0, log);
  const std::size_t retries = count_of(log, "trying again in");
  BOOST_TEST(retries >= 1u, log);  // a save did meet the outage
  BOOST_TEST(log.find("failed (") == std::string::npos, log);  // and no save failed
  BOOST_TEST_MESSAGE("gateway down for " << outage << " s; the run finished " << total
                                         << " s after the kill, with " << retries
                                         << " retried requests");
  BOOST_TEST(verified_files_under(prefix, observer) ==
                 (std::vector<std::string>{"model_0.pt", "model_1.pt", "model_2.pt", "model_3.pt",
                                           "model_4.pt", "model_5.pt", "model_latest",
                                           "model_model_5.pt"}),
             boost::test_tools::per_element());
  BOOST_TEST(observer.unfinished_writes(prefix).empty());
  check_bitwise_equal(ckpt::load_state_file(prefix + "/model_model_5.pt", observer),
                      ckpt::load_state_file(dir / "local" / "model_model_5.pt"));
}

// The gateway down for longer than the retry budget (2 s here) across the saves of epochs 1 and
// 2, then back: under the default on_save_failure continue the run finishes, those two saves are
// logged as failed, the next ones land, and the newest durable checkpoint is the one a run
// without the outage wrote.
BOOST_AUTO_TEST_CASE(gateway_down_past_the_retry_budget_for_two_saves_then_back) {
  ckpt::test::s3_fixture();
  TempDir straight_dir;
  const TrainResult straight = train(args_in(straight_dir.path().string(), 5));
  ckpt::S3Storage observer;  // the fixture's own gateway, which stays up
  SecondGateway gateway;
  ScopedEnv endpoint("AWS_ENDPOINT_URL", gateway.start());
  const std::string prefix = ckpt::test::unique_s3_prefix("outage-budget");
  auto args = args_in(prefix, 5);
  args.checkpointer_args.s3_retry_seconds = 2;
  const auto start = Clock::now();
  const TrainResult result =
      train(args, at_steps({{2 * kStepsPerEpoch, [&] { gateway.kill(); }},
                            {3 * kStepsPerEpoch + 1, [&] { gateway.start(); }}}));
  BOOST_TEST_MESSAGE("the run with two failed saves took "
                     << std::chrono::duration<double>(Clock::now() - start).count() << " s");
  BOOST_REQUIRE(result.save_health.has_value());
  BOOST_TEST(result.save_health->failed_saves == 2);
  BOOST_TEST(result.save_health->failures_in_a_row == 0);
  BOOST_TEST(result.save_health->last_durable.value_or("") == prefix + "/model_4.pt");
  BOOST_TEST(verified_files_under(prefix, observer) ==
                 (std::vector<std::string>{"model_0.pt", "model_3.pt", "model_4.pt",
                                           "model_latest", "model_model_4.pt"}),
             boost::test_tools::per_element());
  BOOST_TEST(observer.unfinished_writes(prefix).empty());
  check_bitwise_equal(ckpt::load_state_file(prefix + "/model_model_4.pt", observer),
                      ckpt::load_state_file(straight_dir / "model_model_4.pt"));
  const auto a = ckpt::load_checkpoint_file(prefix + "/model_4.pt", observer);
  const auto b = ckpt::load_checkpoint_file(straight_dir / "model_4.pt");
  check_bitwise_equal(a.module_interface_state, b.module_interface_state);
  BOOST_CHECK(ckpt::deep_equal(a.trainer_state.to_ivalue(), b.trainer_state.to_ivalue()));
}

// A gateway that never comes back: the run stops after max_save_failures, naming the last durable
// checkpoint, with nothing under the failed saves' names.
BOOST_AUTO_TEST_CASE(gateway_never_back_stops_the_run_after_max_save_failures) {
  ckpt::test::s3_fixture();
  ckpt::S3Storage observer;  // the fixture's own gateway, which stays up
  SecondGateway gateway;
  ScopedEnv endpoint("AWS_ENDPOINT_URL", gateway.start());
  const std::string prefix = ckpt::test::unique_s3_prefix("outage-forever");
  auto args = args_in(prefix, 6);
  args.checkpointer_args.s3_retry_seconds = 1;
  args.checkpointer_args.max_save_failures = 2;
  const auto start = Clock::now();
  try {
    train(args, at_steps({{2 * kStepsPerEpoch, [&] { gateway.kill(); }}}));
    BOOST_FAIL("the run did not stop");
  } catch (const ckpt::CheckpointError& e) {
    const std::string what = e.what();
    BOOST_TEST(what.find("stopping training: 2 saves failed in a row (max_save_failures 2)") !=
                   std::string::npos,
               what);
    BOOST_TEST(what.find("the last durable checkpoint is " + prefix + "/model_0.pt") !=
                   std::string::npos,
               what);
    BOOST_TEST(what.find("gave up after") != std::string::npos, what);
  }
  BOOST_TEST_MESSAGE("the run stopped "
                     << std::chrono::duration<double>(Clock::now() - start).count()
                     << " s after it started");
  BOOST_TEST(verified_files_under(prefix, observer) ==
                 (std::vector<std::string>{"model_0.pt", "model_latest"}),
             boost::test_tools::per_element());
  BOOST_TEST(observer.unfinished_writes(prefix).empty());
}

BOOST_AUTO_TEST_SUITE_END()

#endif  // CKPT_SAMPLE_TRAINER
