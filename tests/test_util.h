#pragma once
// Test doubles and helpers shared by the test files.

#include <boost/test/unit_test.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <sys/wait.h>

namespace ckpt::test {

/// A fresh temporary directory, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("ckpt-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::permissions(path_, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::add, ec);
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

/// Names of the regular files directly in `dir`, sorted.
inline std::vector<std::string> files_in(const std::filesystem::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.is_regular_file()) names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

inline std::size_t count_files(const std::filesystem::path& dir) { return files_in(dir).size(); }

inline void write_text(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

/// Runs a shell command, capturing its output.
inline CommandResult run_command(const std::string& command) {
  CommandResult result;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  BOOST_REQUIRE_MESSAGE(pipe != nullptr, "cannot run: " << command);
  char buffer[4096];
  std::size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) result.output.append(buffer, n);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

inline std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

/// The Python interpreter that imports torch. Fails the test (never skips) if it does not.
inline std::string python() {
  static const std::string interpreter = [] {
    const char* env = std::getenv("CKPT_PYTHON");
    return std::string(env != nullptr ? env : CKPT_PYTHON);
  }();
  static const bool ok = run_command(quote(interpreter) + " -c 'import torch'").exit_code == 0;
  BOOST_REQUIRE_MESSAGE(ok, "Python interop tests need an interpreter that imports torch: '"
                                << interpreter
                                << "' does not (install python3-torch with "
                                   "scripts/install-deps.sh, or set -DCKPT_PYTHON=...)");
  return interpreter;
}

/// Runs tests/python/<script> with arguments through python(); requires exit code 0.
inline std::string run_python(const std::string& script, const std::string& arguments) {
  const std::string command = quote(python()) + " " +
                              quote(std::string(CKPT_SOURCE_DIR) + "/tests/python/" + script) +
                              " " + arguments;
  CommandResult result = run_command(command);
  BOOST_REQUIRE_MESSAGE(result.exit_code == 0,
                        "python failed (" << result.exit_code << "): " << command << "\n"
                                          << result.output);
  return result.output;
}

/// A predicate for BOOST_CHECK_EXCEPTION: the message contains every one of `parts`.
template <class... Parts>
auto message_contains(Parts... parts) {
  return [=](const std::exception& e) {
    const std::string what = e.what();
    for (const std::string& part : {std::string(parts)...}) {
      if (what.find(part) == std::string::npos) {
        BOOST_TEST_MESSAGE("message '" << what << "' lacks '" << part << "'");
        return false;
      }
    }
    return true;
  };
}

}  // namespace ckpt::test
