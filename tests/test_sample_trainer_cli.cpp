// The sample_trainer executable: PyMarlin's checkpointing scenario, exact resume across processes,
// bad arguments, and the exported weights in Python.
#ifdef CKPT_SAMPLE_TRAINER

#include "test_sample_trainer_helpers.h"

#include <ckpt/checkpoint.h>
#include <ckpt/serialization.h>

#include <torch/torch.h>
#include <boost/test/unit_test.hpp>

#include <regex>
#include <string>
#include <vector>

using namespace sample_trainer::test;
namespace fs = std::filesystem;

namespace {

const std::string kTrainer = CKPT_SAMPLE_TRAINER;

// Runs sample_trainer with `args` (each quoted) in `cwd`.
RunResult trainer(const TempDir& dir, const fs::path& cwd, const std::vector<std::string>& args) {
  std::string command = quote(kTrainer);
  for (const auto& arg : args) command += " " + quote(arg);
  fs::create_directories(cwd);
  return run_in(cwd, dir / "logs", command);
}

void check_ok(const RunResult& r) {
  BOOST_REQUIRE_MESSAGE(r.exit_code == 0, "exit " << r.exit_code << "\nstdout:\n"
                                                  << r.out << "\nstderr:\n"
                                                  << r.err);
}

std::vector<std::string> names(std::initializer_list<std::string> list) { return list; }

std::vector<int64_t> epochs_run(const RunResult& r) {
  std::vector<int64_t> epochs;
  for (const auto& [epoch, metrics] : epoch_metrics(r.out)) epochs.push_back(epoch);
  return epochs;
}

void check_state_files_equal(const fs::path& a, const fs::path& b) {
  const ckpt::StateDict sa = ckpt::load_state_file(a);
  const ckpt::StateDict sb = ckpt::load_state_file(b);
  BOOST_REQUIRE(sa.keys() == sb.keys());
  for (const auto& [key, value] : sa) {
    BOOST_TEST_CONTEXT("key " << key) {
      BOOST_CHECK(torch::equal(value.toTensor(), sb.at(key).toTensor()));
    }
  }
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(sample_trainer_cli)

BOOST_AUTO_TEST_CASE(pymarlin_trainer_scenario) {
  // PyMarlin's test_trainer checkpointing scenario, through the real program.
  TempDir dir;
  const fs::path save = dir / "save";
  const fs::path models = dir / "models";
  const std::vector<std::string> common = {"--chkp.period",
                                           "1",
                                           "--chkp.file_prefix",
                                           "test",
                                           "--chkp.file_ext",
                                           "tar",
                                           "--chkp.save_dir",
                                           save.string(),
                                           "--chkp.model_state_save_dir",
                                           models.string(),
                                           "--trainer.batch_size",
                                           "128"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), common.begin(), common.end());
    return extra;
  };

  RunResult r = trainer(dir, dir / "work", with({"--trainer.epochs", "3"}));
  check_ok(r);
  BOOST_CHECK(files_in(save) == names({"test_0.tar", "test_1.tar", "test_2.tar", "test_latest"}));
  BOOST_CHECK(files_in(models) == names({"test_model_2.tar"}));
  BOOST_CHECK(epochs_run(r) == (std::vector<int64_t>{0, 1, 2}));
  BOOST_CHECK_MESSAGE(
      contains(r.out, "final weights exported to " + (models / "test_model_2.tar").string()),
      r.out);

  // No load_dir: starts fresh and overwrites 0..2.
  r = trainer(dir, dir / "work", with({"--trainer.epochs", "4"}));
  check_ok(r);
  BOOST_CHECK(files_in(save) ==
              names({"test_0.tar", "test_1.tar", "test_2.tar", "test_3.tar", "test_latest"}));
  BOOST_CHECK(files_in(models) == names({"test_model_2.tar", "test_model_3.tar"}));
  BOOST_CHECK(epochs_run(r) == (std::vector<int64_t>{0, 1, 2, 3}));

