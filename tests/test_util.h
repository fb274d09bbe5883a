#pragma once
// Test doubles and helpers shared by the test files (the sample trainer's tests re-export them
// from test_sample_trainer_helpers.h).
//
// The storage under test: storage_under_test() is the local filesystem, or with
// CKPT_TEST_STORAGE=memory one process-wide MemoryStorage (tests/CMakeLists.txt registers the
// suites in CKPT_BOTH_STORAGE_SUITES a second time as <suite>_memory so). The file helpers below
// (files_in, count_files, read_text, write_text, exists, make_directories, remove_file,
// flip_byte) go through it, so a test written with them runs on either. A case that is about the
// local filesystem itself is marked `*boost::unit_test::precondition(ckpt::test::local_only)`.

#include <ckpt/checkpoint_error.h>
#include <ckpt/memory_storage.h>
#include <ckpt/storage.h>

#include "s3_test_util.h"

#include <boost/test/unit_test.hpp>

#include <sys/wait.h>
#include <unistd.h>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ckpt::test {

/// The storage the storage-independent tests run on, from CKPT_TEST_STORAGE: unset, empty or
/// "local" (the local filesystem), "memory" or "s3". Any other value is a mistake in the test
/// setup: it throws, failing every test that asks.
enum class StorageKind { local, memory, s3 };
inline StorageKind storage_kind_under_test() {
  const char* env = std::getenv("CKPT_TEST_STORAGE");
  const std::string value = env != nullptr ? env : "";
  if (value.empty() || value == "local") return StorageKind::local;
  if (value == "memory") return StorageKind::memory;
  if (value == "s3") return StorageKind::s3;
  throw std::invalid_argument("CKPT_TEST_STORAGE='" + value +
                              "' is not a storage the tests know: use 'memory', 's3' or leave it "
                              "unset (the local filesystem)");
}

/// True unless the tests run on the local filesystem.
inline bool memory_storage_under_test() { return storage_kind_under_test() != StorageKind::local; }

/// The Storage the storage-independent tests run on: Storage::local(); with
/// CKPT_TEST_STORAGE=memory one MemoryStorage (without capacity: free space unknown) shared by the
/// whole process; with CKPT_TEST_STORAGE=s3 the S3 fixture's gateway under local-looking names
/// (LocalPathsOnS3, s3_test_util.h).
inline std::shared_ptr<Storage> storage_under_test() {
  switch (storage_kind_under_test()) {
    case StorageKind::local:
      return Storage::local();
    case StorageKind::memory: {
      static const std::shared_ptr<Storage> memory = std::make_shared<MemoryStorage>();
      return memory;
    }
    case StorageKind::s3:
      break;
  }
  static const std::shared_ptr<Storage> s3 = std::make_shared<LocalPathsOnS3>();
  return s3;
}

/// A Boost.Test precondition for cases about the local filesystem itself (system-call failures,
/// tmpfs, permissions, processes that die, other programs reading the files): they are skipped,
/// with this reason, when the suite runs on MemoryStorage or S3.
inline boost::test_tools::assertion_result local_only(boost::unit_test::test_unit_id) {
  boost::test_tools::assertion_result result(!memory_storage_under_test());
  const char* kind = std::getenv("CKPT_TEST_STORAGE");
  result.message() << "needs the local filesystem (CKPT_TEST_STORAGE="
                   << (kind != nullptr ? kind : "") << ")";
  return result;
}

/// A Boost.Test precondition for cases that do thousands of storage round trips to test
/// something storage-independent (e.g. the verifier against every flipped byte): they run on the
/// local filesystem and MemoryStorage, and are skipped on the S3 gateway, where each round trip
/// is several HTTP requests.
inline boost::test_tools::assertion_result not_on_s3(boost::unit_test::test_unit_id) {
  boost::test_tools::assertion_result result(storage_kind_under_test() != StorageKind::s3);
  result.message() << "thousands of round trips, each several HTTP requests on S3 "
                      "(CKPT_TEST_STORAGE=s3); covered on local and memory";
  return result;
}

/// A fresh temporary directory, removed with everything in it on destruction (on the local
/// filesystem, and under it in storage_under_test() when that is not the local one). It is created
/// locally in any case, since most tests also use it for local scratch files.
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
    try {
      if (memory_storage_under_test()) {
        auto storage = storage_under_test();
        for (const auto& file : storage->list(path_, /*recursive=*/true))
          storage->remove(file.path);
      }
    } catch (...) {
      // A destructor must not throw; the memory is the process's and goes with it.
    }
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

