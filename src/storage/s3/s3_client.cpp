#include "storage/s3/s3_client.h"

#include "storage/s3/digests.h"

#include <ckpt/checkpoint_error.h>
#include <ckpt/logger.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

namespace ckpt::detail {

struct S3Client::Call {
  std::string operation;  ///< S3's name for it, e.g. "PutObject".
  std::string location;   ///< The s3:// URL it is about, for messages.
  HttpRequest request;
  std::vector<long> accepted;  ///< Statuses that mean success.
};

namespace {

using Clock = std::chrono::steady_clock;
using Query = std::vector<std::pair<std::string, std::string>>;

// AWS SigV4's URI encoding: every byte but the unreserved ones as %XX (uppercase); `/` kept in a
// path. The query must reach libcurl already canonical, since curl 7.88 signs it as given.
std::string uri_encode(const std::string& text, bool keep_slash) {
  static const char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
        (keep_slash && c == '/')) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

bool dns_compatible(const std::string& bucket) {
  if (bucket.size() < 3 || bucket.size() > 63) return false;
  for (const char c : bucket) {
    if (!(std::islower(static_cast<unsigned char>(c)) ||
          std::isdigit(static_cast<unsigned char>(c)) || c == '-')) {
      return false;
    }
  }
  return bucket.front() != '-' && bucket.back() != '-';
}

int errno_for(long status) {
  if (status == 404) return ENOENT;
  if (status == 403) return EACCES;
  return EIO;
}

std::string seconds_text(double seconds) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f s", seconds);
  return text;
}

// Exponential backoff with "full jitter" (AWS's recommendation, as its SDKs do): the n-th retry
// waits a random time in [0, min(20 s, 2^(n-1) s)). Many parts failing in one outage then spread
// their retries out, and an outage of tens of seconds is outlasted by a few tries, not hundreds.
std::chrono::duration<double> backoff(int failed_attempts) {
  static thread_local std::mt19937 random{std::random_device{}()};
  const double ceiling = std::min(S3Client::kMaxBackoffSeconds,
                                  static_cast<double>(1 << std::min(failed_attempts - 1, 10)));
  std::uniform_real_distribution<double> jitter(0.0, ceiling);
  return std::chrono::duration<double>(jitter(random));
}

// What to do about a refused certificate: a store with a private CA needs its bundle named, the
// way every AWS tool is told.
std::string certificate_hint(const AwsConfig& config) {
  if (config.ca_bundle.empty()) {
    return " (if the store's certificate is signed by a private CA, set AWS_CA_BUNDLE, or "
           "ca_bundle in the profile of ~/.aws/config, to that CA's PEM file)";
  }
  return " (verified against the CA bundle " + config.ca_bundle + " from " +
         config.ca_bundle_source + ")";
}

}  // namespace

S3Location S3Location::parse(const std::string& location) {
  if (location.rfind("s3://", 0) != 0) {
    throw CheckpointError(location + " is not an s3:// URL", location, EINVAL);
  }
  const std::string rest = location.substr(5);
  const auto slash = rest.find('/');
  S3Location parsed;
  parsed.bucket = rest.substr(0, slash);
  if (slash != std::string::npos) parsed.key = rest.substr(slash + 1);
  if (parsed.bucket.empty()) {
    throw CheckpointError(location + " names no bucket: expected s3://bucket/prefix", location,
                          EINVAL);
  }
  return parsed;
}

S3Client::S3Client(AwsConfig config, S3Options options)
    : transport_(config, options.timeout_seconds),
      options_(std::move(options)),
      endpoint_(config.endpoint.empty() ? "https://s3." + config.region + ".amazonaws.com"
                                        : config.endpoint) {
  std::string addressing = options_.addressing;
  if (addressing == "auto") addressing = config.addressing_style;
  if (addressing == "auto" || addressing.empty())
    addressing = config.endpoint.empty() ? "virtual" : "path";
  virtual_hosts_ = addressing == "virtual";
}

std::string S3Client::url_of(const std::string& bucket, const std::string& key,
                             const Query& query) const {
  std::string url;
  if (virtual_hosts_ && dns_compatible(bucket)) {
    const auto host = endpoint_.find("://") + 3;
    url = endpoint_.substr(0, host) + bucket + "." + endpoint_.substr(host) + "/" +
          uri_encode(key, true);
  } else {
    url = endpoint_ + "/" + bucket + "/" + uri_encode(key, true);
  }
  Query sorted = query;
  std::sort(sorted.begin(), sorted.end());
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    url += (i == 0 ? "?" : "&") + uri_encode(sorted[i].first, false) + "=" +
           uri_encode(sorted[i].second, false);
  }
  return url;
}

