#pragma once

#include <ckpt/storage.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace ckpt {

/// How S3Storage moves bytes and handles faults. Where the store is and who we are come from the
/// conventions every AWS tool follows (see S3Storage); these are the knobs they have nothing for.
struct S3Options {
  /// Bytes per multipart part and per ranged GET. A file up to one part is a single PUT. S3 needs
  /// at least 5 MiB for every part but the last. Default: 8 MiB (s3transfer's default).
  uint64_t part_size = 8ull << 20;
  /// Parts (or ranges) of one file in flight at once; a save holds at most this many parts plus
  /// the one being filled in memory. Default: 8.
  int concurrency = 8;
  /// Transient failures (connection refused or reset, timeouts, HTTP 429/500/502/503/504,
  /// SlowDown) are retried on every request (multipart create, parts, complete, abort, ranged
  /// GETs, listings, deletes) with exponential backoff and full jitter: the n-th retry waits a
  /// random time below min(20 s, 2^(n-1) s). 4xx errors and refused TLS certificates are never
  /// retried. `max_attempts` caps the tries per request, the first included (1: no retries);
  /// 0: no cap, the time budget `retry_seconds` alone decides. Default: 0.
  int max_attempts = 0;
  /// The retry budget: no retry starts once this many seconds have passed since the request's
  /// first try, and the last one starts when they end. Default: 60, enough to outlast a gateway
  /// restart or a load-balancer failover.
  double retry_seconds = 60;
  /// A request that moves no byte for this many seconds fails (and is retried); also the connect
  /// timeout. Default: 30.
  double timeout_seconds = 30;
  /// "path" (`http://host/bucket/key`), "virtual" (`http://bucket.host/key`) or "auto": virtual
  /// on AWS, path for any other endpoint (AWS_ENDPOINT_URL). Overrides `addressing_style` in the
  /// AWS config file's `s3` section. Default: "auto".
  std::string addressing = "auto";

  /// Throws CheckpointError naming the field, as the `--chkp.s3_<field>` option that sets it, if a
  /// value is out of range. DefaultCheckpointerArguments::s3_options() checks through this too.
  void validate() const;
};

/// True for a location of the form `s3://bucket[/key...]`.
bool is_s3_url(const std::filesystem::path& location);

/// Checkpoints on S3-compatible object storage (AWS S3, Ceph RADOS Gateway, MinIO, ...), through
/// libcurl (AWS SigV4 signing) and pugixml. Locations are URLs `s3://bucket/prefix/name`; a
/// "directory" is a key prefix ending in `/`.
///
/// Configured like the AWS CLI and boto3, read once at construction: credentials from
/// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN), else the profile
/// (AWS_PROFILE, default "default") in AWS_SHARED_CREDENTIALS_FILE (~/.aws/credentials) or
/// AWS_CONFIG_FILE (~/.aws/config); region from AWS_REGION, AWS_DEFAULT_REGION or the profile's
/// `region` (default us-east-1); endpoint from AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL or the
/// profile's `endpoint_url` (default AWS's regional endpoint). An https:// endpoint's certificate
/// and host name are always verified, against the CA bundle in AWS_CA_BUNDLE or the profile's
/// `ca_bundle` if set, else the system's CAs; a certificate that does not verify fails the first
/// request at once (never retried), naming the endpoint and the reason. Secrets never appear in
/// errors or logs.
///
/// Writes: an object becomes visible only whole, by one PUT (a file up to `part_size`) or by
/// completing a multipart upload whose parts are uploaded in parallel while the file is still
/// being written; every body carries Content-MD5, so the store rejects a corrupted one. A failed
/// or abandoned write aborts its upload; remove_unfinished_writes() aborts the uploads that a
/// process that died left behind. Reads: ranged GETs, in parallel for large reads. Listings:
/// ListObjectsV2, every page. There is no fsync (a completed PUT is durable on the store) and no
/// free-space figure (available_space() is nullopt).
///
///   auto storage = std::make_shared<ckpt::S3Storage>();
///   ckpt::save_state_file(state, "s3://bucket/run/weights.pt", *storage);
///
/// Thread safety: every member may be called from several threads.
class S3Storage final : public Storage {
 public:
  /// Reads the AWS configuration (see above). Throws CheckpointError if `options` is invalid, a
  /// configuration file cannot be parsed or the CA bundle named does not exist; missing
  /// credentials are reported at the first request, naming the URL.
  explicit S3Storage(S3Options options = {});
  ~S3Storage() override;

  std::unique_ptr<WritableFile> create(const std::filesystem::path& path) override;
  std::unique_ptr<RandomAccessFile> open(const std::filesystem::path& path) override;
  std::optional<FileInfo> stat(const std::filesystem::path& path) override;
  std::vector<FileInfo> list(const std::filesystem::path& directory, bool recursive) override;
  void remove(const std::filesystem::path& path) override;
  void create_directories(const std::filesystem::path& directory) override;
  std::optional<uint64_t> available_space(const std::filesystem::path& directory) override;
  /// Aborts the multipart uploads in progress for keys directly in `directory` whose names
  /// `ours` accepts, and returns their locations.
  std::vector<std::filesystem::path> remove_unfinished_writes(
      const std::filesystem::path& directory,
      const std::function<bool(const std::string& final_name)>& ours) override;

  /// The locations directly in `directory` with a multipart upload in progress (a write not yet
  /// committed, or one that a process that died left behind), sorted, without aborting anything.
  std::vector<std::filesystem::path> unfinished_writes(const std::filesystem::path& directory);

  /// What this storage has done so far, for tests and benchmarks.
  struct Counters {
    uint64_t requests = 0;         ///< HTTP requests sent, retries included.
    uint64_t retries = 0;          ///< Requests sent again after a transient failure.
    uint64_t bytes_sent = 0;       ///< Body bytes uploaded by successful requests.
    uint64_t bytes_received = 0;   ///< Body bytes downloaded by successful GETs.
    uint64_t uploads_aborted = 0;  ///< Multipart uploads aborted (failed writes and leftovers).
  };
  Counters counters() const;

  /// The endpoint requests go to (e.g. `http://127.0.0.1:7480`), for messages.
  std::string endpoint() const;

 private:
  struct Impl;
  class Writer;
  class Reader;
  std::shared_ptr<Impl> impl_;
};

/// A Storage for any location this build supports: S3Storage (with `s3_options`, created at the
/// first `s3://` location) for `s3://` URLs, the local filesystem for paths, and a CheckpointError
/// naming the location and its scheme for any other URL (`gs://...`).
std::shared_ptr<Storage> storage_by_location(S3Options s3_options = {});

}  // namespace ckpt