/// Names of the files directly in `dir` (regular files; hidden ones too), sorted; empty if `dir`
/// does not exist.
inline std::vector<std::string> files_in(const std::filesystem::path& dir,
                                         Storage& storage = *storage_under_test()) {
  std::vector<std::string> names;
  for (const auto& file : storage.list(dir, /*recursive=*/false)) {
    names.push_back(file.path.filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

inline std::size_t count_files(const std::filesystem::path& dir,
                               Storage& storage = *storage_under_test()) {
  return files_in(dir, storage).size();
}

/// True if a file or directory is at `path`.
inline bool exists(const std::filesystem::path& path, Storage& storage = *storage_under_test()) {
  return storage.stat(path).has_value();
}

/// Writes `text` to `path` (replacing it), committed. Throws CheckpointError on failure. On the
/// local filesystem itself it is a plain write (no temporary, no fsync: test data need not survive
/// a power loss, and some tests rewrite a file thousands of times).
inline void write_text(const std::filesystem::path& path, const std::string& text,
                       Storage& storage = *storage_under_test()) {
  if (&storage == Storage::local().get()) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    out.close();
    if (!out) throw CheckpointError("test helper: cannot write " + path.string(), path);
    return;
  }
  auto file = storage.create(path);
  file->append(text.data(), text.size());
  file->commit();
}

/// The whole of `path`; empty if there is no file there (as an ifstream would read it).
inline std::string read_text(const std::filesystem::path& path,
                             Storage& storage = *storage_under_test()) {
  const auto info = storage.stat(path);
  if (!info || info->is_directory) return {};
  return read_small_file(storage, path, std::size_t{1} << 40);
}

inline void make_directories(const std::filesystem::path& dir,
                             Storage& storage = *storage_under_test()) {
  storage.create_directories(dir);
}

inline void remove_file(const std::filesystem::path& path,
                        Storage& storage = *storage_under_test()) {
  storage.remove(path);
}

/// Flips bits of one byte of `path` (by default in its middle) and writes it back.
inline void flip_byte(const std::filesystem::path& path, std::size_t offset = SIZE_MAX,
                      unsigned char mask = 0x5a, Storage& storage = *storage_under_test()) {
  std::string bytes = read_small_file(storage, path, std::size_t{1} << 40);
  BOOST_REQUIRE_MESSAGE(!bytes.empty(), "cannot flip a byte of the empty file " << path);
  if (offset == SIZE_MAX) offset = bytes.size() / 2;
  BOOST_REQUIRE_MESSAGE(offset < bytes.size(),
                        "offset " << offset << " is past the end of " << path);
  bytes[offset] = static_cast<char>(bytes[offset] ^ mask);
  write_text(path, bytes, storage);
}

/// Forwards to another Storage and journals, in order, "create:<path>" for every writer started,
/// "commit:<path>" for every commit that returned (the file is then visible and durable) and
/// "remove:<path>" for every removal: the order of what a checkpointer makes durable and deletes,
/// on any storage.
class RecordingStorage : public StorageWrapper {
 public:
  explicit RecordingStorage(std::shared_ptr<Storage> target = storage_under_test())
      : StorageWrapper(std::move(target)) {}

  std::unique_ptr<WritableFile> create(const std::filesystem::path& path) override {
    auto file = StorageWrapper::create(path);
    record("create:" + path.string());
    return std::make_unique<File>(*this, std::move(file), path);
  }
  void remove(const std::filesystem::path& path) override {
    record("remove:" + path.string());
    StorageWrapper::remove(path);
  }
  std::vector<std::string> journal() {
    std::lock_guard<std::mutex> lock(mutex_);
    return journal_;
  }

 private:
  class File final : public WritableFile {
   public:
    File(RecordingStorage& owner, std::unique_ptr<WritableFile> inner, std::filesystem::path path)
        : owner_(owner), inner_(std::move(inner)), path_(std::move(path)) {}
    void append(const void* data, std::size_t size) override { inner_->append(data, size); }
    void commit() override {
      inner_->commit();
      owner_.record("commit:" + path_.string());
    }

   private:
    RecordingStorage& owner_;
    std::unique_ptr<WritableFile> inner_;
    std::filesystem::path path_;
  };

  void record(std::string entry) {
    std::lock_guard<std::mutex> lock(mutex_);
    journal_.push_back(std::move(entry));
  }

  std::mutex mutex_;
  std::vector<std::string> journal_;
};

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
  BOOST_REQUIRE_MESSAGE(result.exit_code == 0, "python failed (" << result.exit_code
                                                                 << "): " << command << "\n"
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
