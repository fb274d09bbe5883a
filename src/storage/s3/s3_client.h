#pragma once

#include "storage/s3/http_transport.h"
#include "storage/s3/s3_xml.h"

#include <ckpt/s3_storage.h>

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ckpt::detail {

/// A location `s3://bucket/key`, split. `key` may be empty (the bucket's root).
struct S3Location {
  std::string bucket;
  std::string key;
  /// Throws CheckpointError naming `location` if it is not `s3://<bucket>[/<key>]`.
  static S3Location parse(const std::string& location);
  std::string url() const { return "s3://" + bucket + (key.empty() ? "" : "/" + key); }
};

/// The S3 operations ckpt uses, each one request sent with retries: transient failures (see
/// S3Options) are tried again after an exponential backoff with full jitter (at most
/// kMaxBackoffSeconds per wait), until the options' time budget is spent (or their attempt cap,
/// if set); anything else throws CheckpointError at once, in one line naming the
/// operation, the `s3://` URL, the HTTP status and S3's error code and message (or, for an
/// https:// endpoint whose certificate does not verify, libcurl's reason and AWS_CA_BUNDLE as the
/// fix). Thread safety: every member may be called from several threads.
class S3Client {
 public:
  /// The longest wait before one retry: AWS's SDKs cap theirs at 20 s too.
  static constexpr double kMaxBackoffSeconds = 20;

  S3Client(AwsConfig config, S3Options options);

  const S3Options& options() const { return options_; }
  const std::string& endpoint() const { return endpoint_; }

  void put_object(const S3Location& at, const char* data, std::size_t size);
  std::string create_multipart_upload(const S3Location& at);
  /// Returns the part's ETag.
  std::string upload_part(const S3Location& at, const std::string& upload_id, int part_number,
                          const char* data, std::size_t size);
  void complete_multipart_upload(const S3Location& at, const std::string& upload_id,
                                 const std::vector<std::string>& etags);
  void abort_multipart_upload(const S3Location& at, const std::string& upload_id);

  struct ObjectHead {
    uint64_t size = 0;
    std::string etag;
  };
  /// nullopt if there is no such object (the bucket existing or not).
  std::optional<ObjectHead> head_object(const S3Location& at);
  /// Reads bytes [offset, offset + size) into `out`; with `etag`, only of that version (the
  /// object replaced meanwhile is an error).
  void get_range(const S3Location& at, uint64_t offset, std::size_t size, char* out,
                 const std::string& etag);
  /// One page of ListObjectsV2 (a missing bucket is an error).
  ObjectListing list_objects(const std::string& bucket, const std::string& prefix,
                             const std::string& delimiter, const std::string& continuation,
                             int max_keys);
  UploadListing list_multipart_uploads(const std::string& bucket, const std::string& prefix,
                                       const std::string& key_marker,
                                       const std::string& upload_id_marker);
  void delete_object(const S3Location& at);

  S3Storage::Counters counters() const;

 private:
  struct Call;
  HttpResponse send(const Call& call);
  std::string url_of(const std::string& bucket, const std::string& key,
                     const std::vector<std::pair<std::string, std::string>>& query) const;

  HttpTransport transport_;
  const S3Options options_;
  const std::string endpoint_;  ///< For messages and path-style URLs.
  bool virtual_hosts_ = false;
  std::atomic<uint64_t> requests_{0}, retries_{0}, bytes_sent_{0}, bytes_received_{0},
      uploads_aborted_{0};
};

}  // namespace ckpt::detail
