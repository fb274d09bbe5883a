// Power loss at every point of a save sequence: LocalStorage's real commit protocol runs on the
// crash simulator (tests/crash_simulator.h), and every state a crash could leave is handed to a
// fresh DefaultCheckpointer, which must resume from the newest acknowledged checkpoint or a newer
// complete one, and never see a half-written file under a final name.

#include <ckpt/checkpoint_error.h>
#include <ckpt/default_checkpointer.h>
#include <ckpt/local_storage.h>
#include <ckpt/logger.h>
#include <ckpt/serialization.h>

#include "crash_simulator.h"

#include <torch/torch.h>
#include <boost/test/unit_test.hpp>

#include <iostream>

using namespace ckpt;
using namespace ckpt::test;

namespace {

const std::string kRoot = "/sim";

Checkpoint make_checkpoint(const CheckpointName& name, double val_loss) {
  Checkpoint checkpoint;
  const float value = static_cast<float>(name.index * 1000 + name.step.value_or(999));
  // Over 1 MiB, so that each file is written in several appends (small writes are gathered).
  checkpoint.module_interface_state.insert_or_assign("w", torch::full({300 * 1024}, value));
  checkpoint.module_interface_state.insert_or_assign("b", torch::full({16}, value));
  checkpoint.trainer_state.insert_or_assign("tag", name.file_name("model", "pt"));
  StateDict metrics;
  metrics.insert_or_assign("val_loss", val_loss);
  checkpoint.metadata.insert_or_assign("metrics", metrics.to_ivalue());
  return checkpoint;
}

DefaultCheckpointerArguments arguments(const std::string& dir, bool async) {
  DefaultCheckpointerArguments args;
  args.save_dir = dir;
  args.load_dir = dir;
  args.model_state_save_dir = "";
  args.keep_last_n = 2;
  args.save_top_k = 1;
  args.monitor = "val_loss";
  args.async = async;
  args.log_level = "off";  // thousands of crash states log thousands of expected warnings
  return args;
}

// What a save sequence did: every call below the storage, and when each save was acknowledged.
struct Recording {
  std::vector<SimulatedFileSystem::Op> log;
  // (number of calls made when the save was acknowledged, the checkpoint it acknowledged)
  std::vector<std::pair<std::size_t, CheckpointName>> acknowledged;
};

// Sync saves, a step checkpoint, the best pool, retention and the pointer, then async saves.
Recording record(
    const std::function<std::shared_ptr<PosixFileSystem>(std::shared_ptr<PosixFileSystem>)>& wrap =
        {}) {
  auto sim = std::make_shared<SimulatedFileSystem>(kRoot);
  auto storage = std::make_shared<LocalStorage>(wrap ? wrap(sim) : sim);
  Recording recording;
  const auto ack = [&](const CheckpointName& name) {
    recording.acknowledged.emplace_back(sim->ops(), name);
  };
  {
    DefaultCheckpointer checkpointer(arguments(kRoot + "/run", false), storage);
    const std::vector<std::pair<CheckpointName, double>> saves{{{0, std::nullopt}, 0.9},
                                                               {{1, 5}, 0.8},
                                                               {{1, std::nullopt}, 0.5},
                                                               {{2, std::nullopt}, 0.7},
                                                               {{3, std::nullopt}, 0.4}};
    for (const auto& [name, loss] : saves) {
      if (name.step) {
        TrainingProgress progress;
        progress.epoch = name.index;
        progress.global_step = *name.step;
        checkpointer.save_step(make_checkpoint(name, loss), progress, /*force=*/true);
      } else {
        checkpointer.save(make_checkpoint(name, loss), name.index);
      }
      ack(name);
    }
  }
  {
    DefaultCheckpointer checkpointer(arguments(kRoot + "/async", true), storage);
    for (int64_t index = 0; index < 4; ++index) {
      const CheckpointName name{index, std::nullopt};
      checkpointer.save(make_checkpoint(name, 1.0 / (index + 1)), index);
      // save() returned once the previous save was durable; this one is only staged.
      if (index > 0) ack({index - 1, std::nullopt});
    }
    checkpointer.wait();
    ack({3, std::nullopt});
  }
  recording.log = sim->log();
  return recording;
}

// The violations of one crash state, for the run in `dir`, given what was acknowledged there.
std::vector<std::string> check_state(std::shared_ptr<SimulatedFileSystem> state,
                                     const std::string& dir,
                                     const std::optional<CheckpointName>& acknowledged) {
  std::vector<std::string> violations;
  auto storage = std::make_shared<LocalStorage>(state);
  // Nothing under a final name is half-written.
  for (const auto& file : storage->list(dir, false)) {
    const std::string name = file.path.filename().string();
    const bool checkpoint =
        CheckpointName::parse(name, "model", "pt") || name.rfind("model_best_", 0) == 0;
    if (checkpoint) {
      try {
        verify_file(file.path, *storage);
      } catch (const CheckpointError& e) {
        violations.push_back("half-written file under a final name: " + std::string(e.what()));
      }
    } else if (name == "model_latest") {
      const std::string text = read_small_file(*storage, file.path);
      if (text.empty() || text.back() != '\n' ||
          !CheckpointName::parse(text.substr(0, text.size() - 1), "model", "pt")) {
        violations.push_back("torn latest pointer: '" + text + "'");
      }
    }
  }
  // A fresh checkpointer resumes, from the acknowledged checkpoint or a newer complete one.
  try {
    DefaultCheckpointer checkpointer(arguments(dir, false), storage);
    const Checkpoint loaded = checkpointer.load();
    if (loaded.empty()) {
      if (acknowledged) {
        violations.push_back("nothing to resume although " +
                             acknowledged->file_name("model", "pt") + " was acknowledged");
      }
      return violations;
    }
    const std::string tag = loaded.trainer_state.at("tag").toStringRef();
    const auto name = CheckpointName::parse(tag, "model", "pt");
    if (!name) {
      violations.push_back("resumed from an unexpected file " + tag);
    } else if (acknowledged && *name < *acknowledged) {
      violations.push_back("resumed from " + tag + ", older than the acknowledged " +
                           acknowledged->file_name("model", "pt"));
    }
    const auto expected = make_checkpoint(*name, 0).module_interface_state.at("w").toTensor();
    if (!torch::equal(loaded.module_interface_state.at("w").toTensor(), expected)) {
      violations.push_back("resumed weights of " + tag + " are not the ones saved");
    }
  } catch (const CheckpointError& e) {
    violations.push_back(std::string("resume failed: ") + e.what());
  }
  return violations;
}

struct Outcome {
  std::size_t states = 0;
  std::size_t points = 0;
  std::vector<std::string> violations;  // "after call N: ..."
};

// Every prefix of the recorded calls, every crash state of each, both runs; with `first_only`,
// stops after the first point that has violations (enough to show a checker can fail).
Outcome check_every_crash(const Recording& recording, bool first_only = false) {
  Outcome outcome;
  for (std::size_t n = 0; n <= recording.log.size(); ++n) {
    if (first_only && !outcome.violations.empty()) break;
    const auto at_n = SimulatedFileSystem::replay(kRoot, recording.log, n);
    std::map<std::string, std::optional<CheckpointName>> acknowledged;
    // The first five acknowledgements are the sync run's, the rest the async run's.
    for (std::size_t i = 0; i < recording.acknowledged.size(); ++i) {
      if (recording.acknowledged[i].first > n) continue;
      auto& newest = acknowledged[i < 5 ? "/run" : "/async"];
      const auto& name = recording.acknowledged[i].second;
      if (!newest || *newest < name) newest = name;
    }
    ++outcome.points;
    outcome.states += at_n->for_each_crash_state([&](std::shared_ptr<SimulatedFileSystem> state) {
      for (const std::string run : {"/run", "/async"}) {
        for (const auto& violation : check_state(state, kRoot + run, acknowledged[run])) {
          outcome.violations.push_back("crash after call " + std::to_string(n) + " in " + run +
                                       ": " + violation);
        }
      }
    });
  }
  set_log_level("info");
  return outcome;
}

std::string first_violations(const Outcome& outcome) {
  std::string text;
  for (std::size_t i = 0; i < outcome.violations.size() && i < 8; ++i) {
    text += "\n  " + outcome.violations[i];
  }
  return text;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(crash_consistency)

BOOST_AUTO_TEST_CASE(every_state_a_power_loss_can_leave_resumes_from_the_newest_acknowledged) {
  const Recording recording = record();
  BOOST_REQUIRE_GT(recording.log.size(), 100u);
  const Outcome outcome = check_every_crash(recording);
  std::cout << "crash_consistency: " << outcome.states << " crash states checked at "
            << outcome.points << " points of " << recording.log.size()
            << " recorded calls (sync and async saves, a step checkpoint, retention, the best "
               "pool, the latest pointer)"
            << std::endl;
  BOOST_TEST(outcome.states > outcome.points);
  BOOST_TEST(outcome.violations.empty(), outcome.violations.size()
                                             << " violations:" << first_violations(outcome));
}

BOOST_AUTO_TEST_CASE(a_writer_that_skips_the_file_fsync_is_caught) {
  const Outcome outcome = check_every_crash(record([](std::shared_ptr<PosixFileSystem> fs) {
                                              return std::make_shared<SkippingFsync>(
                                                  std::move(fs), SkippingFsync::file_fsync);
                                            }),
                                            /*first_only=*/true);
  std::cout << "crash_consistency: without file fsyncs, " << outcome.violations.size()
            << " violations in " << outcome.states << " crash states up to call "
            << outcome.points - 1 << first_violations(outcome) << std::endl;
  BOOST_TEST(!outcome.violations.empty());
  BOOST_TEST(std::any_of(outcome.violations.begin(), outcome.violations.end(), [](auto& v) {
    return v.find("half-written file under a final name") != std::string::npos;
  }));
}

BOOST_AUTO_TEST_CASE(a_writer_that_skips_the_directory_fsync_is_caught) {
  const Outcome outcome = check_every_crash(record([](std::shared_ptr<PosixFileSystem> fs) {
                                              return std::make_shared<SkippingFsync>(
                                                  std::move(fs), SkippingFsync::directory_fsync);
                                            }),
                                            /*first_only=*/true);
  std::cout << "crash_consistency: without directory fsyncs, " << outcome.violations.size()
            << " violations in " << outcome.states << " crash states up to call "
            << outcome.points - 1 << first_violations(outcome) << std::endl;
  BOOST_TEST(std::any_of(outcome.violations.begin(), outcome.violations.end(), [](auto& v) {
    return v.find("older than the acknowledged") != std::string::npos ||
           v.find("nothing to resume") != std::string::npos;
  }));
}

BOOST_AUTO_TEST_CASE(the_simulator_loses_what_was_not_synced_and_keeps_what_was) {
  auto sim = std::make_shared<SimulatedFileSystem>(kRoot);
  LocalStorage storage(sim);
  storage.create_directories(kRoot + "/d");
  save_text_file("durable\n", kRoot + "/d/a", storage);
  // Written below the storage: appended, never synced, its name never synced either.
  std::filesystem::path temp;
  sim->create_unique(kRoot + "/d", "loose", &temp)->append("xx", 2);
  std::size_t with_a = 0;
  std::size_t with_loose = 0;
  const std::size_t states = sim->for_each_crash_state([&](auto state) {
    LocalStorage crashed(state);
    if (crashed.stat(kRoot + "/d/a")) {
      ++with_a;
      BOOST_TEST(read_small_file(crashed, kRoot + "/d/a") == "durable\n");
    }
    if (const auto info = crashed.stat(temp)) {
      ++with_loose;
      BOOST_TEST(info->size <= 2u);
    }
  });
  BOOST_TEST(with_a == states);     // committed: in every state
  BOOST_TEST(with_loose > 0u);      // the unsynced entry may survive...
  BOOST_TEST(with_loose < states);  // ...or not
}

BOOST_AUTO_TEST_SUITE_END()
