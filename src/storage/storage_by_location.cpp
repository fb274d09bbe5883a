#include <ckpt/checkpoint_error.h>
#include <ckpt/s3_storage.h>

#include <cctype>
#include <cerrno>
#include <mutex>
#include <string>

namespace ckpt {
namespace {

// The scheme of `location` if it is a URL (`gs://...` -> "gs"), else empty.
std::string scheme_of(const std::filesystem::path& location) {
  const std::string& text = location.native();
  const auto colon = text.find("://");
  if (colon == std::string::npos || colon == 0) return "";
  for (std::size_t i = 0; i < colon; ++i) {
    const char c = text[i];
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.'))
      return "";
  }
  return text.substr(0, colon);
}

// Each call goes to the storage of its location's scheme. S3Storage is made at the first s3://
// location, so that a program writing only local files never reads the AWS configuration.
class StorageByLocation final : public Storage {
 public:
  explicit StorageByLocation(S3Options options) : s3_options_(std::move(options)) {
    s3_options_.validate();
  }

  std::unique_ptr<WritableFile> create(const std::filesystem::path& path) override {
    return of(path).create(path);
  }
  std::unique_ptr<RandomAccessFile> open(const std::filesystem::path& path) override {
    return of(path).open(path);
  }
  std::optional<FileInfo> stat(const std::filesystem::path& path) override {
    return of(path).stat(path);
  }
  std::vector<FileInfo> list(const std::filesystem::path& directory, bool recursive) override {
    return of(directory).list(directory, recursive);
  }
  void remove(const std::filesystem::path& path) override { of(path).remove(path); }
  void create_directories(const std::filesystem::path& directory) override {
    of(directory).create_directories(directory);
  }
  std::optional<uint64_t> available_space(const std::filesystem::path& directory) override {
    return of(directory).available_space(directory);
  }
  std::vector<std::filesystem::path> remove_unfinished_writes(
      const std::filesystem::path& directory,
      const std::function<bool(const std::string& final_name)>& ours) override {
    return of(directory).remove_unfinished_writes(directory, ours);
  }

 private:
  Storage& of(const std::filesystem::path& location) {
    const std::string scheme = scheme_of(location);
    if (scheme.empty()) return *Storage::local();
    if (scheme == "s3") {
      std::call_once(s3_made_, [this] { s3_ = std::make_shared<S3Storage>(s3_options_); });
      return *s3_;
    }
    throw CheckpointError(location.string() + " is a URL with scheme '" + scheme +
                              "', which this build of ckpt does not support (it takes local "
                              "paths and s3://bucket/prefix)",
                          location, EINVAL);
  }

  S3Options s3_options_;
  std::once_flag s3_made_;
  std::shared_ptr<S3Storage> s3_;
};

}  // namespace

std::shared_ptr<Storage> storage_by_location(S3Options s3_options) {
  return std::make_shared<StorageByLocation>(std::move(s3_options));
}

}  // namespace ckpt
