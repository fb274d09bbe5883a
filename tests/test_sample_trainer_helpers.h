#pragma once
// Helpers for the sample trainer's tests: temporary directories, running the executable and Python,
// reading its log.

#include <boost/test/unit_test.hpp>

#include "test_util.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <regex>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

namespace sample_trainer::test {

// TempDir, read_text, write_text, files_in and quote are the shared ones (test_util.h). The
// sample trainer's files are the local filesystem's: its suites run on that storage only.
using ckpt::test::files_in;
using ckpt::test::quote;
using ckpt::test::read_text;
using ckpt::test::TempDir;
using ckpt::test::write_text;

/// Everything under `dir`, recursively: relative path -> (size, modification time), so that two
/// snapshots differ when anything was written, created or deleted.
using Snapshot = std::map<std::string, std::pair<uintmax_t, long long>>;
inline Snapshot snapshot(const std::filesystem::path& dir) {
  Snapshot result;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
    const auto relative = std::filesystem::relative(entry.path(), dir).string();
    const uintmax_t size = entry.is_regular_file() ? entry.file_size() : 0;
    result[relative] = {size,
                        static_cast<long long>(entry.last_write_time().time_since_epoch().count())};
  }
  return result;
}

struct RunResult {
  int exit_code = -1;
  std::string out;  ///< stdout
  std::string err;  ///< stderr
};

/// Runs `command` (already quoted) in `cwd` through the shell, capturing stdout and stderr in
/// files under `logs`.
inline RunResult run_in(const std::filesystem::path& cwd, const std::filesystem::path& logs,
                        const std::string& command) {
  std::filesystem::create_directories(logs);
  static int counter = 0;
  const auto out_path = logs / ("run" + std::to_string(++counter) + ".out");
  const auto err_path = logs / ("run" + std::to_string(counter) + ".err");
  const std::string full = "cd " + quote(cwd.string()) + " && " + command + " > " +
                           quote(out_path.string()) + " 2> " + quote(err_path.string()) +
                           " < /dev/null";
  const int status = std::system(full.c_str());
  RunResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.out = read_text(out_path, *ckpt::Storage::local());
  result.err = read_text(err_path, *ckpt::Storage::local());
  BOOST_TEST_MESSAGE("$ " << command << "  -> exit " << result.exit_code);
  return result;
}

inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

/// The per-epoch metrics the program logged, epoch -> "train_loss=... val_loss=... val_acc=...
/// (c/n)" without the timing, in log order.
inline std::vector<std::pair<int64_t, std::string>> epoch_metrics(const std::string& log) {
  static const std::regex line(
      R"(\] epoch=(\d+) (train_loss=\S+ val_loss=\S+ val_acc=\S+ \(\d+/\d+\)) time=)");
  std::vector<std::pair<int64_t, std::string>> result;
  for (const auto& text : lines_of(log)) {
    std::smatch match;
    if (std::regex_search(text, match, line)) result.emplace_back(std::stoll(match[1]), match[2]);
  }
  return result;
}

/// The interpreter the Python tests run; the test fails (never skips) if it cannot import torch.
inline std::string require_python_with_torch(const std::filesystem::path& scratch) {
  const std::string python = CKPT_PYTHON;
  const RunResult probe = run_in(scratch, scratch / "python-probe",
                                 quote(python) + " -c 'import torch; print(torch.__version__)'");
  BOOST_REQUIRE_MESSAGE(probe.exit_code == 0,
                        "CKPT_PYTHON=" << python
                                       << " cannot import torch (install Debian's python3-torch "
                                          "or configure with -DCKPT_PYTHON=<python with torch>): "
                                       << probe.err);
  return python;
}

}  // namespace sample_trainer::test
