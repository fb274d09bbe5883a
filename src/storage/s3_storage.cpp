#include <ckpt/s3_storage.h>

#include <ckpt/checkpoint_error.h>
#include <ckpt/logger.h>

#include "storage/s3/aws_config.h"
#include "storage/s3/part_buffer.h"
#include "storage/s3/s3_client.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <deque>
#include <future>
#include <mutex>
#include <set>
#include <sstream>
#include <utility>

namespace ckpt {

using detail::S3Client;
using detail::S3Location;

struct S3Storage::Impl {
  explicit Impl(S3Options options) : client(detail::load_aws_config(), std::move(options)) {}
  S3Client client;
};

namespace {

std::string shortest(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

// The key prefix of the "directory" `location` names: its key with one trailing `/`, or empty
// for the bucket's root.
std::string directory_prefix(const S3Location& location) {
  std::string key = location.key;
  while (!key.empty() && key.back() == '/') key.pop_back();
  return key.empty() ? key : key + "/";
}

// S3's limit on the parts of one upload.
constexpr int kMaxParts = 10000;

}  // namespace

void S3Options::validate() const {
  // Named as the options that set them (--chkp.s3_*), the way most users meet them; the messages
  // are the only ones: DefaultCheckpointerArguments::s3_options() checks through here.
  if (part_size < (5ull << 20) || part_size > (5ull << 30)) {
    throw CheckpointError("invalid s3_part_size_mb " + shortest(static_cast<double>(part_size) /
                                                                (1 << 20)) +
                          ": must be between 5 and 5120 (S3's limits for a part, in MiB)");
  }
  if (concurrency < 1 || concurrency > 64) {
    throw CheckpointError("invalid s3_concurrency " + std::to_string(concurrency) +
                          ": must be between 1 and 64");
  }
  if (max_attempts < 0) {
    throw CheckpointError("invalid s3_max_attempts " + std::to_string(max_attempts) +
                          ": must be >= 0 (0: no cap, s3_retry_seconds decides; 1: no retries)");
  }
  if (!(retry_seconds >= 0) || !std::isfinite(retry_seconds)) {
    throw CheckpointError("invalid s3_retry_seconds " + shortest(retry_seconds) +
                          ": must be a finite number >= 0");
  }
  if (!(timeout_seconds > 0) || !std::isfinite(timeout_seconds)) {
    throw CheckpointError("invalid s3_timeout_seconds " + shortest(timeout_seconds) +
                          ": must be a finite number > 0");
  }
  if (addressing != "auto" && addressing != "path" && addressing != "virtual") {
    throw CheckpointError("invalid s3_addressing '" + addressing +
                          "': expected auto, path or virtual");
  }
}

bool is_s3_url(const std::filesystem::path& location) {
  return location.native().rfind("s3://", 0) == 0;
}

// A file being written: the bytes fill one part at a time; a full part is uploaded on its own
// thread while the next fills, with at most `concurrency` parts in flight (so memory is bounded
// by (concurrency + 1) x part_size whatever the file's size). A file that fits in one part is a
// single PUT at commit. Nothing is visible under the name before CompleteMultipartUpload (or the
// PUT) succeeds; a failed or abandoned upload is aborted.
class S3Storage::Writer final : public WritableFile {
 public:
  Writer(std::shared_ptr<Impl> impl, S3Location location)
      : impl_(std::move(impl)),
        client_(impl_->client),
        location_(std::move(location)),
        part_size_(static_cast<std::size_t>(client_.options().part_size)),
        buffer_(part_size_) {}

  ~Writer() override {
    if (!committed_) abandon();
  }

  void append(const void* data, std::size_t size) override {
    if (failed_)
      throw CheckpointError("writing " + location_.url() + ": an earlier part failed",
                            location_.url(), EIO);
    const char* bytes = static_cast<const char*>(data);
    while (size > 0) {
      // A full part is sent only once more bytes arrive, so that a file of exactly one part
      // is still a single PUT.
      if (buffer_.room() == 0) send_part();
      const std::size_t n = std::min(size, buffer_.room());
      buffer_.append(bytes, n);
      bytes += n;
      size -= n;
    }
  }