  // load_dir = save_dir: resumes after epoch 3, so exactly one epoch runs.
  r = trainer(dir, dir / "work", with({"--trainer.epochs", "5", "--chkp.load_dir", save.string()}));
  check_ok(r);
  BOOST_CHECK(epochs_run(r) == (std::vector<int64_t>{4}));
  BOOST_CHECK(contains(r.out, "resuming after epoch 3: epochs 4..4"));
  BOOST_CHECK(files_in(save) == names({"test_0.tar", "test_1.tar", "test_2.tar", "test_3.tar",
                                       "test_4.tar", "test_latest"}));
  BOOST_CHECK(files_in(models) ==
              names({"test_model_2.tar", "test_model_3.tar", "test_model_4.tar"}));
  BOOST_CHECK(files_in(dir / "work").empty());
  BOOST_CHECK(!fs::exists(dir / "work" / "checkpoints"));
}

BOOST_AUTO_TEST_CASE(checkpoint_false_writes_nothing_and_period_two_saves_expected_indexes) {
  TempDir dir;
  RunResult r =
      trainer(dir, dir / "off",
              {"--trainer.epochs", "2", "--trainer.batch_size", "128", "--chkp.checkpoint", "false",
               "--chkp.save_dir", (dir / "off" / "save").string()});
  check_ok(r);
  BOOST_CHECK(fs::is_empty(dir / "off"));  // not even the default ./checkpoints
  BOOST_CHECK(contains(r.out, "final weights not exported"));

  // Default directories (./checkpoints for both) and names, period 2 over epochs 0..3.
  r = trainer(dir, dir / "period",
              {"--trainer.epochs", "4", "--trainer.batch_size", "128", "--chkp.period", "2"});
  check_ok(r);
  BOOST_CHECK(
      files_in(dir / "period" / "checkpoints") ==
      names({"model_0.pt", "model_2.pt", "model_3.pt", "model_latest", "model_model_3.pt"}));
}

BOOST_AUTO_TEST_CASE(resume_in_a_new_process_is_exact) {
  TempDir dir;
  const std::vector<std::string> common = {"--trainer.batch_size", "64", "--trainer.seed", "3"};
  auto run = [&](const std::string& name, std::vector<std::string> extra) {
    extra.insert(extra.end(), common.begin(), common.end());
    extra.insert(extra.end(), {"--chkp.save_dir", (dir / name).string(),
                               "--chkp.model_state_save_dir", (dir / name).string()});
    RunResult r = trainer(dir, dir / "work", extra);
    check_ok(r);
    return r;
  };
  const RunResult straight = run("straight", {"--trainer.epochs", "6"});
  const RunResult first = run("split", {"--trainer.epochs", "3"});
  const RunResult second =
      run("split", {"--trainer.epochs", "6", "--chkp.load_dir", (dir / "split").string()});

  BOOST_CHECK(epochs_run(first) == (std::vector<int64_t>{0, 1, 2}));
  BOOST_CHECK(epochs_run(second) == (std::vector<int64_t>{3, 4, 5}));
  auto resumed = epoch_metrics(first.out);
  for (const auto& m : epoch_metrics(second.out)) resumed.push_back(m);
  const auto expected = epoch_metrics(straight.out);
  BOOST_REQUIRE_EQUAL(expected.size(), 6u);
  BOOST_CHECK(resumed == expected);
  for (size_t i = 0; i < std::min(resumed.size(), expected.size()); ++i) {
    BOOST_CHECK_EQUAL(resumed[i].second, expected[i].second);
  }

  check_state_files_equal(dir / "straight" / "model_model_5.pt",
                          dir / "split" / "model_model_5.pt");
  // The whole final checkpoint too: optimizer moments, scheduler, counters, generator state.
  // (The stored options differ, in save_dir and load_dir, and are compared apart.)
  auto a = ckpt::load_checkpoint_file(dir / "straight" / "model_5.pt");
  auto b = ckpt::load_checkpoint_file(dir / "split" / "model_5.pt");
  for (const auto& [key, value] : a.hyperparameters) {
    BOOST_TEST_CONTEXT(key) {
      const bool differs = !(value == b.hyperparameters.at(key));
      BOOST_CHECK_EQUAL(differs, key == "chkp.save_dir" || key == "chkp.model_state_save_dir" ||
                                     key == "chkp.load_dir");
    }
  }
  a.hyperparameters = b.hyperparameters = {};
  BOOST_CHECK(a == b);
}

