#pragma once

#include "storage/s3/aws_config.h"

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace ckpt::detail {

/// One HTTP request to the store, signed with AWS SigV4 by libcurl.
struct HttpRequest {
  std::string method;                ///< GET, HEAD, PUT, POST or DELETE.
  std::string url;                   ///< With the query already canonical (sorted, `k=v`).
  std::vector<std::string> headers;  ///< Extra `Name: value` lines (signed when x-amz-*).
  const char* body = nullptr;        ///< PUT/POST body (not owned), or null.
  std::size_t body_size = 0;
  char* into = nullptr;  ///< GET: write the body here (exactly `into_size` bytes fit), not `body`.
  std::size_t into_size = 0;
};

/// What came back: either a transport failure (`curl_code` != 0) or an HTTP status.
struct HttpResponse {
  int curl_code = 0;
  std::string transport_error;  ///< libcurl's message when `curl_code` != 0.
  long status = 0;
  std::string body;                            ///< Unless the request wrote `into`.
  std::size_t received = 0;                    ///< Body bytes received.
  std::map<std::string, std::string> headers;  ///< Lowercase names.
  bool transport_transient() const;            ///< A failure worth another try.
  /// The endpoint's TLS certificate was refused (not signed by a trusted CA, wrong host name,
  /// expired) or the CA bundle could not be read: never transient, another try gets the same.
  bool certificate_failure() const;
};

/// Sends requests through libcurl, keeping finished handles (and so their connections) for
/// reuse. An https:// endpoint's certificate and host name are always verified, against the
/// config's `ca_bundle` if it names one, else the system's CAs. Thread safety: perform() may be
/// called from several threads.
class HttpTransport {
 public:
  HttpTransport(AwsConfig config, double timeout_seconds);
  ~HttpTransport();
  HttpTransport(const HttpTransport&) = delete;
  HttpTransport& operator=(const HttpTransport&) = delete;

  /// Never throws for a failed transfer or an HTTP error status: the caller decides what to retry.
  HttpResponse perform(const HttpRequest& request);

  const AwsConfig& config() const { return config_; }

 private:
  void* acquire();
  void release(void* handle);

  const AwsConfig config_;
  const double timeout_seconds_;
  const std::string sigv4_;  ///< `aws:amz:<region>:s3`
  std::mutex mutex_;
  std::vector<void*> idle_;  ///< CURL* handles
};

}  // namespace ckpt::detail