  void commit() override {
    if (committed_) return;
    if (failed_)
      throw CheckpointError("committing " + location_.url() + ": an earlier part failed",
                            location_.url(), EIO);
    try {
      if (upload_id_.empty()) {
        client_.put_object(location_, buffer_.data(), buffer_.size());
      } else {
        send_part();
        while (!in_flight_.empty()) finish_oldest();
        client_.complete_multipart_upload(location_, upload_id_, etags_);
      }
    } catch (...) {
      failed_ = true;
      abandon();
      throw;
    }
    committed_ = true;
    upload_id_.clear();
    buffer_ = {};
  }

 private:
  void send_part() {
    try {
      if (upload_id_.empty()) upload_id_ = client_.create_multipart_upload(location_);
      if (static_cast<int>(etags_.size()) >= kMaxParts) {
        throw CheckpointError("writing " + location_.url() + ": more than " +
                                  std::to_string(kMaxParts) +
                                  " parts (S3's limit): raise s3_part_size_mb",
                              location_.url(), EFBIG);
      }
      while (static_cast<int>(in_flight_.size()) >= client_.options().concurrency) finish_oldest();
      const int number = static_cast<int>(etags_.size()) + 1;
      {
        std::lock_guard<std::mutex> lock(etags_mutex_);  // parts in flight write into etags_
        etags_.emplace_back();
      }
      auto part = std::make_shared<detail::PartBuffer>(std::move(buffer_));
      in_flight_.push_back(std::async(std::launch::async, [this, number, part] {
        etags_done(number,
                   client_.upload_part(location_, upload_id_, number, part->data(), part->size()));
      }));
      buffer_ = detail::PartBuffer(part_size_);
    } catch (...) {
      failed_ = true;
      throw;
    }
  }

  void etags_done(int number, std::string etag) {
    std::lock_guard<std::mutex> lock(etags_mutex_);
    etags_[static_cast<std::size_t>(number - 1)] = std::move(etag);
  }

  void finish_oldest() {
    auto oldest = std::move(in_flight_.front());
    in_flight_.pop_front();
    oldest.get();  // rethrows the part's failure
  }

  // Waits for the parts in flight and aborts the upload; never throws (a destructor calls it).
  void abandon() noexcept {
    while (!in_flight_.empty()) {
      try {
        finish_oldest();
      } catch (...) {
        // The write failed already; what matters now is that nothing stays behind.
      }
    }
    if (upload_id_.empty()) return;
    try {
      client_.abort_multipart_upload(location_, upload_id_);
    } catch (const std::exception& e) {
      // The next checkpointer on this prefix aborts it (remove_unfinished_writes).
      logger()->warn("could not abort the unfinished upload of {}: {}", location_.url(), e.what());
    }
    upload_id_.clear();
  }

  std::shared_ptr<Impl> impl_;
  S3Client& client_;
  const S3Location location_;
  const std::size_t part_size_;
  detail::PartBuffer buffer_;
  std::string upload_id_;
  std::mutex etags_mutex_;
  std::vector<std::string> etags_;
  std::deque<std::future<void>> in_flight_;
  bool failed_ = false;
  bool committed_ = false;
};

// An object opened for reads: its size and ETag from HEAD at open, every read a ranged GET of
// that version only (If-Match), large reads split into parts fetched in parallel.
class S3Storage::Reader final : public RandomAccessFile {
 public:
  Reader(std::shared_ptr<Impl> impl, S3Location location, S3Client::ObjectHead head)
      : impl_(std::move(impl)), location_(std::move(location)), head_(std::move(head)) {}

  uint64_t size() const override { return head_.size; }

