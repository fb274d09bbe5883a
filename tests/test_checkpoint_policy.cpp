// When, which and what DefaultCheckpointer keeps: step and time triggers, retention, the best
// pool, the latest pointer and the disk pre-flight (issue 5), on the library alone.

#include <ckpt/checkpoint_error.h>
#include <ckpt/default_checkpointer.h>
#include <ckpt/serialization.h>

#include "failing_storage.h"
#include "log_capture.h"
#include "test_util.h"

#include <boost/test/unit_test.hpp>
#include <torch/torch.h>

#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstring>
#include <fstream>
#include <optional>

using namespace ckpt;
using namespace ckpt::test;
namespace fs = std::filesystem;

namespace {

// A checkpoint whose weights are `elements` floats equal to `value`, reporting `metrics`.
Checkpoint make_checkpoint(float value, std::map<std::string, double> metrics = {},
                           int64_t elements = 16) {
  Checkpoint checkpoint;
  checkpoint.module_interface_state.insert_or_assign("w", torch::full({elements}, value));
  checkpoint.trainer_state.insert_or_assign("last_epoch", static_cast<int64_t>(value));
  if (!metrics.empty()) {
    StateDict reported;
    for (const auto& [name, score] : metrics) reported.insert_or_assign(name, score);
    checkpoint.metadata.insert_or_assign("metrics", reported.to_ivalue());
  }
  return checkpoint;
}

DefaultCheckpointerArguments args_in(const fs::path& dir) {
  DefaultCheckpointerArguments args;
  args.save_dir = dir;
  args.model_state_save_dir = dir;
  args.load_dir = dir;
  return args;
}

// The resumable checkpoints directly in `dir` (what retention counts), sorted by name.
std::vector<std::string> resumable_in(const fs::path& dir) {
  std::vector<std::string> result;
  for (const auto& name : files_in(dir)) {
    if (CheckpointName::parse(name, "model", "pt")) result.push_back(name);
  }
  return result;
}

std::vector<std::string> best_in(const fs::path& dir) {
  std::vector<std::string> result;
  for (const auto& name : files_in(dir)) {
    if (name.rfind("model_best_", 0) == 0) result.push_back(name);
  }
  return result;
}

float weight_of(const Checkpoint& checkpoint) {
  return checkpoint.module_interface_state.at("w").toTensor()[0].item<float>();
}

TrainingProgress at_step(int64_t step, double seconds = 0, int64_t batches = 4) {
  return {step / batches, step % batches, batches, step, seconds};
}

// Flips one byte in the middle of `path` (through the storage under test).
void corrupt(const fs::path& path) { flip_byte(path); }

}  // namespace

BOOST_AUTO_TEST_SUITE(triggers)

BOOST_AUTO_TEST_CASE(every_n_train_steps_saves_mid_epoch_at_multiples) {
  TempDir dir;
  auto args = args_in(dir.path());
  args.every_n_train_steps = 3;
  args.latest_pointer = false;
  DefaultCheckpointer checkpointer(args, storage_under_test());
  std::vector<int64_t> due;
  for (int64_t step = 1; step <= 10; ++step) {
    if (checkpointer.step_due(at_step(step))) {
      due.push_back(step);
      const auto path = checkpointer.save_step(make_checkpoint(step), at_step(step));
      BOOST_REQUIRE(path);
      BOOST_CHECK_EQUAL(path->filename().string(), "model_" + std::to_string(step / 4) +
                                                       "_step_" + std::to_string(step) + ".pt");
    }
  }
  BOOST_CHECK((due == std::vector<int64_t>{3, 6, 9}));
  BOOST_CHECK((files_in(dir.path()) == std::vector<std::string>{
                   "model_0_step_3.pt", "model_1_step_6.pt", "model_2_step_9.pt"}));
  // save_step re-checks the trigger: a step that is not due writes nothing unless forced.
  BOOST_CHECK(!checkpointer.save_step(make_checkpoint(4), at_step(4)));
  BOOST_CHECK(checkpointer.save_step(make_checkpoint(4), at_step(4), /*force=*/true));
  // The newest is the latest step; load() resumes from it.
  BOOST_CHECK_EQUAL(
      get_latest_file(dir.path(), "model", "pt", *storage_under_test()).filename().string(),
      "model_2_step_9.pt");
  BOOST_CHECK_EQUAL(weight_of(checkpointer.load()), 9.0f);
}

