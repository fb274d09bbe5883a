// Crash consistency: SIGKILL a saving process at random moments, over and over. After every kill,
// every file under a checkpoint name verifies and holds what its name says, and a resume continues
// from the newest complete checkpoint; temporaries are never chosen.
#include <ckpt/default_checkpointer.h>
#include <ckpt/serialization.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <regex>
#include <random>
#include <thread>

#include "test_util.h"

using ckpt::test::TempDir;

namespace {

pid_t start_saver(const std::filesystem::path& dir, const std::filesystem::path& log) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execl(CKPT_KILL_SAVER, CKPT_KILL_SAVER, dir.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  return pid;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(kill_test)

BOOST_AUTO_TEST_CASE(sigkill_at_random_moments_never_loses_a_checkpoint) {
  TempDir dir;
  const auto checkpoints = dir / "checkpoints";
  std::mt19937 rng(20261126);
  // Kills land anywhere: mostly while saving (a save takes a few ms, so a random delay after the
  // saver reports it has resumed lands in a write, an fsync, a rename or a removal), and every
  // fifth round during start-up (the resume itself and the removal of leftover temporaries).
  std::uniform_int_distribution<int> saving_delay_us(0, 40000);
  std::uniform_int_distribution<int> startup_delay_ms(0, 800);
  const auto log = dir / "saver.log";
  auto resumed_lines = [&] {
    const std::string text = ckpt::test::read_text(log);
    std::size_t count = 0;
    for (std::size_t at = text.find("resumed at step"); at != std::string::npos;
         at = text.find("resumed at step", at + 1)) {
      ++count;
    }
    return count;
  };
  int kills = 0, verified = 0, resumes = 0, temporaries_seen = 0;
  int64_t previous_newest = -1;
  const auto started = std::chrono::steady_clock::now();
  // 110 rounds; CKPT_KILL_ROUNDS lowers it where each round is slow (scripts/test.sh, under ASan).
  const char* rounds_env = std::getenv("CKPT_KILL_ROUNDS");
  const int rounds = rounds_env ? std::max(10, std::atoi(rounds_env)) : 110;
  for (int round = 0; round < rounds; ++round) {
    const std::size_t resumed_before = resumed_lines();
    const pid_t pid = start_saver(checkpoints, log);
    if (round % 5 == 4) {
      std::this_thread::sleep_for(std::chrono::milliseconds(startup_delay_ms(rng)));
    } else {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (resumed_lines() == resumed_before && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(saving_delay_us(rng)));
    }
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) {
      ++kills;
    } else {
      BOOST_FAIL("saver exited by itself (status " << status << "):\n"
                                                  << ckpt::test::read_text(dir / "saver.log"));
    }
    // Every file under a checkpoint name is complete and holds its own index.
    int64_t newest = -1;
    for (const auto& name : ckpt::test::files_in(checkpoints)) {
      if (!ckpt::temporary_target(name).empty()) {
        ++temporaries_seen;
        continue;
      }
      const auto path = checkpoints / name;
      if (name == "model_latest") {  // the latest pointer: never torn either
        const std::string pointer = ckpt::test::read_text(path);
        BOOST_TEST(std::regex_match(pointer, std::regex("model_[0-9]+\\.pt\n")), pointer);
        continue;
      }
      const auto checkpoint = ckpt::load_checkpoint_file(path);  // throws if torn or corrupt
      const int64_t step = checkpoint.trainer_state.at("step").toInt();
      BOOST_TEST(name == "model_" + std::to_string(step) + ".pt");
      BOOST_TEST(checkpoint.module_interface_state.at("weight").toTensor().eq(double(step)).all().item<bool>());
      newest = std::max(newest, step);
      ++verified;
    }
    // What a resume picks: the newest complete checkpoint, never a temporary, never older.
    ckpt::DefaultCheckpointerArguments args;
    args.save_dir = checkpoints;
    args.load_dir = checkpoints;
    args.log_level = "error";
    const auto resumed = ckpt::DefaultCheckpointer(args).load();
    if (newest >= 0) {
      BOOST_REQUIRE(!resumed.empty());
      BOOST_TEST(resumed.trainer_state.at("step").toInt() == newest);
      BOOST_TEST(newest >= previous_newest, "newest checkpoint went back from " << previous_newest << " to " << newest);
      ++resumes;
      previous_newest = newest;
    }
    // The constructor above removed every leftover temporary of ours.
    for (const auto& name : ckpt::test::files_in(checkpoints)) {
      BOOST_TEST(ckpt::temporary_target(name).empty(), name << " left behind");
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  BOOST_TEST_MESSAGE("kill test: " << kills << " kills, " << verified << " checkpoints verified, "
                                   << resumes << " resumes, " << temporaries_seen
                                   << " leftover temporaries removed, newest step "
                                   << previous_newest << ", " << seconds << " s");
  std::cout << "kill test: " << kills << " kills, " << verified << " checkpoints verified, "
            << resumes << " resumes, " << temporaries_seen << " leftover temporaries removed, "
            << "newest step " << previous_newest << ", " << seconds << " s" << std::endl;
  BOOST_TEST(kills >= rounds * 10 / 11);   // 100 for 110 rounds
  BOOST_TEST(resumes >= rounds * 8 / 11);  // 80 for 110 rounds
  // The saves made real progress between kills (about 270 steps in a normal build, about 100 under
  // ASan, where each start-up takes seconds but the kill window after it is the same).
  BOOST_TEST(previous_newest >= rounds * 5 / 11);  // 50 for 110 rounds
}

BOOST_AUTO_TEST_SUITE_END()