  void read(uint64_t offset, std::size_t size, void* out) const override {
    if (offset > head_.size || size > head_.size - offset) {
      throw CheckpointError(location_.url() + " ends at byte " + std::to_string(head_.size) +
                                ", before " + std::to_string(offset) + " + " + std::to_string(size),
                            location_.url(), EIO);
    }
    S3Client& client = impl_->client;
    const std::size_t part = static_cast<std::size_t>(client.options().part_size);
    char* bytes = static_cast<char*>(out);
    if (size <= part) {
      client.get_range(location_, offset, size, bytes, head_.etag);
      return;
    }
    std::deque<std::future<void>> in_flight;
    std::exception_ptr failure;
    const auto finish_oldest = [&] {
      try {
        in_flight.front().get();
      } catch (...) {
        if (!failure) failure = std::current_exception();
      }
      in_flight.pop_front();
    };
    for (std::size_t done = 0; done < size && !failure; done += part) {
      while (static_cast<int>(in_flight.size()) >= client.options().concurrency) finish_oldest();
      const std::size_t n = std::min(part, size - done);
      in_flight.push_back(std::async(std::launch::async, [&client, this, offset, done, n, bytes] {
        client.get_range(location_, offset + done, n, bytes + done, head_.etag);
      }));
    }
    while (!in_flight.empty()) finish_oldest();
    if (failure) std::rethrow_exception(failure);
  }

