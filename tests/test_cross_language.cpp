// A training run that crosses between Python and C++: tools/python/train_digits.py (Debian's
// python3-torch) and the sample trainer resume each other's checkpoints, optimizer state included,
// and the loss keeps falling from where the other left it.
#ifdef CKPT_SAMPLE_TRAINER

#include "test_sample_trainer_helpers.h"
#include "test_util.h"

#include <ckpt/checkpoint.h>
#include <ckpt/serialization.h>

#include <torch/torch.h>
#include <boost/test/unit_test.hpp>

#include <regex>
#include <string>
#include <vector>

using sample_trainer::test::quote;
using sample_trainer::test::RunResult;
using sample_trainer::test::TempDir;
namespace fs = std::filesystem;

namespace {

const std::string kTrainer = CKPT_SAMPLE_TRAINER;
constexpr int64_t kStepsPerEpoch = 45;  // ceil(1438 training examples / batch 32)

struct Epoch {
  int64_t epoch;
  double train_loss;
  double val_acc;
};

// The epoch lines both trainers log: "epoch=N train_loss=X val_loss=Y val_acc=Z".
std::vector<Epoch> epochs_of(const std::string& log) {
  static const std::regex line(R"(epoch=(\d+) train_loss=(\S+) val_loss=\S+ val_acc=(\S+))");
  std::vector<Epoch> epochs;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), line); it != std::sregex_iterator();
       ++it) {
    epochs.push_back({std::stoll((*it)[1]), std::stod((*it)[2]), std::stod((*it)[3])});
  }
  return epochs;
}

RunResult python_trainer(const TempDir& dir, const std::vector<std::string>& args) {
  std::string command = quote(ckpt::test::python()) + " " +
                        quote(std::string(CKPT_SOURCE_DIR) + "/tools/python/train_digits.py");
  for (const auto& arg : args) command += " " + quote(arg);
  RunResult r = sample_trainer::test::run_in(dir.path(), dir / "logs", command);
  BOOST_REQUIRE_MESSAGE(r.exit_code == 0, "python: exit " << r.exit_code << "\n" << r.out << r.err);
  return r;
}

RunResult cpp_trainer(const TempDir& dir, const std::vector<std::string>& args) {
  std::string command = quote(kTrainer);
  for (const auto& arg : args) command += " " + quote(arg);
  RunResult r = sample_trainer::test::run_in(dir.path(), dir / "logs", command);
  BOOST_REQUIRE_MESSAGE(r.exit_code == 0, "sample_trainer: exit " << r.exit_code << "\n"
                                                                  << r.out << r.err);
  return r;
}

std::vector<int64_t> numbers(const std::vector<Epoch>& epochs) {
  std::vector<int64_t> result;
  for (const auto& e : epochs) result.push_back(e.epoch);
  return result;
}

// A checkpoint whichever side wrote it: counters, Adam's step and the scheduler all at `steps`.
void check_counters(const fs::path& file, int64_t last_epoch, int64_t steps) {
  const ckpt::Checkpoint c = ckpt::load_checkpoint_file(file);
  BOOST_CHECK_EQUAL(c.trainer_state.at("last_epoch").toInt(), last_epoch);
  BOOST_CHECK_EQUAL(c.trainer_backend_state.at("global_step_completed").toInt(), steps);
  const auto optimizer =
      ckpt::StateDict::from_ivalue(c.trainer_state.at("optimizers").toListRef()[0]);
  const auto first = optimizer.at("state").toGenericDict().at(int64_t{0}).toGenericDict();
  BOOST_CHECK_EQUAL(first.at("step").toTensor().item<double>(), static_cast<double>(steps));
  const auto scheduler =
      ckpt::StateDict::from_ivalue(c.trainer_state.at("schedulers").toListRef()[0]);
  BOOST_CHECK_EQUAL(scheduler.at("last_epoch").toInt(), steps);
  BOOST_CHECK_EQUAL(c.module_interface_state.size(), 6u);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(cross_language)

BOOST_AUTO_TEST_CASE(cpp_resumes_a_python_checkpoint) {
  TempDir dir;
  const fs::path run = dir / "run";
  const RunResult py = python_trainer(dir, {"--epochs", "3", "--save-dir", run.string()});
  const auto before = epochs_of(py.out);
  BOOST_REQUIRE(numbers(before) == (std::vector<int64_t>{0, 1, 2}));
  check_counters(run / "model_2.pt", 2, 3 * kStepsPerEpoch);  // torch.save's file, read by ckpt

  const RunResult cpp =
      cpp_trainer(dir, {"--trainer.epochs", "6", "--chkp.load_dir", run.string(), "--chkp.save_dir",
                        run.string(), "--chkp.model_state_save_dir", run.string()});
  BOOST_CHECK_MESSAGE(cpp.out.find("resuming after epoch 2: epochs 3..5") != std::string::npos,
                      cpp.out);
  const auto after = epochs_of(cpp.out);
  BOOST_REQUIRE(numbers(after) == (std::vector<int64_t>{3, 4, 5}));
  // The loss continues from Python's, not from a fresh start (about 1.7 in epoch 0).
  BOOST_CHECK_LT(after.front().train_loss, before.back().train_loss);
  BOOST_CHECK_LT(after.back().train_loss, after.front().train_loss);
  BOOST_CHECK_GE(after.back().val_acc, 0.93);
  check_counters(run / "model_5.pt", 5, 6 * kStepsPerEpoch);
}

BOOST_AUTO_TEST_CASE(python_resumes_a_cpp_checkpoint) {
  TempDir dir;
  const fs::path run = dir / "run";
  const RunResult cpp = cpp_trainer(dir, {"--trainer.epochs", "3", "--chkp.save_dir", run.string(),
                                          "--chkp.model_state_save_dir", run.string()});
  const auto before = epochs_of(cpp.out);
  BOOST_REQUIRE(numbers(before) == (std::vector<int64_t>{0, 1, 2}));

  const RunResult py = python_trainer(
      dir, {"--epochs", "6", "--load-dir", run.string(), "--save-dir", run.string()});
  // optimizer.load_state_dict and the scheduler's took C++'s state: 135 steps, lr halved once.
  BOOST_CHECK_MESSAGE(
      py.out.find("resumed " + (run / "model_2.pt").string() +
                  ": last_epoch=2 global_step=135 lr=0.0015\n") != std::string::npos,
      py.out);
  const auto after = epochs_of(py.out);
  BOOST_REQUIRE(numbers(after) == (std::vector<int64_t>{3, 4, 5}));
  BOOST_CHECK_LT(after.front().train_loss, before.back().train_loss);
  BOOST_CHECK_LT(after.back().train_loss, after.front().train_loss);
  BOOST_CHECK_GE(after.back().val_acc, 0.93);
  // Adam's moments came along: Python's step counts continue C++'s, in a file ckpt reads back.
  check_counters(run / "model_5.pt", 5, 6 * kStepsPerEpoch);

  // And back to C++ once more.
  const RunResult again =
      cpp_trainer(dir, {"--trainer.epochs", "7", "--chkp.load_dir", run.string(), "--chkp.save_dir",
                        run.string(), "--chkp.model_state_save_dir", run.string()});
  const auto last = epochs_of(again.out);
  BOOST_REQUIRE(numbers(last) == (std::vector<int64_t>{6}));
  BOOST_CHECK_LT(last.front().train_loss, before.back().train_loss);
  check_counters(run / "model_6.pt", 6, 7 * kStepsPerEpoch);
}

BOOST_AUTO_TEST_SUITE_END()

#endif  // CKPT_SAMPLE_TRAINER
