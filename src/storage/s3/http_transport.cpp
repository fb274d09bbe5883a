#include "storage/s3/http_transport.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace ckpt::detail {
namespace {

struct Transfer {
  const HttpRequest& request;
  HttpResponse& response;
  std::size_t sent = 0;
};

std::size_t read_body(char* out, std::size_t size, std::size_t count, void* user) {
  auto& transfer = *static_cast<Transfer*>(user);
  const std::size_t left = transfer.request.body_size - transfer.sent;
  const std::size_t n = std::min(left, size * count);
  std::memcpy(out, transfer.request.body + transfer.sent, n);
  transfer.sent += n;
  return n;
}

// libcurl rewinds the body when it must send it again on the same request (a redirect, a
// connection closed before the answer).
int seek_body(void* user, curl_off_t offset, int origin) {
  auto& transfer = *static_cast<Transfer*>(user);
  if (origin != SEEK_SET || offset < 0 ||
      static_cast<std::size_t>(offset) > transfer.request.body_size) {
    return CURL_SEEKFUNC_CANTSEEK;
  }
  transfer.sent = static_cast<std::size_t>(offset);
  return CURL_SEEKFUNC_OK;
}

std::size_t write_body(char* data, std::size_t size, std::size_t count, void* user) {
  auto& transfer = *static_cast<Transfer*>(user);
  const std::size_t n = size * count;
  HttpResponse& response = transfer.response;
  if (transfer.request.into != nullptr && response.status / 100 == 2) {
    // More than asked for (a server ignoring the Range): refuse rather than overrun the buffer.
    if (response.received + n > transfer.request.into_size) return 0;
    std::memcpy(transfer.request.into + response.received, data, n);
  } else if (transfer.request.into == nullptr || response.body.size() < (1u << 20)) {
    // A listing is kept whole (a page of 1,000 keys of up to 1 KiB each can pass 1 MiB); an
    // error document in place of ranged bytes is small, and only its start is kept.
    response.body.append(data, n);
  }
  response.received += n;
  return n;
}

std::size_t read_header(char* data, std::size_t size, std::size_t count, void* user) {
  auto& transfer = *static_cast<Transfer*>(user);
  const std::size_t n = size * count;
  const std::string line(data, n);
  if (line.rfind("HTTP/", 0) == 0) {  // a new response (after 100 Continue): forget the last
    transfer.response.headers.clear();
    const auto space = line.find(' ');
    if (space != std::string::npos) transfer.response.status = std::atol(line.c_str() + space + 1);
    return n;
  }
  const auto colon = line.find(':');
  if (colon == std::string::npos) return n;
  std::string name = line.substr(0, colon);
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  std::string value = line.substr(colon + 1);
  value.erase(0, value.find_first_not_of(" \t"));
  while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' '))
    value.pop_back();
  transfer.response.headers[name] = value;
  return n;
}

}  // namespace

bool HttpResponse::transport_transient() const {
  switch (curl_code) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:  // also a reset mid-handshake; a refused certificate is not
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return true;
    default:
      return false;
  }
}

bool HttpResponse::certificate_failure() const {
  switch (curl_code) {
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
      return true;
    default:
      return false;
  }
}

HttpTransport::HttpTransport(AwsConfig config, double timeout_seconds)
    : config_(std::move(config)),
      timeout_seconds_(timeout_seconds),
      sigv4_("aws:amz:" + config_.region + ":s3") {
  static const CURLcode global = curl_global_init(CURL_GLOBAL_DEFAULT);
  if (global != CURLE_OK) {
    throw std::runtime_error(std::string("libcurl failed to initialise: ") +
                             curl_easy_strerror(global));
  }
}

HttpTransport::~HttpTransport() {
  for (void* handle : idle_) curl_easy_cleanup(static_cast<CURL*>(handle));
}

void* HttpTransport::acquire() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!idle_.empty()) {
      void* handle = idle_.back();
      idle_.pop_back();
      return handle;
    }
  }
  CURL* handle = curl_easy_init();
  if (handle == nullptr) throw std::runtime_error("curl_easy_init failed");
  return handle;
}

void HttpTransport::release(void* handle) {
  // Reset keeps the handle's connection cache: the next request reuses the connection.
  curl_easy_reset(static_cast<CURL*>(handle));
  std::lock_guard<std::mutex> lock(mutex_);
  idle_.push_back(handle);
}

HttpResponse HttpTransport::perform(const HttpRequest& request) {
  HttpResponse response;
  Transfer transfer{request, response};
  CURL* curl = static_cast<CURL*>(acquire());
  curl_slist* headers = nullptr;
  for (const auto& header : request.headers) headers = curl_slist_append(headers, header.c_str());
  if (!config_.session_token.empty()) {
    headers =
        curl_slist_append(headers, ("x-amz-security-token: " + config_.session_token).c_str());
  }
  char error[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(curl, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(curl, CURLOPT_AWS_SIGV4, sigv4_.c_str());
  curl_easy_setopt(curl, CURLOPT_USERNAME, config_.access_key_id.c_str());
  curl_easy_setopt(curl, CURLOPT_PASSWORD, config_.secret_access_key.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  const long timeout_ms = std::max(1L, static_cast<long>(std::lround(timeout_seconds_ * 1000)));
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
  // A stalled transfer (no byte for the timeout) fails with CURLE_OPERATION_TIMEDOUT.
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME,
                   std::max(1L, static_cast<long>(std::ceil(timeout_seconds_))));
  curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
  // libcurl's defaults, stated: a certificate that does not verify fails the request.
  curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
  if (!config_.ca_bundle.empty()) curl_easy_setopt(curl, CURLOPT_CAINFO, config_.ca_bundle.c_str());
  // No wait for 100-continue before a body: the store answers an error after the body too. (The
  // header itself must stay: an empty `Expect:` to suppress it, curl 7.88 still signs.)
  curl_easy_setopt(curl, CURLOPT_EXPECT_100_TIMEOUT_MS, 1L);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, read_header);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &transfer);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, write_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &transfer);
  if (request.method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else if (request.method == "PUT") {
    curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(curl, CURLOPT_READFUNCTION, read_body);
    curl_easy_setopt(curl, CURLOPT_READDATA, &transfer);
    curl_easy_setopt(curl, CURLOPT_SEEKFUNCTION, seek_body);
    curl_easy_setopt(curl, CURLOPT_SEEKDATA, &transfer);
    curl_easy_setopt(curl, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(request.body_size));
  } else if (request.method == "POST") {
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, request.body != nullptr ? request.body : "");
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body_size));
  } else if (request.method != "GET") {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, request.method.c_str());
  }
  const CURLcode code = curl_easy_perform(curl);
  response.curl_code = code;
  if (code != CURLE_OK) {
    response.transport_error = error[0] != '\0' ? error : curl_easy_strerror(code);
  } else {
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
  }
  curl_slist_free_all(headers);
  release(curl);
  return response;
}

}  // namespace ckpt::detail