// Async saves, with the copy in save() ("async") or staged in the background while the next
// forward and backward passes run ("staged").
BOOST_AUTO_TEST_CASE(async_saves_write_the_same_files_as_synchronous_ones) {
  TempDir dir;
  auto run = [&](const std::string& name, const std::string& async, const std::string& staged) {
    RunResult r =
        trainer(dir, dir / "work",
                {"--trainer.epochs", "4", "--chkp.async", async, "--chkp.stage_in_background",
                 staged, "--chkp.save_dir", (dir / name).string(), "--chkp.model_state_save_dir",
                 (dir / name).string()});
    check_ok(r);
    BOOST_CHECK_MESSAGE(r.out.find("checkpointing blocked training for") != std::string::npos,
                        r.out);
    return r;
  };
  const RunResult sync = run("sync", "false", "false");
  for (const std::string variant : {"async", "staged"}) {
    BOOST_TEST_CONTEXT(variant) {
      const RunResult async = run(variant, "true", variant == "staged" ? "true" : "false");
      BOOST_CHECK(epoch_metrics(async.out) == epoch_metrics(sync.out));
      // train() waited for the last background save: every file is there, complete, when it exits.
      BOOST_REQUIRE(files_in(dir / variant) == files_in(dir / "sync"));
      for (const auto& name : files_in(dir / "sync")) {
        BOOST_TEST_CONTEXT(name) {
          if (name == "model_latest" || name.rfind("model_model_", 0) == 0) {
            // The pointer, and the weights file (no stored options): byte for byte.
            BOOST_CHECK(read_text(dir / variant / name) == read_text(dir / "sync" / name));
            continue;
          }
          // Checkpoints store the options, which differ in chkp.async and the directories: the rest
          // is the same.
          auto a = ckpt::load_checkpoint_file(dir / variant / name);
          auto b = ckpt::load_checkpoint_file(dir / "sync" / name);
          BOOST_CHECK(a.hyperparameters.at("chkp.async").toBool());
          BOOST_CHECK(!b.hyperparameters.at("chkp.async").toBool());
          BOOST_CHECK_EQUAL(a.hyperparameters.at("chkp.stage_in_background").toBool(),
                            variant == "staged");
          a.hyperparameters = b.hyperparameters = {};
          BOOST_CHECK(a == b);
        }
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(resume_with_reset_optimizers_schedulers) {
  TempDir dir;
  const std::string save = (dir / "save").string();
  const std::vector<std::string> common = {
      "--trainer.batch_size", "128", "--chkp.save_dir", save, "--chkp.model_state_save_dir", save};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.end(), common.begin(), common.end());
    return extra;
  };
  check_ok(trainer(dir, dir / "work", with({"--trainer.epochs", "2"})));
  const RunResult r = trainer(dir, dir / "work",
                              with({"--trainer.epochs", "4", "--chkp.load_dir", save,
                                    "--trainer.reset_optimizers_schedulers", "true"}));
  check_ok(r);
  BOOST_CHECK(contains(r.out, "resetting optimizers and schedulers for the remaining 2 epochs"));
  BOOST_CHECK(epochs_run(r) == (std::vector<int64_t>{2, 3}));
  BOOST_CHECK(files_in(dir / "save") ==
              names({"model_0.pt", "model_1.pt", "model_2.pt", "model_3.pt", "model_latest",
                     "model_model_1.pt", "model_model_3.pt"}));
  const ckpt::Checkpoint last = ckpt::load_checkpoint_file(dir / "save" / "model_3.pt");
  const int64_t steps = 12;  // ceil(1438 / 128)
  BOOST_CHECK_EQUAL(last.trainer_backend_state.at("global_step_completed").toInt(), 4 * steps);
  const auto scheduler =
      ckpt::StateDict::from_ivalue(last.trainer_state.at("schedulers").toListRef()[0]);
  BOOST_CHECK_EQUAL(scheduler.at("last_epoch").toInt(), 2 * steps);  // fresh since the reset
  const auto optimizer =
      ckpt::StateDict::from_ivalue(last.trainer_state.at("optimizers").toListRef()[0]);
  const auto first_param = optimizer.at("state").toGenericDict().at(int64_t{0}).toGenericDict();
  BOOST_CHECK_EQUAL(first_param.at("step").toTensor().item<double>(), 2.0 * steps);
  BOOST_CHECK_EQUAL(ckpt::load_state_file(dir / "save" / "model_model_3.pt").size(), 6u);
}

BOOST_AUTO_TEST_CASE(config_file_and_precedence) {
  TempDir dir;
  const fs::path config = dir / "run.ini";
  write_text(config, "data = " CKPT_SOURCE_DIR
                     "/data/digits.csv.gz\n"
                     "[trainer]\nepochs = 2\nbatch_size = 128\n"
                     "[chkp]\nsave_dir = " +
                         (dir / "from_config").string() +
                         "\n"
                         "model_state_save_dir = " +
                         (dir / "from_config").string() +
                         "\n"
                         "file_prefix = cfg\n");
  // The command line beats the file: 3 epochs, prefix from the file, save_dir from the file.
  const RunResult r =
      trainer(dir, dir / "work", {"--config", config.string(), "--trainer.epochs", "3"});
  check_ok(r);
  BOOST_CHECK(epochs_run(r) == (std::vector<int64_t>{0, 1, 2}));
  BOOST_CHECK(files_in(dir / "from_config") ==
              names({"cfg_0.pt", "cfg_1.pt", "cfg_2.pt", "cfg_latest", "cfg_model_2.pt"}));
}

BOOST_AUTO_TEST_CASE(help_lists_every_option) {
  TempDir dir;
  const RunResult r = trainer(dir, dir / "work", {"--help"});
  check_ok(r);
  for (const char* flag : {"--config",
                           "--data",
                           "--trainer.epochs",
                           "--trainer.seed",
                           "--trainer.batch_size",
                           "--trainer.lr",
                           "--trainer.reset_optimizers_schedulers",
                           "--chkp.checkpoint",
                           "--chkp.delete_existing_checkpoints",
                           "--chkp.period",
                           "--chkp.save_dir",
                           "--chkp.model_state_save_dir",
                           "--chkp.load_dir",
                           "--chkp.load_filename",
                           "--chkp.file_prefix",
                           "--chkp.file_ext",
                           "--chkp.log_level",
                           "--chkp.every_n_train_steps",
                           "--chkp.train_time_interval",
                           "--chkp.save_on_signal",
                           "--chkp.keep_last_n",
                           "--chkp.save_top_k",
                           "--chkp.monitor",
                           "--chkp.mode",
                           "--chkp.latest_pointer",
                           "--chkp.save_weights_only",
                           "--chkp.strict_registered_state",
                           "--chkp.disk_margin_mb",
                           "--chkp.async"}) {
    BOOST_CHECK_MESSAGE(contains(r.out, flag), "--help does not mention " << flag);
  }
  BOOST_CHECK(fs::is_empty(dir / "work"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(sample_trainer_cli_errors)

BOOST_AUTO_TEST_CASE(bad_arguments_exit_2_with_one_line_and_touch_nothing) {
  TempDir dir;
  const fs::path work = dir / "work";
  const fs::path save = work / "save";
  // Existing checkpoints that delete_existing_checkpoints would remove if anything ran.
  check_ok(trainer(dir, work,
                   {"--trainer.epochs", "2", "--trainer.batch_size", "256", "--chkp.save_dir",
                    save.string(), "--chkp.model_state_save_dir", save.string()}));
  write_text(work / "a_file", "not a directory\n");
  write_text(work / "unknown.ini", "[trainer]\nbogus = 1\n");
  BOOST_REQUIRE(files_in(save) ==
                names({"model_0.pt", "model_1.pt", "model_latest", "model_model_1.pt"}));
  const Snapshot before = snapshot(work);

  const std::vector<std::string> destructive = {
      "--chkp.delete_existing_checkpoints", "true",       "--chkp.save_dir", save.string(),
      "--chkp.model_state_save_dir",        save.string()};
  struct Case {
    std::vector<std::string> args;
    std::vector<std::string> expected;  // parts of the one error line
  };
  const std::vector<Case> cases = {
      {{"--bogus", "1"}, {"unrecognised option '--bogus'"}},
      {{"--trainer.epochs", "ten"}, {"'ten'", "--trainer.epochs"}},
      {{"--trainer.epochs", "0"}, {"invalid epochs 0: must be >= 1 (--trainer.epochs)"}},
      {{"--trainer.lr=-1"}, {"invalid lr -1", "(--trainer.lr)"}},
      {{"--chkp.period", "0"}, {"invalid period 0: must be >= 1 (--chkp.period)"}},
      {{"--chkp.checkpoint", "maybe"}, {"'maybe'", "--chkp.checkpoint"}},
      {{"--chkp.log_level", "loud"}, {"invalid log_level 'loud'", "(--chkp.log_level)"}},
      {{"--chkp.stage_in_background", "true"},
       {"invalid stage_in_background true", "async is false", "(--chkp.stage_in_background)"}},
      {{"--model.hidden1", "0"}, {"invalid width 0: must be >= 1 (--model.hidden1)"}},
      {{"--chkp.save_dir", (work / "a_file").string()},
       {"invalid save_dir " + (work / "a_file").string() + ": exists and is not a directory"}},
      // A URL of a scheme without a storage: refused by name, no directory named "gs:" appears.
      {{"--chkp.save_dir", "gs://bucket/run"},
       {"invalid save_dir gs://bucket/run", "scheme 'gs'", "does not support",
        "(--chkp.save_dir)"}},
      {{"--chkp.load_dir", save.string(), "--chkp.load_filename", "model_9.pt"},
       {"invalid load_filename " + (save / "model_9.pt").string() + ": does not exist",
        "(--chkp.load_filename)"}},
      {{"--chkp.load_filename", "model_1.pt"},
       {"invalid load_filename 'model_1.pt'", "load_dir, which is unset",
        "(--chkp.load_filename)"}},
      {{"--chkp.load_dir", (work / "a_file").string()},
       {"load_dir " + (work / "a_file").string() + " is not a directory"}},
      {{"--data", (work / "missing.csv.gz").string()},
       {"cannot open data file " + (work / "missing.csv.gz").string(), "(--data)"}},
      {{"--config", (work / "missing.ini").string()},
       {"cannot read --config file " + (work / "missing.ini").string()}},
      {{"--config", (work / "unknown.ini").string()},
       {"unrecognised option 'trainer.bogus'", (work / "unknown.ini").string()}},
      {{"stray"}, {"too many positional options"}},
  };
  for (const Case& c : cases) {
    // The case's flags, plus the destructive ones it does not set itself (a flag given twice is an
    // error of its own).
    std::vector<std::string> args = c.args;
    for (size_t i = 0; i < destructive.size(); i += 2) {
      if (std::find(c.args.begin(), c.args.end(), destructive[i]) == c.args.end()) {
        args.push_back(destructive[i]);
        args.push_back(destructive[i + 1]);
      }
    }
    BOOST_TEST_CONTEXT("args: " << c.args.front() << (c.args.size() > 1 ? " " + c.args[1] : "")) {
      const RunResult r = trainer(dir, work, args);
      BOOST_CHECK_EQUAL(r.exit_code, 2);
      const auto err = lines_of(r.err);
      BOOST_CHECK_EQUAL(err.size(), 1u);
      BOOST_CHECK_MESSAGE(r.err.rfind("sample_trainer: error: ", 0) == 0, r.err);
      for (const auto& part : c.expected) {
        BOOST_CHECK_MESSAGE(contains(r.err, part), "'" << part << "' not in: " << r.err);
      }
      BOOST_CHECK_MESSAGE(!contains(r.err, "Exception raised from"), "stack trace: " << r.err);
      BOOST_CHECK(snapshot(work) == before);
    }
  }
}

BOOST_AUTO_TEST_CASE(failure_after_arguments_exits_1) {
  // A checkpoint from a different model: the arguments are fine, loading fails.
  TempDir dir;
  const fs::path save = dir / "save";
  fs::create_directories(save);
  ckpt::Checkpoint foreign;
  foreign.module_interface_state.insert_or_assign("0.weight", torch::zeros({3, 3}));
  ckpt::save_checkpoint_file(foreign, save / "model_0.pt");
  const RunResult r = trainer(dir, dir / "work",
                              {"--chkp.load_dir", save.string(), "--chkp.save_dir", save.string()});
  BOOST_CHECK_EQUAL(r.exit_code, 1);
  BOOST_CHECK_MESSAGE(r.err.rfind("sample_trainer: error: cannot load module state", 0) == 0,
                      r.err);
  BOOST_CHECK_EQUAL(lines_of(r.err).size(), 1u);
  BOOST_CHECK(files_in(save) == names({"model_0.pt"}));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(sample_trainer_python)

BOOST_AUTO_TEST_CASE(exported_weights_load_in_python_with_the_same_accuracy) {
  TempDir dir;
  const std::string python = require_python_with_torch(dir.path());
  const fs::path save = dir / "save";
  const RunResult r =
      trainer(dir, dir / "work",
              {"--trainer.epochs", "3", "--trainer.batch_size", "64", "--chkp.save_dir",
               save.string(), "--chkp.model_state_save_dir", save.string()});
  check_ok(r);
  const auto metrics = epoch_metrics(r.out);
  BOOST_REQUIRE_EQUAL(metrics.size(), 3u);
  std::smatch match;
  const std::string last = metrics.back().second;
  BOOST_REQUIRE(std::regex_search(last, match, std::regex(R"(\((\d+/\d+)\))")));
  const std::string cpp_accuracy = match[1];

  const RunResult py =
      run_in(dir.path(), dir / "logs",
             quote(python) + " " + quote(CKPT_SOURCE_DIR "/tests/sample_trainer_check_model.py") +
                 " " + quote((save / "model_model_2.pt").string()) + " " +
                 quote(CKPT_SOURCE_DIR "/data/digits.csv.gz") + " 0 " +
                 quote((save / "model_2.pt").string()));
  BOOST_REQUIRE_MESSAGE(py.exit_code == 0, "python failed:\n" << py.out << py.err);
  BOOST_CHECK_MESSAGE(contains(py.out, "accuracy " + cpp_accuracy + "\n"), "C++ " << cpp_accuracy
                                                                                  << " vs Python:\n"
                                                                                  << py.out);
  BOOST_CHECK_MESSAGE(contains(py.out, "checkpoint loads into torch.optim.Adam and StepLR\n"),
                      py.out);
}

BOOST_AUTO_TEST_SUITE_END()

#endif  // CKPT_SAMPLE_TRAINER