HttpResponse S3Client::send(const Call& call) {
  const AwsConfig& config = transport_.config();
  if (config.access_key_id.empty() || config.secret_access_key.empty()) {
    throw CheckpointError(call.operation + " " + call.location +
                              ": no AWS credentials: set AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY, or aws_access_key_id and "
                              "aws_secret_access_key for profile '" +
                              config.profile + "' in ~/.aws/credentials (AWS_PROFILE)",
                          call.location, EACCES);
  }
  const auto start = Clock::now();
  for (int attempt = 1;; ++attempt) {
    ++requests_;
    HttpResponse response = transport_.perform(call.request);
    std::string failure;
    bool transient = false;
    int error_number = EIO;
    if (response.certificate_failure()) {
      failure = "the TLS certificate of " + endpoint_ +
                " was not accepted: " + response.transport_error + certificate_hint(config);
      error_number = EACCES;
    } else if (response.curl_code != 0) {
      failure = response.transport_error;
      transient = response.transport_transient();
      if (failure.find("timed out") != std::string::npos) error_number = ETIMEDOUT;
    } else if (std::find(call.accepted.begin(), call.accepted.end(), response.status) !=
               call.accepted.end()) {
      if (call.request.into == nullptr || response.received == call.request.into_size) {
        bytes_sent_ += call.request.body_size;
        bytes_received_ += response.received;
        return response;
      }
      failure = "the answer ended after " + std::to_string(response.received) + " of " +
                std::to_string(call.request.into_size) + " bytes";
      transient = true;
    } else {
      const S3ErrorBody error = parse_error_body(response.body);
      failure = "HTTP " + std::to_string(response.status);
      if (!error.code.empty()) failure += " " + error.code;
      if (!error.message.empty()) failure += ": " + error.message;
      if (response.status == 412) failure += " (the object changed while being read)";
      // BadDigest: the body arrived corrupted (Content-MD5), and it is in memory to send again.
      transient = response.status >= 500 || response.status == 429 || error.code == "SlowDown" ||
                  error.code == "RequestTimeout" || error.code == "BadDigest" ||
                  error.code == "XAmzContentSHA256Mismatch";
      error_number = errno_for(response.status);
    }
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    const bool out_of_tries = options_.max_attempts > 0 && attempt >= options_.max_attempts;
    if (!transient || out_of_tries || elapsed >= options_.retry_seconds) {
      std::string message = call.operation + " " + call.location + ": " + failure;
      if (attempt > 1) {
        message += " (gave up after " + std::to_string(attempt) + " tries over " +
                   seconds_text(elapsed) + ")";
      }
      throw CheckpointError(message + " [endpoint " + endpoint_ + "]", call.location, error_number);
    }
    // The last try starts when the time budget ends, not a backoff later.
    const auto delay = std::min(backoff(attempt), std::chrono::duration<double>(
                                                      options_.retry_seconds - elapsed));
    logger()->warn("{} {}: {}; trying again in {} (try {}{}, {} of {} retry budget left)",
                   call.operation, call.location, failure, seconds_text(delay.count()),
                   attempt + 1,
                   options_.max_attempts > 0 ? " of " + std::to_string(options_.max_attempts)
                                             : std::string(),
                   seconds_text(options_.retry_seconds - elapsed),
                   seconds_text(options_.retry_seconds));
    ++retries_;
    std::this_thread::sleep_for(delay);
  }
}

void S3Client::put_object(const S3Location& at, const char* data, std::size_t size) {
  Call call{"PutObject", at.url(), {}, {200}};
  call.request.method = "PUT";
  call.request.url = url_of(at.bucket, at.key, {});
  call.request.headers = {"x-amz-content-sha256: UNSIGNED-PAYLOAD",
                          "Content-MD5: " + content_md5(data, size)};
  call.request.body = data;
  call.request.body_size = size;
  send(call);
}

std::string S3Client::create_multipart_upload(const S3Location& at) {
  Call call{"CreateMultipartUpload", at.url(), {}, {200}};
  call.request.method = "POST";
  call.request.url = url_of(at.bucket, at.key, {{"uploads", ""}});
  call.request.headers = {"x-amz-content-sha256: " + sha256_hex("", 0)};
  const HttpResponse response = send(call);
  return parse_upload_id(response.body, call.operation + " " + call.location);
}

std::string S3Client::upload_part(const S3Location& at, const std::string& upload_id,
                                  int part_number, const char* data, std::size_t size) {
  Call call{"UploadPart " + std::to_string(part_number) + " of", at.url(), {}, {200}};
  call.request.method = "PUT";
  call.request.url = url_of(at.bucket, at.key,
                            {{"partNumber", std::to_string(part_number)}, {"uploadId", upload_id}});
  call.request.headers = {"x-amz-content-sha256: UNSIGNED-PAYLOAD",
                          "Content-MD5: " + content_md5(data, size)};
  call.request.body = data;
  call.request.body_size = size;
  const HttpResponse response = send(call);
  const auto etag = response.headers.find("etag");
  if (etag == response.headers.end() || etag->second.empty()) {
    throw CheckpointError(call.operation + " " + call.location + ": the store's answer has no ETag",
                          call.location, EIO);
  }
  return etag->second;
}