BOOST_AUTO_TEST_CASE(train_time_interval_counts_training_seconds_since_the_last_save) {
  TempDir dir;
  auto args = args_in(dir.path());
  args.train_time_interval = 10;
  DefaultCheckpointer checkpointer(args, storage_under_test());
  BOOST_CHECK(!checkpointer.step_due(at_step(1, 5.0)));
  BOOST_CHECK(checkpointer.step_due(at_step(2, 10.0)));
  BOOST_REQUIRE(checkpointer.save_step(make_checkpoint(2), at_step(2, 10.0)));
  BOOST_CHECK(!checkpointer.step_due(at_step(3, 15.0)));
  BOOST_CHECK(checkpointer.step_due(at_step(5, 20.5)));
  // An epoch's save restarts the clock too.
  BOOST_CHECK(checkpointer.step_due(at_step(8, 25.0)));
  BOOST_REQUIRE(checkpointer.save(make_checkpoint(1), 1, /*force=*/true));
  BOOST_CHECK(!checkpointer.step_due(at_step(9, 30.0)));
  BOOST_CHECK(checkpointer.step_due(at_step(10, 35.0)));
  // Off, and with checkpointing off, nothing is ever due.
  args.train_time_interval = 0;
  BOOST_CHECK(!DefaultCheckpointer(args, storage_under_test()).step_due(at_step(1, 1e9)));
  args.train_time_interval = 1;
  args.checkpoint = false;
  BOOST_CHECK(!DefaultCheckpointer(args, storage_under_test()).step_due(at_step(1, 1e9)));
}

BOOST_AUTO_TEST_CASE(step_checkpoints_sort_between_their_epochs) {
  TempDir dir;
  for (const char* name : {"model_0.pt", "model_1_step_50.pt", "model_1.pt", "model_2_step_100.pt",
                           "model_2_step_99.pt"}) {
    write_text(dir / name, "x");
  }
  std::vector<std::string> order;
  for (const auto& path : list_checkpoints(dir.path(), "model", "pt", *storage_under_test()))
    order.push_back(path.filename().string());
  BOOST_CHECK((order == std::vector<std::string>{"model_2_step_100.pt", "model_2_step_99.pt",
                                                 "model_1.pt", "model_1_step_50.pt",
                                                 "model_0.pt"}));
  for (const char* bad : {"model_1_step_.pt", "model_x_step_3.pt", "model_1_step_3_step_4.pt",
                          "model_1_step_-3.pt", "model_best_3.pt", "model_model_3.pt",
                          "model_latest"}) {
    BOOST_TEST_CONTEXT(bad) { BOOST_CHECK(!CheckpointName::parse(bad, "model", "pt")); }
  }
  const auto name = CheckpointName::parse("model_4_step_180.pt", "model", "pt");
  BOOST_REQUIRE(name);
  BOOST_CHECK_EQUAL(name->index, 4);
  BOOST_CHECK_EQUAL(*name->step, 180);
}

BOOST_AUTO_TEST_CASE(save_weights_only_keeps_the_module_state_only) {
  TempDir dir;
  auto args = args_in(dir.path());
  args.save_weights_only = true;
  DefaultCheckpointer checkpointer(args, storage_under_test());
  Checkpoint full = make_checkpoint(3, {{"val_loss", 0.5}});
  full.trainer_backend_state.insert_or_assign("global_step_completed", int64_t{7});
  full.registered_state.insert_or_assign("sampler", int64_t{1});
  full.hyperparameters.insert_or_assign("chkp.period", int64_t{1});
  checkpointer.save(full, 3);
  checkpointer.save_step(full, at_step(17), /*force=*/true);
  for (const char* name : {"model_3.pt", "model_4_step_17.pt"}) {
    BOOST_TEST_CONTEXT(name) {
      const Checkpoint saved = load_checkpoint_file(dir / name, *storage_under_test());
      BOOST_CHECK_EQUAL(weight_of(saved), 3.0f);
      BOOST_CHECK(saved.trainer_state.empty());
      BOOST_CHECK(saved.trainer_backend_state.empty());
      BOOST_CHECK(saved.registered_state.empty());
      BOOST_CHECK(saved.hyperparameters == full.hyperparameters);
    }
  }
}

