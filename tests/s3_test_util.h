#pragma once
// The S3 test fixture: scripts/s3-server.sh, started once by ctest (fixture "s3", directory in
// CKPT_S3_FIXTURE), a real single-node Ceph RADOS Gateway on 127.0.0.1. Tests that need it call
// s3_fixture(), which exports the fixture's AWS_* variables into the test process and fails the
// test, loudly, if the fixture is not running.

#include <ckpt/checkpoint_error.h>
#include <ckpt/s3_storage.h>
#include <ckpt/storage.h>

#include <boost/test/unit_test.hpp>

#include <unistd.h>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <string>

namespace ckpt::test {

struct S3Fixture {
  std::string directory;  ///< Where scripts/s3-server.sh keeps the cluster (and its logs).
  std::string endpoint;   ///< http://127.0.0.1:PORT
  std::string bucket;
};

/// Reads CKPT_S3_FIXTURE/env (lines `export NAME='value'`) into the environment, once.
inline const S3Fixture& s3_fixture() {
  static const S3Fixture fixture = [] {
    const char* dir = std::getenv("CKPT_S3_FIXTURE");
    if (dir == nullptr || *dir == '\0') {
      throw std::runtime_error(
          "CKPT_S3_FIXTURE is not set: the S3 suites run under ctest, which starts the gateway "
          "(fixture s3_fixture_start), or after scripts/s3-server.sh start DIR with "
          "CKPT_S3_FIXTURE=DIR");
    }
    std::ifstream in(std::string(dir) + "/env");
    if (!in) {
      throw std::runtime_error(std::string("no ") + dir +
                               "/env: the S3 fixture is not running (see its log in " + dir +
                               "/log)");
    }
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("export ", 0) != 0) continue;
      const auto equals = line.find('=');
      std::string value = line.substr(equals + 1);
      if (value.size() >= 2 && value.front() == '\'') value = value.substr(1, value.size() - 2);
      ::setenv(line.substr(7, equals - 7).c_str(), value.c_str(), 1);
    }
    S3Fixture result;
    result.directory = dir;
    result.endpoint =
        std::getenv("AWS_ENDPOINT_URL") != nullptr ? std::getenv("AWS_ENDPOINT_URL") : "";
    result.bucket = std::getenv("CKPT_S3_BUCKET") != nullptr ? std::getenv("CKPT_S3_BUCKET") : "";
    if (result.endpoint.empty() || result.bucket.empty()) {
      throw std::runtime_error(std::string(dir) + "/env lacks AWS_ENDPOINT_URL or CKPT_S3_BUCKET");
    }
    return result;
  }();
  return fixture;
}

/// A fresh prefix `s3://<bucket>/<name>-<pid>-<random>` for one test.
inline std::string unique_s3_prefix(const std::string& name) {
  std::random_device rd;
  return "s3://" + s3_fixture().bucket + "/" + name + "-" + std::to_string(::getpid()) + "-" +
         std::to_string(rd());
}

/// Sets an environment variable for the scope (S3Storage reads its configuration at
/// construction).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    const char* old = std::getenv(name);
    if (old != nullptr) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

/// The fixture's S3 storage seen under local-looking paths: `/tmp/x/model_0.pt` is the object
/// `s3://<bucket>/<run>/tmp/x/model_0.pt`. With it the DefaultCheckpointer suites written for
/// local paths run unchanged on the real gateway (CKPT_TEST_STORAGE=s3): every call reaches
/// S3Storage, only the names are translated, both ways.
class LocalPathsOnS3 final : public Storage {
 public:
  LocalPathsOnS3()
      : s3_((s3_fixture(), std::make_shared<S3Storage>())), root_(unique_s3_prefix("suite")) {}

  std::unique_ptr<WritableFile> create(const std::filesystem::path& path) override {
    return s3_->create(to_s3(path));
  }
  std::unique_ptr<RandomAccessFile> open(const std::filesystem::path& path) override {
    return s3_->open(to_s3(path));
  }
  std::optional<FileInfo> stat(const std::filesystem::path& path) override {
    auto info = s3_->stat(to_s3(path));
    if (info) info->path = path;
    return info;
  }
  std::vector<FileInfo> list(const std::filesystem::path& directory, bool recursive) override {
    auto files = s3_->list(to_s3(directory), recursive);
    for (auto& file : files) file.path = to_local(file.path);
    return files;
  }
  void remove(const std::filesystem::path& path) override { s3_->remove(to_s3(path)); }
  void create_directories(const std::filesystem::path& directory) override {
    s3_->create_directories(to_s3(directory));
  }
  std::optional<uint64_t> available_space(const std::filesystem::path& directory) override {
    return s3_->available_space(to_s3(directory));
  }
  std::vector<std::filesystem::path> remove_unfinished_writes(
      const std::filesystem::path& directory,
      const std::function<bool(const std::string& final_name)>& ours) override {
    auto removed = s3_->remove_unfinished_writes(to_s3(directory), ours);
    for (auto& path : removed) path = to_local(path);
    return removed;
  }

  S3Storage& s3() { return *s3_; }

 private:
  std::filesystem::path to_s3(const std::filesystem::path& local) const {
    std::string text = local.lexically_normal().string();
    if (text.empty() || text.front() != '/') {
      throw CheckpointError("LocalPathsOnS3 maps absolute paths only, not '" + text + "'", local,
                            EINVAL);
    }
    return root_ + text;
  }
  std::filesystem::path to_local(const std::filesystem::path& s3) const {
    const std::string text = s3.string();
    if (text.rfind(root_, 0) != 0) return s3;
    return text.substr(root_.size());
  }

  std::shared_ptr<S3Storage> s3_;
  const std::string root_;
};

}  // namespace ckpt::test