void S3Client::complete_multipart_upload(const S3Location& at, const std::string& upload_id,
                                         const std::vector<std::string>& etags) {
  const std::string body = complete_multipart_body(etags);
  Call call{"CompleteMultipartUpload", at.url(), {}, {200}};
  call.request.method = "POST";
  call.request.url = url_of(at.bucket, at.key, {{"uploadId", upload_id}});
  call.request.headers = {"x-amz-content-sha256: " + sha256_hex(body.data(), body.size()),
                          "Content-Type: application/xml"};
  call.request.body = body.data();
  call.request.body_size = body.size();
  const HttpResponse response = send(call);
  // S3 may answer 200 and still fail the completion in the body.
  const S3ErrorBody error = parse_complete_result(response.body, call.operation + " " + at.url());
  if (!error.code.empty()) {
    throw CheckpointError(call.operation + " " + call.location + ": " + error.code +
                              (error.message.empty() ? "" : ": " + error.message) + " [endpoint " +
                              endpoint_ + "]",
                          call.location, EIO);
  }
}

void S3Client::abort_multipart_upload(const S3Location& at, const std::string& upload_id) {
  Call call{"AbortMultipartUpload", at.url(), {}, {204, 200, 404}};
  call.request.method = "DELETE";
  call.request.url = url_of(at.bucket, at.key, {{"uploadId", upload_id}});
  call.request.headers = {"x-amz-content-sha256: UNSIGNED-PAYLOAD"};
  send(call);
  ++uploads_aborted_;
}

std::optional<S3Client::ObjectHead> S3Client::head_object(const S3Location& at) {
  Call call{"HeadObject", at.url(), {}, {200, 404}};
  call.request.method = "HEAD";
  call.request.url = url_of(at.bucket, at.key, {});
  call.request.headers = {"x-amz-content-sha256: UNSIGNED-PAYLOAD"};
  const HttpResponse response = send(call);
  if (response.status == 404) return std::nullopt;
  ObjectHead head;
  const auto length = response.headers.find("content-length");
  if (length == response.headers.end()) {
    throw CheckpointError(call.operation + " " + call.location + ": no Content-Length",
                          call.location, EIO);
  }
  head.size = std::strtoull(length->second.c_str(), nullptr, 10);
  const auto etag = response.headers.find("etag");
  if (etag != response.headers.end()) head.etag = etag->second;
  return head;
}

void S3Client::get_range(const S3Location& at, uint64_t offset, std::size_t size, char* out,
                         const std::string& etag) {
  if (size == 0) return;
  Call call{"GetObject", at.url(), {}, {206, 200}};
  call.request.method = "GET";
  call.request.url = url_of(at.bucket, at.key, {});
  call.request.headers = {
      "x-amz-content-sha256: UNSIGNED-PAYLOAD",
      "Range: bytes=" + std::to_string(offset) + "-" + std::to_string(offset + size - 1)};
  if (!etag.empty()) call.request.headers.push_back("If-Match: " + etag);
  call.request.into = out;
  call.request.into_size = size;
  send(call);
}

ObjectListing S3Client::list_objects(const std::string& bucket, const std::string& prefix,
                                     const std::string& delimiter, const std::string& continuation,
                                     int max_keys) {
  Query query{{"list-type", "2"}, {"max-keys", std::to_string(max_keys)}, {"prefix", prefix}};
  if (!delimiter.empty()) query.emplace_back("delimiter", delimiter);
  if (!continuation.empty()) query.emplace_back("continuation-token", continuation);
  Call call{"ListObjectsV2", "s3://" + bucket + "/" + prefix, {}, {200}};
  call.request.method = "GET";
  call.request.url = url_of(bucket, "", query);
  call.request.headers = {"x-amz-content-sha256: UNSIGNED-PAYLOAD"};
  const HttpResponse response = send(call);
  return parse_list_objects(response.body, call.operation + " " + call.location);
}

UploadListing S3Client::list_multipart_uploads(const std::string& bucket, const std::string& prefix,
                                               const std::string& key_marker,
                                               const std::string& upload_id_marker) {
  Query query{{"uploads", ""}, {"prefix", prefix}};
  if (!key_marker.empty()) query.emplace_back("key-marker", key_marker);
  if (!upload_id_marker.empty()) query.emplace_back("upload-id-marker", upload_id_marker);
  Call call{"ListMultipartUploads", "s3://" + bucket + "/" + prefix, {}, {200}};
  call.request.method = "GET";
  call.request.url = url_of(bucket, "", query);
  call.request.headers = {"x-amz-content-sha256: UNSIGNED-PAYLOAD"};
  const HttpResponse response = send(call);
  return parse_list_uploads(response.body, call.operation + " " + call.location);
}

void S3Client::delete_object(const S3Location& at) {
  Call call{"DeleteObject", at.url(), {}, {204, 200, 404}};
  call.request.method = "DELETE";
  call.request.url = url_of(at.bucket, at.key, {});
  call.request.headers = {"x-amz-content-sha256: UNSIGNED-PAYLOAD"};
  send(call);
}

S3Storage::Counters S3Client::counters() const {
  S3Storage::Counters counters;
  counters.requests = requests_;
  counters.retries = retries_;
  counters.bytes_sent = bytes_sent_;
  counters.bytes_received = bytes_received_;
  counters.uploads_aborted = uploads_aborted_;
  return counters;
}

}  // namespace ckpt::detail