BOOST_AUTO_TEST_CASE(bad_trigger_options_are_refused_naming_them) {
  TempDir dir;
  auto args = args_in(dir.path());
  args.every_n_train_steps = -1;
  BOOST_CHECK_EXCEPTION(args.validate(*storage_under_test()), CheckpointError,
                        message_contains("every_n_train_steps"));
  args = args_in(dir.path());
  args.train_time_interval = -2;
  BOOST_CHECK_EXCEPTION(args.validate(*storage_under_test()), CheckpointError,
                        message_contains("train_time_interval"));
  args = args_in(dir.path());
  args.keep_last_n = -1;
  BOOST_CHECK_EXCEPTION(args.validate(*storage_under_test()), CheckpointError,
                        message_contains("keep_last_n"));
  args = args_in(dir.path());
  args.save_top_k = 2;
  BOOST_CHECK_EXCEPTION(args.validate(*storage_under_test()), CheckpointError,
                        message_contains("save_top_k", "monitor"));
  args.monitor = "val_loss";
  args.mode = "avg";
  BOOST_CHECK_EXCEPTION(args.validate(*storage_under_test()), CheckpointError,
                        message_contains("mode 'avg'"));
  args = args_in(dir.path());
  args.disk_margin_mb = -1;
  BOOST_CHECK_EXCEPTION(args.validate(*storage_under_test()), CheckpointError,
                        message_contains("disk_margin_mb"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(retention)

BOOST_AUTO_TEST_CASE(keeps_the_newest_n_and_never_touches_other_files) {
  TempDir dir;
  // Files that are not this checkpointer's to delete, including one under a checkpoint's name
  // that ckpt did not write and one in a subfolder.
  write_text(dir / "model_0.pt", "someone else's file");
  write_text(dir / "notes.pt", "n");
  write_text(dir / "model_3.pt.bak", "b");
  write_text(dir / "other_1.pt", "o");
  make_directories(dir / "old");
  save_checkpoint_file(make_checkpoint(1), dir / "old" / "model_1.pt", *storage_under_test());
  auto args = args_in(dir.path());
  args.keep_last_n = 2;
  auto storage = std::make_shared<RecordingStorage>();
  DefaultCheckpointer checkpointer(args, storage);
  LogCapture log;
  for (int64_t i = 1; i <= 5; ++i) checkpointer.save(make_checkpoint(i), i);
  BOOST_CHECK((resumable_in(dir.path()) ==
               std::vector<std::string>{"model_0.pt", "model_4.pt", "model_5.pt"}));
  BOOST_CHECK_EQUAL(read_text(dir / "model_0.pt"), "someone else's file");
  for (const char* kept : {"notes.pt", "model_3.pt.bak", "other_1.pt"}) {
    BOOST_CHECK(ckpt::test::exists(dir / kept));
  }
  BOOST_CHECK(ckpt::test::exists(dir / "old" / "model_1.pt"));
  // model_0.pt is neither counted as resumable nor deleted.
  BOOST_CHECK(log.contains("model_0.pt does not verify"));
  BOOST_CHECK(log.contains("leaving " + (dir / "model_0.pt").string() + " alone"));
  // Each old checkpoint was deleted only after the next one was durable (committed).
  const auto journal = storage->journal();
  const auto position = [&](const std::string& entry) {
    return std::find(journal.begin(), journal.end(), entry) - journal.begin();
  };
  for (int64_t i = 1; i <= 3; ++i) {
    const auto removed = position("remove:" + (dir / ("model_" + std::to_string(i) + ".pt")).string());
    const auto committed =
        position("commit:" + (dir / ("model_" + std::to_string(i + 2) + ".pt")).string());
    BOOST_TEST_CONTEXT("model_" << i) {
      BOOST_REQUIRE(removed < static_cast<long>(journal.size()));
      BOOST_REQUIRE(committed < static_cast<long>(journal.size()));
      BOOST_CHECK(committed < removed);
    }
  }
}

// A killed process takes a MemoryStorage with it: this one is about what a real disk keeps.
BOOST_AUTO_TEST_CASE(survives_restarts_and_a_kill_between_save_and_prune,
                     *boost::unit_test::precondition(local_only)) {
  TempDir dir;
  auto args = args_in(dir.path());
  args.keep_last_n = 2;
  // The child is killed by SIGKILL at the moment retention deletes a file: after the third
  // checkpoint is durable, before anything is pruned.
  struct KillOnRemove final : StorageWrapper {
    using StorageWrapper::StorageWrapper;
    void remove(const fs::path&) override { ::raise(SIGKILL); }
  };
  const pid_t pid = ::fork();
  BOOST_REQUIRE(pid >= 0);
  if (pid == 0) {
    DefaultCheckpointer checkpointer(args, std::make_shared<KillOnRemove>(Storage::local()));
    for (int64_t i = 0; i < 3; ++i) checkpointer.save(make_checkpoint(i), i);
    ::_exit(0);  // not reached
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  BOOST_REQUIRE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  BOOST_CHECK((resumable_in(dir.path()) ==
               std::vector<std::string>{"model_0.pt", "model_1.pt", "model_2.pt"}));
  for (const auto& name : resumable_in(dir.path())) BOOST_CHECK_NO_THROW(verify_file(dir / name));

  // Restarted: resumes from the newest and enforces the limit from what is on disk.
  {
    DefaultCheckpointer restarted(args, Storage::local());
    BOOST_CHECK_EQUAL(weight_of(restarted.load()), 2.0f);
    restarted.save(make_checkpoint(3), 3);
    BOOST_CHECK((resumable_in(dir.path()) ==
                 std::vector<std::string>{"model_2.pt", "model_3.pt"}));
  }
  // Restarted with a lower limit: the next save leaves only the newest.
  args.keep_last_n = 1;
  DefaultCheckpointer lowered(args, Storage::local());
  lowered.save_step(make_checkpoint(4), at_step(17), /*force=*/true);
  BOOST_CHECK((resumable_in(dir.path()) == std::vector<std::string>{"model_4_step_17.pt"}));
}

BOOST_AUTO_TEST_CASE(a_checkpoint_that_does_not_verify_is_neither_counted_nor_deleted) {
  TempDir dir;
  auto args = args_in(dir.path());
  args.keep_last_n = 2;
  DefaultCheckpointer checkpointer(args, storage_under_test());
  for (int64_t i = 0; i < 3; ++i) checkpointer.save(make_checkpoint(i), i);
  corrupt(dir / "model_2.pt");
  LogCapture log;
  checkpointer.save(make_checkpoint(3), 3);
  // model_3 and model_1 are the two newest that verify; the damaged model_2 is left for a human.
  BOOST_CHECK((resumable_in(dir.path()) ==
               std::vector<std::string>{"model_1.pt", "model_2.pt", "model_3.pt"}));
  BOOST_CHECK(log.contains("model_2.pt does not verify"));
}

// An unlink(2) failing (FailingStorage: the local filesystem's system calls).
BOOST_AUTO_TEST_CASE(a_failed_prune_keeps_the_save_and_is_retried_next_time,
                     *boost::unit_test::precondition(local_only)) {
  TempDir dir;
  auto args = args_in(dir.path());
  args.keep_last_n = 1;
  auto storage = std::make_shared<FailingStorage>();
  DefaultCheckpointer checkpointer(args, storage);
  checkpointer.save(make_checkpoint(0), 0);
  storage->fail(Op::remove, 0, EACCES);
  LogCapture log;
  BOOST_CHECK(checkpointer.save(make_checkpoint(1), 1));  // the save itself succeeded
  BOOST_CHECK(log.contains("could not delete old checkpoints"));
  BOOST_CHECK((resumable_in(dir.path()) == std::vector<std::string>{"model_0.pt", "model_1.pt"}));
  checkpointer.save(make_checkpoint(2), 2);
  BOOST_CHECK((resumable_in(dir.path()) == std::vector<std::string>{"model_2.pt"}));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(best_checkpoints)

// Saves one checkpoint per score (index = position) and returns the pool's indexes, best first.
std::vector<int64_t> run_scores(const fs::path& dir, const std::string& mode,
                                const std::vector<double>& scores, int64_t k = 2) {
  auto args = args_in(dir);
  args.save_top_k = k;
  args.monitor = "val_loss";
  args.mode = mode;
  DefaultCheckpointer checkpointer(args, storage_under_test());
  for (size_t i = 0; i < scores.size(); ++i) {
    checkpointer.save(make_checkpoint(static_cast<float>(i), {{"val_loss", scores[i]}}),
                      static_cast<int64_t>(i));
  }
  std::vector<int64_t> pool;
  for (const auto& best : checkpointer.best_checkpoints()) pool.push_back(best.index);
  return pool;
}

BOOST_AUTO_TEST_CASE(min_mode_keeps_the_lowest_and_ties_go_to_the_earlier) {
  TempDir dir;
  // 0.3 at index 4 ties the pool's worst (index 1): not strictly better, so index 1 stays.
  const auto pool = run_scores(dir.path(), "min", {0.5, 0.3, 0.4, 0.1, 0.3});
  BOOST_CHECK((pool == std::vector<int64_t>{3, 1}));
  BOOST_CHECK((best_in(dir.path()) ==
               std::vector<std::string>{"model_best_1.pt", "model_best_3.pt"}));
  const Checkpoint best = load_checkpoint_file(dir / "model_best_3.pt", *storage_under_test());
  BOOST_CHECK_EQUAL(weight_of(best), 3.0f);  // a full checkpoint of that epoch
  const auto recorded = StateDict::from_ivalue(best.metadata.at("best"));
  BOOST_CHECK_EQUAL(recorded.at("score").toDouble(), 0.1);
  BOOST_CHECK_EQUAL(recorded.at("monitor").toStringRef(), "val_loss");
  BOOST_CHECK_EQUAL(recorded.at("mode").toStringRef(), "min");
}

BOOST_AUTO_TEST_CASE(max_mode_keeps_the_highest_and_evicts_the_newer_of_a_tie) {
  TempDir dir;
  // 0.7 twice: both enter (beating 0.5); 0.9 then evicts the newer 0.7 (index 2).
  const auto pool = run_scores(dir.path(), "max", {0.5, 0.7, 0.7, 0.9, 0.6});
  BOOST_CHECK((pool == std::vector<int64_t>{3, 1}));
  BOOST_CHECK((best_in(dir.path()) ==
               std::vector<std::string>{"model_best_1.pt", "model_best_3.pt"}));
}

BOOST_AUTO_TEST_CASE(best_and_resumable_pools_never_evict_each_other) {
  TempDir dir;
  auto args = args_in(dir.path());
  args.keep_last_n = 1;
  args.save_top_k = 1;
  args.monitor = "val_loss";
  DefaultCheckpointer checkpointer(args, storage_under_test());
  // Scores only get worse: the best stays at index 0 while the resumable one moves on.
  const std::vector<double> scores{0.1, 0.5, 0.6, 0.7};
  for (size_t i = 0; i < scores.size(); ++i) {
    const auto index = static_cast<int64_t>(i);
    checkpointer.save(make_checkpoint(static_cast<float>(i), {{"val_loss", scores[i]}}), index);
    BOOST_TEST_CONTEXT("after index " << i) {
      BOOST_CHECK((resumable_in(dir.path()) ==
                   std::vector<std::string>{"model_" + std::to_string(i) + ".pt"}));
      BOOST_CHECK((best_in(dir.path()) == std::vector<std::string>{"model_best_0.pt"}));
    }
  }
  // Scores only get better: best files are replaced; the newest resumable one always survives.
  TempDir other;
  auto improving = args_in(other.path());
  improving.keep_last_n = 1;
  improving.save_top_k = 1;
  improving.monitor = "val_loss";
  DefaultCheckpointer second(improving, storage_under_test());
  for (int64_t i = 0; i < 4; ++i) {
    second.save(make_checkpoint(static_cast<float>(i), {{"val_loss", 1.0 - 0.1 * i}}), i);
    BOOST_CHECK((resumable_in(other.path()) ==
                 std::vector<std::string>{"model_" + std::to_string(i) + ".pt"}));
    BOOST_CHECK((best_in(other.path()) ==
                 std::vector<std::string>{"model_best_" + std::to_string(i) + ".pt"}));
  }
  BOOST_CHECK_EQUAL(weight_of(second.load()), 3.0f);  // the resumable newest, not a best file
}

BOOST_AUTO_TEST_CASE(the_pool_is_rebuilt_from_disk_after_a_restart) {
  TempDir dir;
  run_scores(dir.path(), "min", {0.5, 0.3, 0.4}, 2);  // pool: 1 (0.3), 2 (0.4)
  // A best file ranked by another metric is left alone.
  {
    auto args = args_in(dir.path());
    args.save_top_k = 1;
    args.monitor = "val_acc";
    args.mode = "max";
    DefaultCheckpointer other(args, storage_under_test());
    other.save(make_checkpoint(9, {{"val_acc", 0.9}}), 9);
  }
  auto args = args_in(dir.path());
  args.save_top_k = 2;
  args.monitor = "val_loss";
  {
    LogCapture log;
    DefaultCheckpointer restarted(args, storage_under_test());
    BOOST_REQUIRE_EQUAL(restarted.best_checkpoints().size(), 2u);
    BOOST_CHECK_EQUAL(restarted.best_checkpoints()[0].index, 1);
    BOOST_CHECK_EQUAL(restarted.best_checkpoints()[0].score, 0.3);
    BOOST_CHECK_EQUAL(restarted.best_checkpoints()[1].index, 2);
    BOOST_CHECK(log.contains("model_best_9.pt is not ranked by val_loss"));
    // Enforced after the restart: 0.35 evicts index 2 (0.4), on disk.
    restarted.save(make_checkpoint(3, {{"val_loss", 0.35}}), 3);
    BOOST_CHECK((best_in(dir.path()) == std::vector<std::string>{
                     "model_best_1.pt", "model_best_3.pt", "model_best_9.pt"}));
  }
  // Restarted with a smaller pool: the extra ones go at once.
  args.save_top_k = 1;
  DefaultCheckpointer smaller(args, storage_under_test());
  BOOST_CHECK_EQUAL(smaller.best_checkpoints().size(), 1u);
  BOOST_CHECK((best_in(dir.path()) ==
               std::vector<std::string>{"model_best_1.pt", "model_best_9.pt"}));
}

BOOST_AUTO_TEST_CASE(a_missing_monitor_is_an_error_naming_it_and_what_was_reported) {
  TempDir dir;
  auto args = args_in(dir.path());
  args.save_top_k = 1;
  args.monitor = "val_loss";
  DefaultCheckpointer checkpointer(args, storage_under_test());
  BOOST_CHECK_EXCEPTION(checkpointer.save(make_checkpoint(0, {{"val_acc", 0.5}}), 0),
                        CheckpointError, message_contains("monitor 'val_loss'", "val_acc"));
  // A NaN score never enters the pool.
  LogCapture log;
  checkpointer.save(make_checkpoint(1, {{"val_loss", std::nan("")}}), 1);
  BOOST_CHECK(checkpointer.best_checkpoints().empty());
  BOOST_CHECK(log.contains("NaN"));
}

BOOST_AUTO_TEST_CASE(the_pool_does_not_follow_period) {
  TempDir dir;
  auto args = args_in(dir.path());
  args.period = 2;
  args.save_top_k = 1;
  args.monitor = "val_loss";
  DefaultCheckpointer checkpointer(args, storage_under_test());
  checkpointer.save(make_checkpoint(0, {{"val_loss", 0.5}}), 0);
  // Index 1 is not due (1 % 2 != 0): no resumable file, but its better score enters the pool.
  BOOST_CHECK(!checkpointer.save(make_checkpoint(1, {{"val_loss", 0.2}}), 1).has_value());
  BOOST_CHECK((resumable_in(dir.path()) == std::vector<std::string>{"model_0.pt"}));
  BOOST_CHECK((best_in(dir.path()) == std::vector<std::string>{"model_best_1.pt"}));
  BOOST_REQUIRE_EQUAL(checkpointer.best_checkpoints().size(), 1u);
  BOOST_CHECK_EQUAL(checkpointer.best_checkpoints().front().index, 1);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(latest_pointer)

// Three checkpoints, 0..2, and a checkpointer reading them.
struct ThreeSaved {
  ThreeSaved() {
    DefaultCheckpointer writer(args_in(dir.path()), storage_under_test());
    for (int64_t i = 0; i < 3; ++i) writer.save(make_checkpoint(i), i);
  }
  TempDir dir;
  fs::path pointer() const { return dir / "model_latest"; }
};

BOOST_AUTO_TEST_CASE(names_the_newest_complete_checkpoint) {
  ThreeSaved saved;
  BOOST_CHECK_EQUAL(read_text(saved.pointer()), "model_2.pt\n");
  DefaultCheckpointer checkpointer(args_in(saved.dir.path()), storage_under_test());
  checkpointer.save_step(make_checkpoint(3), at_step(13), /*force=*/true);
  BOOST_CHECK_EQUAL(read_text(saved.pointer()), "model_3_step_13.pt\n");
  // Re-saving an older index leaves the pointer on the newest.
  checkpointer.save(make_checkpoint(1), 1);
  BOOST_CHECK_EQUAL(read_text(saved.pointer()), "model_3_step_13.pt\n");
  // Off: no pointer is written.
  TempDir off;
  auto args = args_in(off.path());
  args.latest_pointer = false;
  DefaultCheckpointer(args, storage_under_test()).save(make_checkpoint(0), 0);
  BOOST_CHECK((files_in(off.path()) == std::vector<std::string>{"model_0.pt"}));
}

BOOST_AUTO_TEST_CASE(a_valid_pointer_is_used) {
  ThreeSaved saved;
  // The same name deeper in the tree sorts first in a scan ("a/..." < "model_2.pt"); the pointer,
  // which names the top-level file, wins.
  make_directories(saved.dir / "a");
  save_checkpoint_file(make_checkpoint(42), saved.dir / "a" / "model_2.pt", *storage_under_test());
  BOOST_CHECK_EQUAL(get_latest_file(saved.dir.path(), "model", "pt", *storage_under_test()),
                    saved.dir / "a" / "model_2.pt");
  BOOST_CHECK_EQUAL(
      weight_of(DefaultCheckpointer(args_in(saved.dir.path()), storage_under_test()).load()), 2.0f);
  remove_file(saved.pointer());
  BOOST_CHECK_EQUAL(
      weight_of(DefaultCheckpointer(args_in(saved.dir.path()), storage_under_test()).load()),
      42.0f);
}

BOOST_AUTO_TEST_CASE(corrupt_stale_or_missing_pointers_fall_back_to_the_scan) {
  ThreeSaved saved;
  const auto load_with = [&](const std::string& pointer_text, const std::string& warning) {
    if (pointer_text.empty()) {
      remove_file(saved.pointer());
    } else {
      write_text(saved.pointer(), pointer_text);
    }
    LogCapture log;
    const float loaded =
        weight_of(DefaultCheckpointer(args_in(saved.dir.path()), storage_under_test()).load());
    BOOST_TEST_CONTEXT("pointer '" << pointer_text << "'") {
      BOOST_CHECK_EQUAL(loaded, 2.0f);
      if (warning.empty()) {
        BOOST_CHECK(!log.contains("latest pointer"));
      } else {
        BOOST_CHECK(log.contains(warning));
      }
    }
  };
  load_with("\x01\x02garbage\xff", "is not valid");
  load_with("../model_2.pt\n", "is not valid");
  load_with("model_2.pt\nmodel_1.pt\n", "is not valid");
  load_with(std::string(1000, 'm'), "is not valid");
  load_with("model_0.pt\n", "is stale");
  load_with("model_9.pt\n", "does not exist");
  load_with("", "");  // missing: a quiet scan
  // A pointer to a damaged file: the usual fallback to the newest that verifies.
  write_text(saved.pointer(), "model_2.pt\n");
  corrupt(saved.dir / "model_2.pt");
  LogCapture log;
  BOOST_CHECK_EQUAL(
      weight_of(DefaultCheckpointer(args_in(saved.dir.path()), storage_under_test()).load()), 1.0f);
  BOOST_CHECK(log.contains("skipping checkpoint"));
}

// A rename(2) failing (FailingStorage: the local filesystem's system calls).
BOOST_AUTO_TEST_CASE(a_failed_pointer_update_keeps_the_save_and_the_scan_recovers,
                     *boost::unit_test::precondition(local_only)) {
  TempDir dir;
  auto storage = std::make_shared<FailingStorage>();
  DefaultCheckpointer checkpointer(args_in(dir.path()), storage);
  checkpointer.save(make_checkpoint(0), 0);
  storage->fail(Op::rename, 1, EIO);  // the second rename of the next save: the pointer's
  LogCapture log;
  BOOST_CHECK(checkpointer.save(make_checkpoint(1), 1));
  BOOST_CHECK(log.contains("could not update the latest pointer"));
  BOOST_CHECK_EQUAL(read_text(dir / "model_latest"), "model_0.pt\n");  // old, not torn
  BOOST_CHECK_EQUAL(weight_of(DefaultCheckpointer(args_in(dir.path()), Storage::local()).load()),
                    1.0f);
  BOOST_CHECK(log.contains("is stale"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(preflight)

// The storage under test, but reporting a fixed budget of bytes minus what `dir` holds, and
// journalling what is written (RecordingStorage).
struct FakeDisk final : StorageWrapper {
  FakeDisk(fs::path dir, uint64_t budget)
      : StorageWrapper(std::make_shared<RecordingStorage>()),
        dir_(std::move(dir)),
        budget_(budget) {}
  std::optional<uint64_t> available_space(const fs::path&) override {
    uint64_t used = 0;
    for (const auto& file : target().list(dir_, /*recursive=*/false)) used += file.size;
    return used >= budget_ ? 0 : budget_ - used;
  }
  RecordingStorage& journal() { return static_cast<RecordingStorage&>(target()); }

 private:
  fs::path dir_;
  uint64_t budget_;
};

constexpr int64_t kElements = 64 * 1024;  // 256 KiB of floats per checkpoint

BOOST_AUTO_TEST_CASE(too_little_space_fails_before_writing_anything) {
  TempDir dir;
  auto args = args_in(dir.path());
  args.on_save_failure = "stop";  // the refusal itself is under test
  args.disk_margin_mb = 0.25;
  auto disk = std::make_shared<FakeDisk>(dir.path(), 400 * 1024);
  DefaultCheckpointer checkpointer(args, disk);
  BOOST_CHECK_EXCEPTION(
      checkpointer.save(make_checkpoint(0, {}, kElements), 0), CheckpointError,
      message_contains("not enough free space", "model_0.pt", "disk_margin_mb", "nothing was written"));
  BOOST_CHECK(files_in(dir.path()).empty());
  BOOST_CHECK(disk->journal().journal().empty());  // not even a writer was started
  // A smaller checkpoint fits.
  BOOST_CHECK(checkpointer.save(make_checkpoint(0, {}, 1024), 0));
}

BOOST_AUTO_TEST_CASE(retention_makes_room_first_but_keeps_the_newest) {
  TempDir dir;
  auto args = args_in(dir.path());
  args.on_save_failure = "stop";  // the refusal itself is under test
  args.keep_last_n = 3;
  args.disk_margin_mb = 0.1;
  // Room for three checkpoints and the margin, not four.
  auto disk = std::make_shared<FakeDisk>(dir.path(), 3 * 340 * 1024 + 150 * 1024);
  DefaultCheckpointer checkpointer(args, disk);
  for (int64_t i = 0; i < 3; ++i) checkpointer.save(make_checkpoint(i, {}, kElements), i);
  LogCapture log;
  BOOST_REQUIRE(checkpointer.save(make_checkpoint(3, {}, kElements), 3));
  BOOST_CHECK(log.contains("applying retention before the save"));
  BOOST_CHECK((resumable_in(dir.path()) ==
               std::vector<std::string>{"model_1.pt", "model_2.pt", "model_3.pt"}));
  // Without retention there is nothing it may delete: a clear error, and nothing lost.
  args.keep_last_n = 0;
  DefaultCheckpointer keep_all(args, disk);
  BOOST_CHECK_EXCEPTION(keep_all.save(make_checkpoint(4, {}, kElements), 4), CheckpointError,
                        message_contains("not enough free space"));
  BOOST_CHECK((resumable_in(dir.path()) ==
               std::vector<std::string>{"model_1.pt", "model_2.pt", "model_3.pt"}));
}

// MemoryStorage's capacity is a real budget: available_space() reports what is left of it and a
// commit beyond it fails. The pre-flight refuses a checkpoint that cannot fit before it starts a
// writer, and retention deletes nothing when deleting would not make it fit.
BOOST_AUTO_TEST_CASE(too_little_capacity_fails_before_writing_and_deletes_nothing) {
  const fs::path dir = "/run-with-capacity";
  auto memory = std::make_shared<MemoryStorage>(400 * 1024);
  auto storage = std::make_shared<RecordingStorage>(memory);
  auto args = args_in(dir);
  args.on_save_failure = "stop";  // the refusal itself is under test
  args.keep_last_n = 2;
  args.disk_margin_mb = 0.25;
  DefaultCheckpointer checkpointer(args, storage);
  for (int64_t i = 0; i < 2; ++i) BOOST_REQUIRE(checkpointer.save(make_checkpoint(i), i));
  const auto before = files_in(dir, *memory);
  BOOST_REQUIRE((before == std::vector<std::string>{"model_0.pt", "model_1.pt", "model_latest"}));
  const uint64_t used = memory->used_bytes();
  const auto writers = storage->journal().size();
  BOOST_CHECK_EXCEPTION(checkpointer.save(make_checkpoint(2, {}, kElements), 2), CheckpointError,
                        message_contains("not enough free space", (dir / "model_2.pt").string(),
                                         "nothing was written"));
  BOOST_CHECK(files_in(dir, *memory) == before);
  BOOST_CHECK_EQUAL(memory->used_bytes(), used);
  BOOST_CHECK_EQUAL(storage->journal().size(), writers);  // no writer started, nothing removed
  BOOST_CHECK_EQUAL(weight_of(DefaultCheckpointer(args, memory).load()), 1.0f);
  // With room to spare the same storage takes it.
  auto roomy = std::make_shared<MemoryStorage>(2 * 1024 * 1024);
  DefaultCheckpointer fits(args, roomy);
  BOOST_CHECK(fits.save(make_checkpoint(2, {}, kElements), 2));
  BOOST_CHECK_LE(roomy->used_bytes(), 2u * 1024 * 1024);
}

// A storage that does not know its free space (MemoryStorage without capacity, an object store)
// skips the pre-flight instead of refusing every save: even a margin no disk has lets it through.
BOOST_AUTO_TEST_CASE(unknown_free_space_skips_the_preflight) {
  const fs::path dir = "/run-without-capacity";
  auto memory = std::make_shared<MemoryStorage>();
  BOOST_REQUIRE(!memory->available_space(dir));
  auto args = args_in(dir);
  args.on_save_failure = "stop";  // the refusal itself is under test
  args.disk_margin_mb = 1e9;  // a petabyte
  DefaultCheckpointer checkpointer(args, memory);
  BOOST_CHECK(checkpointer.save(make_checkpoint(0, {}, kElements), 0));
  BOOST_CHECK((files_in(dir, *memory) == std::vector<std::string>{"model_0.pt", "model_latest"}));
  BOOST_CHECK_EQUAL(weight_of(checkpointer.load()), 0.0f);
  // The same margin against a known capacity is refused.
  DefaultCheckpointer bounded(args, std::make_shared<MemoryStorage>(1024 * 1024 * 1024));
  BOOST_CHECK_EXCEPTION(bounded.save(make_checkpoint(0, {}, kElements), 0), CheckpointError,
                        message_contains("not enough free space"));
}

BOOST_AUTO_TEST_CASE(on_a_small_tmpfs_for_real, *boost::unit_test::precondition(local_only)) {
  TempDir dir;
  const auto mount_point = dir / "small";
  fs::create_directories(mount_point);
  BOOST_REQUIRE_MESSAGE(::geteuid() == 0, "this test mounts a tmpfs and needs root (CI runs as root)");
  BOOST_REQUIRE_MESSAGE(
      ::mount("tmpfs", mount_point.c_str(), "tmpfs", 0, "size=1m") == 0,
      "mount -t tmpfs -o size=1m " << mount_point << ": " << std::strerror(errno));
  struct Unmount {
    fs::path path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{mount_point};

  auto args = args_in(mount_point);
  args.on_save_failure = "stop";  // the refusal itself is under test
  args.keep_last_n = 3;
  args.disk_margin_mb = 0.1;
  args.latest_pointer = false;
  DefaultCheckpointer checkpointer(args, Storage::local());
  // 256 KiB each: three fit in 1 MiB, but then the fourth needs retention to run before it.
  LogCapture log;
  for (int64_t i = 0; i < 6; ++i) {
    BOOST_TEST_CONTEXT("save " << i) {
      BOOST_REQUIRE_NO_THROW(checkpointer.save(make_checkpoint(i, {}, kElements), i));
      BOOST_CHECK(resumable_in(mount_point).size() <= 3u);
    }
  }
  BOOST_CHECK(log.contains("applying retention before the save"));
  BOOST_CHECK((resumable_in(mount_point) ==
               std::vector<std::string>{"model_3.pt", "model_4.pt", "model_5.pt"}));
  // A checkpoint larger than the disk: refused up front, nothing deleted, no temporary left.
  BOOST_CHECK_EXCEPTION(checkpointer.save(make_checkpoint(6, {}, 512 * 1024), 6), CheckpointError,
                        message_contains("not enough free space", "model_6.pt"));
  BOOST_CHECK((files_in(mount_point) ==
               std::vector<std::string>{"model_3.pt", "model_4.pt", "model_5.pt"}));
}

BOOST_AUTO_TEST_SUITE_END()