 private:
  std::shared_ptr<Impl> impl_;
  const S3Location location_;
  const S3Client::ObjectHead head_;
};

S3Storage::S3Storage(S3Options options) {
  options.validate();
  impl_ = std::make_shared<Impl>(std::move(options));
}

S3Storage::~S3Storage() = default;

std::unique_ptr<WritableFile> S3Storage::create(const std::filesystem::path& path) {
  S3Location location = S3Location::parse(path.string());
  if (location.key.empty() || location.key.back() == '/') {
    throw CheckpointError("cannot write " + path.string() + ": it names a directory, not a file",
                          path, EISDIR);
  }
  return std::make_unique<Writer>(impl_, std::move(location));
}

std::unique_ptr<RandomAccessFile> S3Storage::open(const std::filesystem::path& path) {
  S3Location location = S3Location::parse(path.string());
  std::optional<S3Client::ObjectHead> head;
  if (!location.key.empty() && location.key.back() != '/')
    head = impl_->client.head_object(location);
  if (!head) {
    const auto info = stat(path);
    if (info && info->is_directory) {
      throw CheckpointError("cannot open " + path.string() + ": it is a directory", path, EISDIR);
    }
    throw CheckpointError("cannot open " + path.string() + ": no such object", path, ENOENT);
  }
  return std::make_unique<Reader>(impl_, std::move(location), std::move(*head));
}

std::optional<FileInfo> S3Storage::stat(const std::filesystem::path& path) {
  const S3Location location = S3Location::parse(path.string());
  S3Client& client = impl_->client;
  // A listing, not HEAD: it tells a missing bucket (an error) from a missing key, and gives the
  // time in milliseconds (HEAD's Last-Modified has seconds).
  if (!location.key.empty() && location.key.back() != '/') {
    const auto page = client.list_objects(location.bucket, location.key, "", "", 1);
    if (!page.objects.empty() && page.objects.front().key == location.key) {
      const auto& object = page.objects.front();
      return FileInfo{path, false, object.size, object.mtime_ns};
    }
  }
  const std::string prefix = directory_prefix(location);
  const auto page = client.list_objects(location.bucket, prefix, "", "", 1);
  // The bucket itself is a directory even when empty.
  if (prefix.empty() || !page.objects.empty()) return FileInfo{path, true, 0, 0};
  return std::nullopt;
}

std::vector<FileInfo> S3Storage::list(const std::filesystem::path& directory, bool recursive) {
  const S3Location location = S3Location::parse(directory.string());
  const std::string prefix = directory_prefix(location);
  std::string base = directory.string();
  while (!base.empty() && base.back() == '/') base.pop_back();
  std::vector<FileInfo> files;
  std::string continuation;
  do {
    const auto page = impl_->client.list_objects(location.bucket, prefix, recursive ? "" : "/",
                                                 continuation, 1000);
    for (const auto& object : page.objects) {
      const std::string relative = object.key.substr(prefix.size());
      if (relative.empty()) continue;  // a "folder" marker object some tools create
      files.push_back(FileInfo{base + "/" + relative, false, object.size, object.mtime_ns});
    }
    continuation = page.truncated ? page.next_continuation_token : "";
  } while (!continuation.empty());
  std::sort(files.begin(), files.end(),
            [](const FileInfo& a, const FileInfo& b) { return a.path < b.path; });
  return files;
}

void S3Storage::remove(const std::filesystem::path& path) {
  const S3Location location = S3Location::parse(path.string());
  if (location.key.empty()) {
    throw CheckpointError("cannot remove " + path.string() + ": it is a bucket, not a file", path,
                          EISDIR);
  }
  impl_->client.delete_object(location);
}

void S3Storage::create_directories(const std::filesystem::path& directory) {
  S3Location::parse(directory.string());  // a directory is a key prefix: nothing to create
}

std::optional<uint64_t> S3Storage::available_space(const std::filesystem::path& directory) {
  S3Location::parse(directory.string());
  return std::nullopt;  // an object store has no free-space figure
}

namespace {

// Every multipart upload in progress for a key directly in `directory` (all pages).
std::vector<detail::UploadListing::Upload> uploads_in(S3Client& client,
                                                      const std::filesystem::path& directory) {
  const S3Location location = S3Location::parse(directory.string());
  const std::string prefix = directory_prefix(location);
  std::vector<detail::UploadListing::Upload> uploads;
  std::string key_marker, upload_marker;
  while (true) {
    const auto page =
        client.list_multipart_uploads(location.bucket, prefix, key_marker, upload_marker);
    for (const auto& upload : page.uploads) {
      const std::string name = upload.key.substr(prefix.size());
      if (!name.empty() && name.find('/') == std::string::npos) uploads.push_back(upload);
    }
    if (!page.truncated || (page.next_key_marker.empty() && page.next_upload_id_marker.empty()))
      break;
    key_marker = page.next_key_marker;
    upload_marker = page.next_upload_id_marker;
  }
  return uploads;
}

std::string without_trailing_slashes(std::string text) {
  while (!text.empty() && text.back() == '/') text.pop_back();
  return text;
}

}  // namespace

std::vector<std::filesystem::path> S3Storage::unfinished_writes(
    const std::filesystem::path& directory) {
  const std::string base = without_trailing_slashes(directory.string());
  std::set<std::filesystem::path> paths;
  for (const auto& upload : uploads_in(impl_->client, directory)) {
    paths.insert(base + "/" + upload.key.substr(upload.key.rfind('/') + 1));
  }
  return {paths.begin(), paths.end()};
}

std::vector<std::filesystem::path> S3Storage::remove_unfinished_writes(
    const std::filesystem::path& directory,
    const std::function<bool(const std::string& final_name)>& ours) {
  const S3Location location = S3Location::parse(directory.string());
  const std::string base = without_trailing_slashes(directory.string());
  std::set<std::filesystem::path> aborted;
  for (const auto& upload : uploads_in(impl_->client, directory)) {
    const std::string name = upload.key.substr(upload.key.rfind('/') + 1);
    if (!ours(name)) continue;
    impl_->client.abort_multipart_upload({location.bucket, upload.key}, upload.upload_id);
    aborted.insert(base + "/" + name);
  }
  return {aborted.begin(), aborted.end()};
}

S3Storage::Counters S3Storage::counters() const { return impl_->client.counters(); }

std::string S3Storage::endpoint() const { return impl_->client.endpoint(); }

}  // namespace ckpt
