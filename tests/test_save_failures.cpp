// on_save_failure (issue 36): a save the storage refuses is logged and counted and training goes
// on, within max_save_failures and max_unsaved_seconds; forced saves and the final weights must
// land; "stop" throws every failure. Faults come from FailingStorage (the real system calls,
// failing on demand) and from a real full tmpfs.

#include <ckpt/checkpoint_error.h>
#include <ckpt/default_checkpointer.h>
#include <ckpt/serialization.h>

#include <torch/torch.h>
#include <boost/test/unit_test.hpp>

#include "failing_storage.h"
#include "log_capture.h"
#include "small_disk.h"
#include "test_util.h"

#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <limits>
#include <thread>

namespace fs = std::filesystem;
using namespace ckpt::test;

namespace {

ckpt::DefaultCheckpointerArguments args_in(const fs::path& dir) {
  ckpt::DefaultCheckpointerArguments args;
  args.save_dir = dir;
  args.model_state_save_dir = dir;
  return args;
}

// About 40 KB of tensors.
ckpt::Checkpoint checkpoint_of(int64_t epoch) {
  ckpt::Checkpoint checkpoint;
  checkpoint.module_interface_state.insert_or_assign(
      "fc.weight", torch::full({100, 100}, static_cast<float>(epoch)));
  checkpoint.trainer_state.insert_or_assign("last_epoch", epoch);
  return checkpoint;
}

std::string strerror_of(int error_number) { return std::strerror(error_number); }

}  // namespace

BOOST_AUTO_TEST_SUITE(save_failure_policy)

BOOST_AUTO_TEST_CASE(continue_logs_and_counts_a_failure_and_the_next_save_lands) {
  TempDir dir;
  auto storage = std::make_shared<FailingStorage>();
  auto args = args_in(dir.path());
  args.keep_last_n = 1;
  ckpt::DefaultCheckpointer checkpointer(args, storage);
  BOOST_REQUIRE(checkpointer.save(checkpoint_of(0), 0).has_value());

  storage->fail_every(Op::sync, EIO);
  LogCapture log;
  BOOST_TEST(!checkpointer.save(checkpoint_of(1), 1).has_value());
  BOOST_TEST(log.contains("saving checkpoint " + (dir / "model_1.pt").string() +
                          " failed (1 of max_save_failures 3 in a row"),
             log.text());
  BOOST_TEST(log.contains("the last durable checkpoint is " + (dir / "model_0.pt").string()),
             log.text());
  BOOST_TEST(log.contains(strerror_of(EIO)), log.text());
  BOOST_TEST(!checkpointer.save(checkpoint_of(2), 2).has_value());
  auto health = checkpointer.save_health();
  BOOST_REQUIRE(health.has_value());
  BOOST_TEST(health->failed_saves == 2);
  BOOST_TEST(health->failures_in_a_row == 2);
  BOOST_TEST(health->last_durable.value_or("") == dir / "model_0.pt");
  BOOST_TEST(health->last_failure.find(strerror_of(EIO)) != std::string::npos);
  // Nothing of the failed saves under a final name, and retention deleted nothing meanwhile.
  BOOST_TEST(files_in(dir.path(), *ckpt::Storage::local()) ==
                 (std::vector<std::string>{"model_0.pt", "model_latest"}),
             boost::test_tools::per_element());
  BOOST_TEST(ckpt::test::read_text(dir / "model_latest", *ckpt::Storage::local()) ==
             "model_0.pt\n");

  storage->disarm();
  BOOST_TEST(checkpointer.save(checkpoint_of(3), 3).value_or("") == dir / "model_3.pt");
  health = checkpointer.save_health();
  BOOST_TEST(health->failed_saves == 2);
  BOOST_TEST(health->failures_in_a_row == 0);
  BOOST_TEST(health->last_durable.value_or("") == dir / "model_3.pt");
  BOOST_TEST(files_in(dir.path(), *ckpt::Storage::local()) ==
                 (std::vector<std::string>{"model_3.pt", "model_latest"}),
             boost::test_tools::per_element());
  ckpt::verify_file(dir / "model_3.pt");
}

BOOST_AUTO_TEST_CASE(max_save_failures_in_a_row_stop_training_naming_the_last_durable) {
  TempDir dir;
  auto storage = std::make_shared<FailingStorage>();
  auto args = args_in(dir.path());
  args.max_save_failures = 2;
  ckpt::DefaultCheckpointer checkpointer(args, storage);
  checkpointer.save(checkpoint_of(0), 0);
  storage->fail_every(Op::rename, ENOSPC);
  BOOST_TEST(!checkpointer.save(checkpoint_of(1), 1).has_value());
  storage->disarm();
  checkpointer.save(checkpoint_of(2), 2);  // a success resets the count
  storage->fail_every(Op::rename, ENOSPC);
  BOOST_TEST(!checkpointer.save(checkpoint_of(3), 3).has_value());
  try {
    checkpointer.save(checkpoint_of(4), 4);
    BOOST_FAIL("the second failure in a row did not stop training");
  } catch (const ckpt::CheckpointError& e) {
    const std::string what = e.what();
    BOOST_TEST(what.find("stopping training: 2 saves failed in a row (max_save_failures 2)") !=
                   std::string::npos,
               what);
    BOOST_TEST(what.find("the last durable checkpoint is " + (dir / "model_2.pt").string()) !=
                   std::string::npos,
               what);
    BOOST_TEST(what.find((dir / "model_4.pt").string()) != std::string::npos, what);
    BOOST_TEST(what.find(strerror_of(ENOSPC)) != std::string::npos, what);
    BOOST_TEST(e.error_number() == ENOSPC);
  }
  BOOST_TEST(checkpointer.save_health()->failed_saves == 3);
}

