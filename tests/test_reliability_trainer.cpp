// The sample trainer when the disk fills up for real and stays full: the failed saves are ridden
// out (on_save_failure continue) until max_save_failures in a row, then exit 1 with one line
// naming the last durable checkpoint and the system's reason, the older checkpoints intact, and a
// resume that continues from the last good one.
#ifdef CKPT_SAMPLE_TRAINER

#include <ckpt/serialization.h>

#include <sys/mount.h>
#include <unistd.h>

#include "test_util.h"

using ckpt::test::files_in;
using ckpt::test::quote;
using ckpt::test::run_command;
using ckpt::test::TempDir;

BOOST_AUTO_TEST_SUITE(trainer_disk_full)

BOOST_AUTO_TEST_CASE(enospc_past_max_save_failures_exits_1_with_one_line_and_resume_continues) {
  TempDir dir;
  const auto disk = dir / "disk";
  std::filesystem::create_directories(disk);
  BOOST_REQUIRE_MESSAGE(::geteuid() == 0, "this test mounts a tmpfs and needs root (CI runs as root)");
  // Each checkpoint of the sample model is about 216 KB: two fit, the third does not (the disk
  // pre-flight refuses it before writing; margin 0 so that the first two pass it).
  BOOST_REQUIRE_MESSAGE(::mount("tmpfs", disk.c_str(), "tmpfs", 0, "size=600k") == 0,
                        "mount tmpfs: " << std::strerror(errno));
  struct Unmount {
    std::filesystem::path path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{disk};

  const std::string common = quote(CKPT_SAMPLE_TRAINER) + " --trainer.epochs 4 --chkp.save_dir " +
                             quote(disk.string()) + " --chkp.model_state_save_dir " +
                             quote(disk.string()) + " --chkp.disk_margin_mb 0";
  const auto full = run_command(common);
  BOOST_TEST(full.exit_code == 1, full.output);
  std::string error_line;
  std::size_t error_lines = 0;
  std::istringstream lines(full.output);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("sample_trainer: error:", 0) == 0) {
      error_line = line;
      ++error_lines;
    }
  }
  BOOST_TEST(error_lines == 1u, full.output);
  // Epochs 2 and 3 failed, then the forced final save: the third failure in a row.
  BOOST_TEST(error_line.find("training finished at epoch 3") != std::string::npos, error_line);
  BOOST_TEST(error_line.find("final weights were not exported") != std::string::npos, error_line);
  BOOST_TEST(error_line.find("stopping training: 3 saves failed in a row") != std::string::npos,
             error_line);
  BOOST_TEST(error_line.find("the last durable checkpoint is " + (disk / "model_1.pt").string()) !=
                 std::string::npos,
             error_line);
  BOOST_TEST(error_line.find((disk / "model_3.pt").string()) != std::string::npos, error_line);
  BOOST_TEST(error_line.find(std::strerror(ENOSPC)) != std::string::npos, error_line);
  BOOST_TEST(full.output.find("saving checkpoint " + (disk / "model_2.pt").string() +
                              " failed (1 of max_save_failures 3 in a row") != std::string::npos,
             full.output);
  BOOST_TEST(files_in(disk) ==
                 (std::vector<std::string>{"model_0.pt", "model_1.pt", "model_latest"}),
             boost::test_tools::per_element());
  ckpt::verify_file(disk / "model_0.pt");
  ckpt::verify_file(disk / "model_1.pt");
  BOOST_TEST(ckpt::test::read_text(disk / "model_latest") == "model_1.pt\n");

  BOOST_REQUIRE(::mount("tmpfs", disk.c_str(), "tmpfs", MS_REMOUNT, "size=8m") == 0);
  const auto resumed = run_command(common + " --chkp.load_dir " + quote(disk.string()));
  BOOST_TEST(resumed.exit_code == 0, resumed.output);
  BOOST_TEST(resumed.output.find("epoch=0 ") == std::string::npos, resumed.output);
  BOOST_TEST(resumed.output.find("epoch=1 ") == std::string::npos, resumed.output);
  BOOST_TEST(resumed.output.find("epoch=2 ") != std::string::npos, resumed.output);
  BOOST_TEST(resumed.output.find("epoch=3 ") != std::string::npos, resumed.output);
  BOOST_TEST(std::filesystem::exists(disk / "model_3.pt"));
  BOOST_TEST(std::filesystem::exists(disk / "model_model_3.pt"));
}

BOOST_AUTO_TEST_SUITE_END()

#endif  // CKPT_SAMPLE_TRAINER
