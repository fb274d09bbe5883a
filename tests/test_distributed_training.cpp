// Issue 8 through the sample trainer: two ranks on loopback (the --dist.nproc launcher, Gloo),
// identical replicas, an exact resume after SIGKILL, a resume with one rank, a failed save and a
// stuck rank that stop every rank, and a single writer, checked from the system calls (strace).
#ifdef CKPT_SAMPLE_TRAINER

#include "small_disk.h"
#include "test_sample_trainer_helpers.h"

#include <sample_trainer/distributed_data_parallel.h>

#include <ckpt/serialization.h>
#include <ckpt/state_dict.h>

#include <spdlog/fmt/fmt.h>
#include <torch/torch.h>
#include <boost/test/unit_test.hpp>

#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace fs = std::filesystem;
using namespace sample_trainer::test;

namespace {

const std::string kTrainer = CKPT_SAMPLE_TRAINER;
using Clock = std::chrono::steady_clock;

std::string command_line(const std::vector<std::string>& args) {
  std::string command = quote(kTrainer);
  for (const auto& arg : args) command += " " + quote(arg);
  return command;
}

// Two ranks, a generous timeout, checkpoints and weights in `ck`, plus `extra`.
std::vector<std::string> two_ranks(int epochs, std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"--dist.nproc",
                                "2",
                                "--dist.timeout",
                                "120",
                                "--trainer.epochs",
                                std::to_string(epochs),
                                "--chkp.save_dir",
                                "ck",
                                "--chkp.model_state_save_dir",
                                "ck"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// Starts `command` (quoted) in its own process group (so the test can kill every rank at once);
// stdout and stderr go to out.txt and err.txt in `cwd`.
pid_t start_command(const fs::path& cwd, const std::string& command_text) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    const std::string command = "cd " + quote(cwd.string()) + " && exec " + command_text +
                                " > out.txt 2> err.txt < /dev/null";
    ::execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::setpgid(pid, pid);
  return pid;
}

// The launcher with `args`, as start_command.
pid_t start(const fs::path& cwd, const std::vector<std::string>& args) {
  return start_command(cwd, command_line(args));
}

int exit_code_of(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void wait_for(const fs::path& path) {
  const auto deadline = Clock::now() + std::chrono::minutes(5);
  while (!fs::exists(path)) {
    BOOST_REQUIRE_MESSAGE(Clock::now() < deadline, "no " << path);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

// rank -> pid, from the launcher's log.
std::map<int, pid_t> rank_pids(const std::string& log) {
  static const std::regex line(R"(launcher: started rank (\d+) of \d+ \(pid (\d+)\))");
  std::map<int, pid_t> pids;
  for (const auto& text : lines_of(log)) {
    std::smatch m;
    if (std::regex_search(text, m, line)) pids[std::stoi(m[1])] = std::stoi(m[2]);
  }
  return pids;
}

// rank -> the parameter digest it logged after `epoch`.
std::map<int, std::string> digests_after(const std::string& log, int epoch) {
  static const std::regex line(R"(rank (\d+): parameter digest after epoch (\d+): ([0-9a-f]{16}))");
  std::map<int, std::string> digests;
  for (const auto& text : lines_of(log)) {
    std::smatch m;
    if (std::regex_search(text, m, line) && std::stoi(m[2]) == epoch) {
      digests[std::stoi(m[1])] = m[3];
    }
  }
  return digests;
}

std::string hex(uint64_t value) { return fmt::format("{:016x}", value); }

void check_states_bitwise_equal(const ckpt::StateDict& a, const ckpt::StateDict& b) {
  BOOST_REQUIRE(a.keys() == b.keys());
  BOOST_CHECK_EQUAL(sample_trainer::state_digest(a), sample_trainer::state_digest(b));
  for (const auto& [key, value] : a) {
    BOOST_TEST_CONTEXT("key " << key) {
      BOOST_REQUIRE(value.isTensor());
      const at::Tensor x = value.toTensor().contiguous();
      const at::Tensor y = b.at(key).toTensor().contiguous();
      BOOST_REQUIRE(x.nbytes() == y.nbytes());
      BOOST_CHECK(std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()) == 0);
    }
  }
}

// Every rank's trainer_backend_state in a checkpoint written by the distributed checkpointer.
std::vector<ckpt::StateDict> rank_states(const fs::path& checkpoint) {
  const ckpt::Checkpoint c = ckpt::load_checkpoint_file(checkpoint);
  std::vector<ckpt::StateDict> states;
  for (const auto& s : c.trainer_backend_state.at("ckpt_rank_states").toListRef()) {
    states.push_back(ckpt::StateDict::from_ivalue(s));
  }
  return states;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(distributed_training)

BOOST_AUTO_TEST_CASE(two_ranks_end_four_epochs_with_bitwise_equal_parameters) {
  TempDir dir;
  const RunResult r = run_in(dir.path(), dir / "logs", command_line(two_ranks(4)));
  BOOST_REQUIRE_MESSAGE(r.exit_code == 0, r.err);
  // Each rank logged the digest of its own parameters after every epoch.
  const auto first = digests_after(r.out, 0);
  const auto last = digests_after(r.out, 3);
  BOOST_REQUIRE_EQUAL(last.size(), 2u);
  BOOST_REQUIRE_EQUAL(first.size(), 2u);
  BOOST_CHECK_EQUAL(last.at(0), last.at(1));
  BOOST_CHECK_NE(first.at(0), last.at(0));  // the digest follows the parameters
  // ... and it is the digest of the exported weights, computed here from the file.
  const ckpt::StateDict weights = ckpt::load_state_file(dir / "ck" / "model_model_3.pt");
  BOOST_CHECK_EQUAL(hex(sample_trainer::state_digest(weights)), last.at(1));
  // Both ranks logged the same metrics for every epoch.
  static const std::regex metrics(
      R"(\[sample_trainer rank (\d)\] \[info\] (epoch=\d+ \S+ \S+ \S+ \(\d+/\d+\)))");
  std::map<int, std::vector<std::string>> by_rank;
  for (const auto& line : lines_of(r.out)) {
    std::smatch m;
    if (std::regex_search(line, m, metrics)) by_rank[std::stoi(m[1])].push_back(m[2]);
  }
  BOOST_CHECK_EQUAL(by_rank[0].size(), 4u);
  BOOST_CHECK(by_rank[0] == by_rank[1]);
  // The checkpoint holds both ranks' states; their random generators differ (dropout per rank).
  const auto states = rank_states(dir / "ck" / "model_3.pt");
  BOOST_REQUIRE_EQUAL(states.size(), 2u);
  BOOST_CHECK_EQUAL(states[0].at("rank").toInt(), 0);
  BOOST_CHECK_EQUAL(states[1].at("rank").toInt(), 1);
  BOOST_CHECK(
      !torch::equal(states[0].at("rng_state").toTensor(), states[1].at("rng_state").toTensor()));
  BOOST_CHECK_EQUAL(
      ckpt::load_checkpoint_file(dir / "ck" / "model_3.pt").metadata.at("world_size").toInt(), 2);
}

// The killed run saves asynchronously, copy included (ranks train on while rank 0 writes); the
// reference saves synchronously: an exact resume must not depend on how the files were written.
BOOST_AUTO_TEST_CASE(
    killed_async_after_two_epochs_two_ranks_resume_to_the_uninterrupted_sync_result) {
  // Mid-epoch checkpoints too, so that the kill may land anywhere.
  const std::vector<std::string> policy{"--chkp.every_n_train_steps", "5"};
  const std::vector<std::string> async_policy{
      "--chkp.every_n_train_steps", "5",   "--chkp.async", "true",
      "--chkp.stage_in_background", "true"};
  TempDir reference;
  const RunResult full =
      run_in(reference.path(), reference / "logs", command_line(two_ranks(4, policy)));
  BOOST_REQUIRE_MESSAGE(full.exit_code == 0, full.err);

  TempDir dir;
  const pid_t pid = start(dir.path(), two_ranks(4, async_policy));
  wait_for(dir / "ck" / "model_1.pt");
  ::kill(-pid, SIGKILL);  // the launcher and both ranks
  BOOST_CHECK_EQUAL(exit_code_of(pid), 128 + SIGKILL);
  BOOST_REQUIRE_MESSAGE(!fs::exists(dir / "ck" / "model_model_3.pt"),
                        "the run finished before it was killed");
  BOOST_REQUIRE(!fs::exists(dir / "ck" / "model_3.pt"));

  const RunResult resumed = run_in(
      dir.path(), dir / "logs",
      command_line(two_ranks(4, {"--chkp.every_n_train_steps", "5", "--chkp.async", "true",
                                 "--chkp.stage_in_background", "true", "--chkp.load_dir", "ck"})));
  BOOST_REQUIRE_MESSAGE(resumed.exit_code == 0, resumed.err);
  BOOST_CHECK(resumed.out.find("resuming after epoch") != std::string::npos);
  BOOST_CHECK(resumed.out.find("checkpointing blocked training for") != std::string::npos);
  check_states_bitwise_equal(ckpt::load_state_file(dir / "ck" / "model_model_3.pt"),
                             ckpt::load_state_file(reference / "ck" / "model_model_3.pt"));
  // Each rank's random generator and position came back exactly: the final per-rank states match.
  const auto a = rank_states(dir / "ck" / "model_3.pt");
  const auto b = rank_states(reference / "ck" / "model_3.pt");
  BOOST_REQUIRE_EQUAL(a.size(), 2u);
  BOOST_REQUIRE_EQUAL(b.size(), 2u);
  for (size_t r = 0; r < 2; ++r) {
    BOOST_TEST_CONTEXT("rank " << r) {
      BOOST_CHECK(ckpt::deep_equal(a[r].to_ivalue(), b[r].to_ivalue()));
    }
  }
}

BOOST_AUTO_TEST_CASE(sigterm_stops_both_ranks_at_the_same_step_and_the_resume_is_exact) {
  TempDir reference;
  const RunResult full = run_in(reference.path(), reference / "logs", command_line(two_ranks(4)));
  BOOST_REQUIRE_MESSAGE(full.exit_code == 0, full.err);

  TempDir dir;
  const pid_t pid = start(dir.path(), two_ranks(4));
  wait_for(dir / "ck" / "model_0.pt");
  ::kill(pid, SIGTERM);  // the launcher forwards it to both ranks
  BOOST_REQUIRE_EQUAL(exit_code_of(pid), 3);
  const std::string err = read_text(dir / "err.txt");
  BOOST_CHECK_MESSAGE(err.find("error") == std::string::npos, err);
  // Both ranks stopped after the same step, and rank 0 saved that position.
  static const std::regex stopped(R"(sample_trainer: stopped by \S+ after step (\d+))");
  std::vector<std::string> steps;
  for (const auto& line : lines_of(err)) {
    std::smatch m;
    if (std::regex_search(line, m, stopped)) steps.push_back(m[1]);
  }
  BOOST_REQUIRE_EQUAL(steps.size(), 2u);
  BOOST_CHECK_EQUAL(steps[0], steps[1]);

  const RunResult resumed =
      run_in(dir.path(), dir / "logs", command_line(two_ranks(4, {"--chkp.load_dir", "ck"})));
  BOOST_REQUIRE_MESSAGE(resumed.exit_code == 0, resumed.err);
  check_states_bitwise_equal(ckpt::load_state_file(dir / "ck" / "model_model_3.pt"),
                             ckpt::load_state_file(reference / "ck" / "model_model_3.pt"));
}

BOOST_AUTO_TEST_CASE(one_rank_resumes_a_two_rank_checkpoint_with_a_warning) {
  TempDir dir;
  const RunResult two = run_in(dir.path(), dir / "logs",
                               command_line(two_ranks(2, {"--chkp.every_n_train_steps", "5"})));
  BOOST_REQUIRE_MESSAGE(two.exit_code == 0, two.err);

  // Between epochs.
  const RunResult one =
      run_in(dir.path(), dir / "logs",
             command_line({"--dist.nproc", "1", "--dist.timeout", "120", "--trainer.epochs", "4",
                           "--chkp.load_dir", "ck", "--chkp.save_dir", "ck1",
                           "--chkp.model_state_save_dir", "ck1"}));
  BOOST_REQUIRE_MESSAGE(one.exit_code == 0, one.err);
  BOOST_CHECK(one.out.find("the checkpoint was saved by 2 ranks and training resumes with 1") !=
              std::string::npos);
  BOOST_CHECK(one.out.find("resuming after epoch 1: epochs 2..3") != std::string::npos);
  for (const std::string name : {"model_2.pt", "model_3.pt", "model_model_3.pt"}) {
    BOOST_TEST_CONTEXT(name) { BOOST_CHECK_NO_THROW(ckpt::verify_file(dir / "ck1" / name)); }
  }
  const auto states = rank_states(dir / "ck1" / "model_3.pt");
  BOOST_REQUIRE_EQUAL(states.size(), 1u);
  BOOST_CHECK_EQUAL(states[0].at("world_size").toInt(), 1);
  BOOST_CHECK_EQUAL(states[0].at("global_step_completed").toInt(), 2 * 23 + 2 * 45);

  // In the middle of an epoch: the position is re-derived in examples (step 40 of the two-rank
  // run is 17 steps of 2 x 32 examples into epoch 1).
  const RunResult middle =
      run_in(dir.path(), dir / "logs",
             command_line({"--dist.nproc", "1", "--dist.timeout", "120", "--trainer.epochs", "2",
                           "--chkp.load_dir", "ck", "--chkp.load_filename", "model_1_step_40.pt",
                           "--chkp.save_dir", "ck2", "--chkp.model_state_save_dir", "ck2"}));
  BOOST_REQUIRE_MESSAGE(middle.exit_code == 0, middle.err);
  BOOST_CHECK(middle.out.find("continuing epoch 1 at example 1088 of 1438") != std::string::npos);
  BOOST_CHECK_NO_THROW(ckpt::verify_file(dir / "ck2" / "model_1.pt"));

  // A single process (no --dist) reads it too, from rank 0's state.
  const RunResult single =
      run_in(dir.path(), dir / "logs",
             command_line({"--trainer.epochs", "3", "--chkp.load_dir", "ck", "--chkp.save_dir",
                           "ck3", "--chkp.model_state_save_dir", "ck3"}));
  BOOST_REQUIRE_MESSAGE(single.exit_code == 0, single.err);
  BOOST_CHECK_NO_THROW(ckpt::verify_file(dir / "ck3" / "model_model_2.pt"));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(distributed_failures)

// With on_save_failure stop, the first failure stops every rank.
BOOST_AUTO_TEST_CASE(a_failed_save_on_rank_0_stops_both_ranks_with_its_reason) {
  TempDir dir;
  const double timeout = 60;
  const auto begin = Clock::now();
  // A real refusal on rank 0 (the disk pre-flight), not a mock: no disk has this much room.
  const RunResult r =
      run_in(dir.path(), dir / "logs",
             command_line({"--dist.nproc", "2", "--dist.timeout", "60", "--trainer.epochs", "4",
                           "--chkp.save_dir", "ck", "--chkp.disk_margin_mb", "1000000000",
                           "--chkp.on_save_failure", "stop"}));
  const double seconds = std::chrono::duration<double>(Clock::now() - begin).count();
  BOOST_CHECK_EQUAL(r.exit_code, 1);
  BOOST_CHECK_LT(seconds, timeout);
  const auto pids = rank_pids(r.out);
  BOOST_REQUIRE_EQUAL(pids.size(), 2u);
  for (const auto& [rank, pid] : pids) {
    BOOST_TEST_CONTEXT("rank " << rank) {
      BOOST_CHECK(r.out.find("launcher: rank " + std::to_string(rank) + " (pid " +
                             std::to_string(pid) + ") exited with code 1") != std::string::npos);
    }
  }
  // Both say why: rank 0 its own error, rank 1 rank 0's.
  BOOST_CHECK(
      r.err.find("sample_trainer: error: rank 0: not enough free space to save ck/model_0.pt") !=
      std::string::npos);
  BOOST_CHECK(r.err.find("sample_trainer: error: rank 1: saving checkpoint 0 failed on rank 0: not "
                         "enough free space to save ck/model_0.pt") != std::string::npos);
  BOOST_CHECK(files_in(dir / "ck").empty());
}

// The same refusal in background saves, under the default on_save_failure continue: the ranks
// train on through the first two failures and both stop at the third, hearing of it at the next
// point where they meet for checkpointing (the step-due broadcast after the next step).
BOOST_AUTO_TEST_CASE(failed_background_saves_on_rank_0_stop_both_ranks_at_the_limit) {
  TempDir dir;
  const RunResult r =
      run_in(dir.path(), dir / "logs",
             command_line({"--dist.nproc", "2", "--dist.timeout", "60", "--trainer.epochs", "6",
                           "--chkp.save_dir", "ck", "--chkp.disk_margin_mb", "1000000000",
                           "--chkp.async", "true", "--chkp.stage_in_background", "true"}));
  BOOST_CHECK_EQUAL(r.exit_code, 1);
  BOOST_CHECK_MESSAGE(r.err.find("sample_trainer: error: rank 0: stopping training: 3 saves failed "
                                 "in a row (max_save_failures 3); the last durable checkpoint is "
                                 "none yet in this run; the latest failure: saving checkpoint "
                                 "ck/model_2.pt: not enough free space to save ck/model_2.pt") !=
                          std::string::npos,
                      r.err);
  static const std::regex rank1(
      R"(sample_trainer: error: rank 1: .* failed on rank 0: stopping training: 3 saves failed in a row)");
  BOOST_CHECK_MESSAGE(std::regex_search(r.err, rank1), r.err);
  // Neither rank finished training: no final weights, no later checkpoint.
  BOOST_CHECK(r.out.find("done:") == std::string::npos);
  BOOST_CHECK(files_in(dir / "ck").empty());
}

// Rank 0's disk is full when training starts and is freed once a failed save has been logged:
// both ranks ride the failures out together (they agree on every save's outcome), both finish
// with exit 0, and both report the failed saves. Freed at any point, the run ends the same way:
// the forced final save is retried until it lands.
BOOST_AUTO_TEST_CASE(both_ranks_ride_out_a_full_disk_on_rank_0) {
  TempDir dir;
  const auto disk = dir / "ck";
  ckpt::test::SmallDisk small_disk(disk, "4m");
  small_disk.fill();
  const pid_t pid = start(dir.path(), two_ranks(3, {"--chkp.disk_margin_mb", "0",
                                                    "--chkp.max_save_failures", "1000"}));
  const auto deadline = Clock::now() + std::chrono::minutes(5);
  while (read_text(dir / "out.txt").find("training goes on") == std::string::npos &&
         read_text(dir / "err.txt").find("training goes on") == std::string::npos) {
    BOOST_REQUIRE_MESSAGE(Clock::now() < deadline, "no failed save logged");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  small_disk.free();
  const int exit_code = exit_code_of(pid);
  const std::string out = read_text(dir / "out.txt"), err = read_text(dir / "err.txt");
  BOOST_TEST(exit_code == 0, out << err);
  static const std::regex summary(R"(rank (\d)\] \[\w+\] saves: ([1-9]\d*) failed and ridden out)");
  std::set<std::string> ranks;
  std::set<std::string> counts;
  for (const auto& text : lines_of(out + err)) {
    std::smatch m;
    if (std::regex_search(text, m, summary)) {
      ranks.insert(m[1]);
      counts.insert(m[2]);
    }
  }
  BOOST_TEST(ranks == (std::set<std::string>{"0", "1"}), out << err);
  BOOST_TEST(counts.size() == 1u, out << err);  // the same figure on both ranks
  ckpt::verify_file(disk / "model_2.pt");
  ckpt::verify_file(disk / "model_model_2.pt");
}

BOOST_AUTO_TEST_CASE(a_stuck_rank_0_does_not_hang_rank_1) {
  TempDir dir;
  const pid_t launcher = start(dir.path(), {"--dist.nproc", "2", "--dist.timeout", "10",
                                            "--trainer.epochs", "1000", "--chkp.save_dir", "ck"});
  wait_for(dir / "ck" / "model_0.pt");
  const auto pids = rank_pids(read_text(dir / "out.txt"));
  BOOST_REQUIRE_EQUAL(pids.size(), 2u);
  const auto stopped = Clock::now();
  ::kill(pids.at(0), SIGSTOP);
  // Rank 1 gives up on its own after the timeout; the launcher then ends the stopped rank 0.
  std::string err;
  while (err.find("sample_trainer: error: rank 1:") == std::string::npos) {
    BOOST_REQUIRE_MESSAGE(Clock::now() - stopped < std::chrono::seconds(90), "rank 1 hangs");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    err = read_text(dir / "err.txt");
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - stopped).count();
  BOOST_TEST_MESSAGE("rank 1 after " << seconds << " s: " << err);
  BOOST_CHECK_GE(seconds, 9.5);
  BOOST_CHECK_LT(seconds, 40);
  // Stopped in a step or in a save, rank 1 says it timed out and which flag sets the timeout.
  std::string lowered = err;
  std::transform(lowered.begin(), lowered.end(), lowered.begin(), ::tolower);
  BOOST_CHECK_MESSAGE(lowered.find("timed out") != std::string::npos, err);
  BOOST_CHECK_MESSAGE(err.find("--dist.timeout") != std::string::npos, err);
  BOOST_CHECK_NE(exit_code_of(launcher), 0);
  BOOST_CHECK(::kill(pids.at(0), 0) != 0);  // rank 0 is gone too
}

BOOST_AUTO_TEST_CASE(only_rank_0_ever_writes_or_deletes_in_the_checkpoint_directory) {
  TempDir dir;
  const fs::path ck = dir / "ck";
  // Old checkpoints for delete_existing_checkpoints to delete, from an earlier single process.
  const RunResult old =
      run_in(dir.path(), dir / "logs",
             command_line({"--trainer.epochs", "2", "--chkp.save_dir", ck.string(),
                           "--chkp.model_state_save_dir", ck.string()}));
  BOOST_REQUIRE_MESSAGE(old.exit_code == 0, old.err);
  BOOST_REQUIRE(fs::exists(ck / "model_1.pt"));

  // Every file-changing system call of the launcher and both ranks, as the kernel saw them.
  const RunResult r = run_in(
      dir.path(), dir / "logs",
      "strace -f -qq -o trace.txt -e trace=open,openat,creat,rename,renameat,renameat2,unlink,"
      "unlinkat,mkdir,mkdirat,rmdir,truncate,execve " +
          command_line({"--dist.nproc", "2", "--dist.timeout", "120", "--trainer.epochs", "3",
                        "--chkp.save_dir", ck.string(), "--chkp.model_state_save_dir", ck.string(),
                        "--chkp.delete_existing_checkpoints", "true", "--chkp.keep_last_n", "1",
                        "--chkp.every_n_train_steps", "10"}));
  BOOST_REQUIRE_MESSAGE(r.exit_code == 0, "strace or the run failed: " << r.err);
  const auto pids = rank_pids(r.out);
  BOOST_REQUIRE_EQUAL(pids.size(), 2u);

  const std::string inside = "\"" + ck.string() + "/";
  std::map<pid_t, std::map<std::string, int>> changes;  // pid -> call -> count
  std::set<pid_t> traced;
  static const std::regex call(R"(^(\d+) +(\w+)\()");
  for (const auto& line : lines_of(read_text(dir / "trace.txt"))) {
    std::smatch m;
    if (!std::regex_search(line, m, call)) continue;
    const pid_t pid = std::stoi(m[1]);
    const std::string name = m[2];
    traced.insert(pid);
    if (line.find(inside) == std::string::npos &&
        line.find("\"" + ck.string() + "\"") == std::string::npos) {
      continue;
    }
    const bool opens = name == "open" || name == "openat";
    const bool writes = !opens || line.find("O_WRONLY") != std::string::npos ||
                        line.find("O_RDWR") != std::string::npos ||
                        line.find("O_CREAT") != std::string::npos ||
                        line.find("O_TRUNC") != std::string::npos;
    if (name == "execve") continue;
    if (writes) ++changes[pid][name];
  }
  // Both ranks ran under the trace, and only rank 0 changed anything in the directory.
  BOOST_CHECK(traced.count(pids.at(0)) == 1);
  BOOST_CHECK(traced.count(pids.at(1)) == 1);
  BOOST_REQUIRE_EQUAL(changes.size(), 1u);
  BOOST_CHECK_EQUAL(changes.begin()->first, pids.at(0));
  // Not vacuous: it created, renamed and deleted files (the old checkpoints, then retention).
  const auto& calls = changes.begin()->second;
  const auto count = [&](std::initializer_list<const char*> names) {
    int n = 0;
    for (const char* name : names) n += calls.count(name) ? calls.at(name) : 0;
    return n;
  };
  BOOST_CHECK_GE(count({"rename", "renameat", "renameat2"}), 4);
  BOOST_CHECK_GE(count({"unlink", "unlinkat"}), 3);
  BOOST_CHECK_GE(count({"open", "openat", "creat"}), 4);
  // What is left: the newest checkpoint, the pointer and the weights.
  BOOST_CHECK(files_in(ck) ==
              (std::vector<std::string>{"model_2.pt", "model_latest", "model_model_2.pt"}));
}

BOOST_AUTO_TEST_SUITE_END()

// ---- two machines: two network namespaces joined by a veth pair ----

namespace {

// Runs a command of the test's own plumbing; a failure fails the test with the command.
void run_or_fail(const std::string& command) {
  const int status = std::system((command + " 2>&1").c_str());
  BOOST_REQUIRE_MESSAGE(status == 0, "failed (status " << status << "): " << command);
}

// Two "machines" on this one: network namespaces, each with its own loopback and one end of a
// veth pair, 10.231.<n>.1 and .2. Only this test's namespaces and link are made, and the
// destructor removes them (deleting a namespace deletes its end of the pair), also on failure.
class TwoHosts {
 public:
  TwoHosts() {
    BOOST_REQUIRE_MESSAGE(
        ::geteuid() == 0,
        "the two-machine test needs root to make network namespaces (CI is root)");
    BOOST_REQUIRE_MESSAGE(
        std::system("ip -V > /dev/null 2>&1") == 0,
        "the two-machine test needs ip (Debian's iproute2: scripts/install-deps.sh)");
    const std::string tag = std::to_string(::getpid() % 100000);
    const std::string subnet = "10.231." + std::to_string(::getpid() % 250);
    for (int i = 0; i < 2; ++i) {
      names_[i] = std::string("ckpt-") + (i == 0 ? "a-" : "b-") + tag;
      links_[i] = std::string("ck") + (i == 0 ? "a" : "b") + tag;  // <= 15 characters
      addresses_[i] = subnet + "." + std::to_string(i + 1);
    }
    for (int i = 0; i < 2; ++i) {
      run_or_fail("ip netns add " + names_[i]);
      made_[i] = true;
    }
    run_or_fail("ip link add " + links_[0] + " type veth peer name " + links_[1]);
    link_made_ = true;
    for (int i = 0; i < 2; ++i) {
      run_or_fail("ip link set " + links_[i] + " netns " + names_[i]);
      run_or_fail("ip -n " + names_[i] + " addr add " + addresses_[i] + "/24 dev " + links_[i]);
      run_or_fail("ip -n " + names_[i] + " link set " + links_[i] + " up");
      run_or_fail("ip -n " + names_[i] + " link set lo up");
    }
    link_made_ = false;  // both ends now live in the namespaces, and go with them
  }
  ~TwoHosts() {
    if (link_made_) std::system(("ip link delete " + links_[0] + " > /dev/null 2>&1").c_str());
    for (int i = 0; i < 2; ++i) {
      if (made_[i]) std::system(("ip netns delete " + names_[i] + " > /dev/null 2>&1").c_str());
    }
  }
  TwoHosts(const TwoHosts&) = delete;
  TwoHosts& operator=(const TwoHosts&) = delete;

  // `command` run on machine `i`, Gloo told to use its end of the pair.
  std::string on(int i, const std::string& command) const {
    return "ip netns exec " + names_[i] + " env GLOO_SOCKET_IFNAME=" + links_[i] + " " + command;
  }
  const std::string& address(int i) const { return addresses_[i]; }
  const std::string& name(int i) const { return names_[i]; }

 private:
  std::string names_[2], links_[2], addresses_[2];
  bool made_[2] = {false, false};
  bool link_made_ = false;
};

// Node `node` of a two-node job (one rank each), rendezvous at node 0's address.
std::string node_command(const TwoHosts& hosts, int node, bool resume) {
  std::vector<std::string> args{"--dist.nproc",
                                "1",
                                "--dist.nnodes",
                                "2",
                                "--dist.node_rank",
                                std::to_string(node),
                                "--dist.master_addr",
                                hosts.address(0),
                                "--dist.master_port",
                                "29500",
                                "--dist.timeout",
                                "60",
                                "--trainer.epochs",
                                "4",
                                "--chkp.save_dir",
                                "ck",
                                "--chkp.model_state_save_dir",
                                "ck",
                                "--chkp.every_n_train_steps",
                                "5"};
  if (resume) args.insert(args.end(), {"--chkp.load_dir", "ck"});
  return hosts.on(node, command_line(args));
}

// Runs both nodes to the end, each in its own directory; returns their exit codes.
std::pair<int, int> run_both(const TwoHosts& hosts, const fs::path& dir0, const fs::path& dir1,
                             bool resume) {
  const pid_t node0 = start_command(dir0, node_command(hosts, 0, resume));
  const pid_t node1 = start_command(dir1, node_command(hosts, 1, resume));
  return {exit_code_of(node0), exit_code_of(node1)};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(two_machines)

BOOST_AUTO_TEST_CASE(node_1_killed_mid_epoch_both_nodes_restart_and_resume_exactly) {
  TwoHosts hosts;
  TempDir reference, killed;
  for (const auto* dir : {&reference, &killed}) {
    fs::create_directories(dir->path() / "node0");
    fs::create_directories(dir->path() / "node1");
  }
  // The uninterrupted two-node run.
  const auto full = run_both(hosts, reference / "node0", reference / "node1", false);
  BOOST_REQUIRE_MESSAGE(full.first == 0 && full.second == 0,
                        "node 0: " << read_text(reference / "node0" / "err.txt")
                                   << "\nnode 1: " << read_text(reference / "node1" / "err.txt"));
  // Each node is its own machine: rank 1 ran in the other namespace, joined over the veth pair.
  const std::string out0 = read_text(reference / "node0" / "out.txt");
  BOOST_CHECK_MESSAGE(
      out0.find("rank 0 of 2 joined the job at " + hosts.address(0)) != std::string::npos, out0);
  BOOST_CHECK(!fs::exists(reference / "node1" / "ck"));  // only rank 0 writes

  // The same job, node 1's processes SIGKILLed once a checkpoint exists.
  const pid_t node0 = start_command(killed / "node0", node_command(hosts, 0, false));
  const pid_t node1 = start_command(killed / "node1", node_command(hosts, 1, false));
  wait_for(killed / "node0" / "ck" / "model_1.pt");
  ::kill(-node1, SIGKILL);
  BOOST_CHECK_EQUAL(exit_code_of(node1), 128 + SIGKILL);
  BOOST_CHECK_NE(exit_code_of(node0), 0);  // node 0 lost its peer and gave up, without hanging
  BOOST_REQUIRE_MESSAGE(!fs::exists(killed / "node0" / "ck" / "model_model_3.pt"),
                        "the job finished before node 1 was killed");
  // Both nodes restart; rank 0 resumes from its own directory.
  const auto resumed = run_both(hosts, killed / "node0", killed / "node1", true);
  BOOST_REQUIRE_MESSAGE(resumed.first == 0 && resumed.second == 0,
                        "node 0: " << read_text(killed / "node0" / "err.txt")
                                   << "\nnode 1: " << read_text(killed / "node1" / "err.txt"));
  BOOST_CHECK(read_text(killed / "node0" / "out.txt").find("resuming after epoch") !=
              std::string::npos);
  check_states_bitwise_equal(
      ckpt::load_state_file(killed / "node0" / "ck" / "model_model_3.pt"),
      ckpt::load_state_file(reference / "node0" / "ck" / "model_model_3.pt"));
  const auto a = rank_states(killed / "node0" / "ck" / "model_3.pt");
  const auto b = rank_states(reference / "node0" / "ck" / "model_3.pt");
  BOOST_REQUIRE_EQUAL(a.size(), 2u);
  BOOST_REQUIRE_EQUAL(b.size(), 2u);
  for (size_t r = 0; r < 2; ++r) {
    BOOST_TEST_CONTEXT("rank " << r) {
      BOOST_CHECK(ckpt::deep_equal(a[r].to_ivalue(), b[r].to_ivalue()));
    }
  }
}

BOOST_AUTO_TEST_SUITE_END()

#endif  // CKPT_SAMPLE_TRAINER