BOOST_AUTO_TEST_CASE(max_unsaved_seconds_stops_training_at_a_failed_save) {
  TempDir dir;
  auto storage = std::make_shared<FailingStorage>();
  auto args = args_in(dir.path());
  args.max_save_failures = 100;
  args.max_unsaved_seconds = 0.2;
  ckpt::DefaultCheckpointer checkpointer(args, storage);
  storage->fail_every(Op::sync, EIO);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // none durable since construction
  BOOST_CHECK_EXCEPTION(checkpointer.save(checkpoint_of(0), 0), ckpt::CheckpointError,
                        message_contains("stopping training: no checkpoint has been durable for",
                                         "(max_unsaved_seconds 0.2 s)",
                                         "the last durable checkpoint is none yet in this run"));
}

BOOST_AUTO_TEST_CASE(stop_throws_the_first_failure_naming_the_last_durable) {
  TempDir dir;
  auto storage = std::make_shared<FailingStorage>();
  auto args = args_in(dir.path());
  args.on_save_failure = "stop";
  ckpt::DefaultCheckpointer checkpointer(args, storage);
  checkpointer.save(checkpoint_of(0), 0);
  storage->fail(Op::sync, 0, EIO);
  BOOST_CHECK_EXCEPTION(
      checkpointer.save(checkpoint_of(1), 1), ckpt::CheckpointError,
      message_contains(strerror_of(EIO), "(on_save_failure stop; the last durable checkpoint is " +
                                             (dir / "model_0.pt").string() + ")"));
  BOOST_TEST(files_in(dir.path(), *ckpt::Storage::local()) ==
                 (std::vector<std::string>{"model_0.pt", "model_latest"}),
             boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(a_forced_save_and_the_final_weights_must_land) {
  TempDir dir;
  auto storage = std::make_shared<FailingStorage>();
  auto args = args_in(dir.path());
  args.max_save_failures = 2;
  ckpt::DefaultCheckpointer checkpointer(args, storage);
  // One failure: the forced save is tried again and lands.
  storage->fail(Op::sync, 0, EIO);
  BOOST_TEST(checkpointer.save(checkpoint_of(5), 5, /*force=*/true).value_or("") ==
             dir / "model_5.pt");
  BOOST_TEST(checkpointer.save_health()->failed_saves == 1);
  BOOST_TEST(checkpointer.save_health()->failures_in_a_row == 0);
  ckpt::verify_file(dir / "model_5.pt");
  storage->fail(Op::sync, 0, EIO);
  BOOST_TEST(checkpointer.save_model(checkpoint_of(5).module_interface_state, 5).value_or("") ==
             dir / "model_model_5.pt");
  ckpt::verify_file(dir / "model_model_5.pt");
  // A storage that stays broken: tried until max_save_failures stops it.
  storage->fail_every(Op::sync, EIO);
  BOOST_CHECK_EXCEPTION(checkpointer.save(checkpoint_of(6), 6, /*force=*/true),
                        ckpt::CheckpointError,
                        message_contains("stopping training: 2 saves failed in a row",
                                         (dir / "model_5.pt").string()));
  BOOST_TEST(!fs::exists(dir / "model_6.pt"));
}

BOOST_AUTO_TEST_CASE(a_save_forced_by_step_due_need_not_land) {
  TempDir dir;
  auto storage = std::make_shared<FailingStorage>();
  auto args = args_in(dir.path());
  args.every_n_train_steps = 10;
  ckpt::DefaultCheckpointer checkpointer(args, storage);
  storage->fail_every(Op::sync, EIO);
  const ckpt::TrainingProgress progress{0, 10, 10, 10, 1.0};
  BOOST_REQUIRE(checkpointer.step_due(progress));
  // The trainer forces the epoch-end save because the step trigger asked: a failure rides out.
  BOOST_TEST(!checkpointer.save(checkpoint_of(0), 0, /*force=*/true).has_value());
  BOOST_TEST(checkpointer.save_health()->failures_in_a_row == 1);
}

BOOST_AUTO_TEST_CASE(a_checkpoint_that_cannot_be_written_is_thrown_at_once) {
  TempDir dir;
  ckpt::DefaultCheckpointer checkpointer(args_in(dir.path()));
  ckpt::Checkpoint bad;
  bad.module_interface_state.insert_or_assign("undefined", at::Tensor());
  BOOST_CHECK_EXCEPTION(checkpointer.save(bad, 0), ckpt::CheckpointError,
                        message_contains("undefined tensor"));
  BOOST_TEST(checkpointer.save_health()->failed_saves == 0);  // not the storage's failure
}

BOOST_AUTO_TEST_CASE(a_background_failure_is_ridden_out_not_thrown_at_the_next_save) {
  TempDir dir;
  auto storage = std::make_shared<FailingStorage>();
  auto args = args_in(dir.path());
  args.async = true;
  ckpt::DefaultCheckpointer checkpointer(args, storage);
  storage->fail_every(Op::sync, EIO);
  LogCapture log;
  BOOST_TEST(checkpointer.save(checkpoint_of(1), 1).has_value());  // queued
  BOOST_CHECK_NO_THROW(checkpointer.wait());
  BOOST_TEST(log.contains("failed (1 of max_save_failures 3 in a row"), log.text());
  BOOST_TEST(checkpointer.save_health()->failures_in_a_row == 1);
  storage->disarm();
  BOOST_CHECK_NO_THROW(checkpointer.save(checkpoint_of(2), 2));
  BOOST_CHECK_NO_THROW(checkpointer.wait());
  BOOST_TEST(checkpointer.save_health()->failures_in_a_row == 0);
  BOOST_TEST(checkpointer.save_health()->last_durable.value_or("") == dir / "model_2.pt");
  BOOST_TEST(!fs::exists(dir / "model_1.pt"));
  // Past the limit, the background failure stops training at the next call.
  storage->fail_every(Op::sync, EIO);
  for (int64_t epoch = 3; epoch < 5; ++epoch) {
    checkpointer.save(checkpoint_of(epoch), epoch);
    checkpointer.wait();
  }
  checkpointer.save(checkpoint_of(5), 5);
  BOOST_CHECK_EXCEPTION(checkpointer.wait(), ckpt::CheckpointError,
                        message_contains("stopping training: 3 saves failed in a row",
                                         (dir / "model_2.pt").string()));
}

// A real full disk: the saves fail while it is full (the pre-flight or the write refuses them),
// the older checkpoints stay whole, and once space is freed the next save lands.
BOOST_AUTO_TEST_CASE(a_full_tmpfs_then_freed) {
  TempDir dir;
  const auto disk = dir / "disk";
  SmallDisk small_disk(disk, "1m");
  auto args = args_in(disk);
  args.disk_margin_mb = 0;
  ckpt::DefaultCheckpointer checkpointer(args);
  checkpointer.save(checkpoint_of(0), 0);
  checkpointer.save(checkpoint_of(1), 1);
  small_disk.fill();  // what is left, as another program would
  BOOST_TEST(!checkpointer.save(checkpoint_of(2), 2).has_value());
  BOOST_TEST(!checkpointer.save(checkpoint_of(3), 3).has_value());
  BOOST_TEST(checkpointer.save_health()->last_failure.find(strerror_of(ENOSPC)) !=
                 std::string::npos,
             checkpointer.save_health()->last_failure);
  BOOST_TEST(files_in(disk, *ckpt::Storage::local()) ==
                 (std::vector<std::string>{"filler.bin", "model_0.pt", "model_1.pt",
                                           "model_latest"}),
             boost::test_tools::per_element());
  small_disk.free();
  BOOST_TEST(checkpointer.save(checkpoint_of(4), 4).value_or("") == disk / "model_4.pt");
  BOOST_TEST(files_in(disk, *ckpt::Storage::local()) ==
                 (std::vector<std::string>{"model_0.pt", "model_1.pt", "model_4.pt",
                                           "model_latest"}),
             boost::test_tools::per_element());
  ckpt::verify_file(disk / "model_4.pt");
}

BOOST_AUTO_TEST_CASE(the_options_are_checked_by_name) {
  TempDir dir;
  auto args = args_in(dir.path());
  args.on_save_failure = "retry";
  BOOST_CHECK_EXCEPTION(args.validate(), ckpt::CheckpointError,
                        message_contains("invalid on_save_failure 'retry': expected continue or stop"));
  args = args_in(dir.path());
  args.max_save_failures = 0;
  BOOST_CHECK_EXCEPTION(args.validate(), ckpt::CheckpointError,
                        message_contains("invalid max_save_failures 0"));
  args = args_in(dir.path());
  args.max_unsaved_seconds = -1;
  BOOST_CHECK_EXCEPTION(args.validate(), ckpt::CheckpointError,
                        message_contains("invalid max_unsaved_seconds -1"));
  args = args_in(dir.path());
  args.s3_max_attempts = -1;
  BOOST_CHECK_EXCEPTION(args.validate(), ckpt::CheckpointError,
                        message_contains("invalid s3_max_attempts -1"));
  args = args_in(dir.path());
  args.s3_retry_seconds = std::numeric_limits<double>::infinity();
  BOOST_CHECK_EXCEPTION(args.validate(), ckpt::CheckpointError,
                        message_contains("invalid s3_retry_seconds inf"));
}

BOOST_AUTO_TEST_SUITE_END()
