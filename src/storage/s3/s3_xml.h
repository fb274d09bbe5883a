#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ckpt::detail {

// S3's XML documents, read and written with pugixml. Every parse function throws
// CheckpointError naming `what` (the request, e.g. "ListObjectsV2 s3://bucket/run/") if the
// document is not the one S3 sends.

/// S3's `<Error><Code>..</Code><Message>..</Message></Error>`; empty fields if the body is not
/// one (a HEAD answer has no body).
struct S3ErrorBody {
  std::string code;
  std::string message;
};
S3ErrorBody parse_error_body(const std::string& xml);

/// One page of ListObjectsV2.
struct ObjectListing {
  struct Object {
    std::string key;
    uint64_t size = 0;
    int64_t mtime_ns = 0;  ///< LastModified (S3 gives milliseconds).
  };
  std::vector<Object> objects;
  std::vector<std::string> common_prefixes;
  bool truncated = false;
  std::string next_continuation_token;
};
ObjectListing parse_list_objects(const std::string& xml, const std::string& what);

/// InitiateMultipartUploadResult's UploadId.
std::string parse_upload_id(const std::string& xml, const std::string& what);

/// One page of ListMultipartUploads.
struct UploadListing {
  struct Upload {
    std::string key;
    std::string upload_id;
  };
  std::vector<Upload> uploads;
  bool truncated = false;
  std::string next_key_marker;
  std::string next_upload_id_marker;
};
UploadListing parse_list_uploads(const std::string& xml, const std::string& what);

/// The CompleteMultipartUpload body for parts 1..etags.size() with these ETags.
std::string complete_multipart_body(const std::vector<std::string>& etags);

/// The CompleteMultipartUploadResult is only checked to be one: a 200 answer to that request may
/// still carry an `<Error>` (S3 documents this), which is returned; Ceph sends an empty ETag.
S3ErrorBody parse_complete_result(const std::string& xml, const std::string& what);

/// Milliseconds-precision ISO 8601 UTC time (`2026-12-02T13:04:05.123Z`) in nanoseconds since the
/// epoch; 0 if it cannot be read.
int64_t parse_iso8601_ns(const std::string& text);

}  // namespace ckpt::detail
