// S3Storage and the checkpointer on s3:// locations, against the real Ceph RADOS Gateway that
// ctest starts (fixture s3, scripts/s3-server.sh), cross-checked with boto3, torch.load and the
// AWS CLI, with faults from a TCP proxy (tests/python/tcp_proxy.py) between ckpt and the gateway.

#include <ckpt/checkpoint_error.h>
#include <ckpt/default_checkpointer.h>
#include <ckpt/s3_storage.h>
#include <ckpt/safetensors.h>
#include <ckpt/serialization.h>
#include <ckpt/state_dict.h>

#include <torch/torch.h>

#include "second_gateway.h"
#include "test_util.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <algorithm>
#include <chrono>
#include <cstring>
#include <future>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

extern char** environ;

namespace fs = std::filesystem;
using ckpt::CheckpointError;
using ckpt::S3Options;
using ckpt::S3Storage;
using ckpt::test::message_contains;
using ckpt::test::quote;
using ckpt::test::run_command;
using ckpt::test::s3_fixture;
using ckpt::test::ScopedEnv;
using ckpt::test::SecondGateway;
using ckpt::test::TempDir;
using ckpt::test::unique_s3_prefix;

namespace {

S3Options small_parts() {
  S3Options options;
  options.part_size = 5 << 20;  // S3's smallest
  options.concurrency = 3;
  return options;
}

std::string random_bytes(std::size_t size, unsigned seed) {
  std::mt19937_64 random(seed);
  std::string bytes(size, '\0');
  for (std::size_t i = 0; i + 8 <= size; i += 8) {
    const uint64_t word = random();
    std::memcpy(&bytes[i], &word, 8);
  }
  return bytes;
}

void put(ckpt::Storage& storage, const fs::path& path, const std::string& bytes,
         std::size_t chunk = 1 << 20) {
  auto file = storage.create(path);
  for (std::size_t at = 0; at < bytes.size(); at += chunk) {
    file->append(bytes.data() + at, std::min(chunk, bytes.size() - at));
  }
  file->commit();
}

std::string get(ckpt::Storage& storage, const fs::path& path) {
  return ckpt::read_small_file(storage, path, std::size_t{1} << 40);
}

std::string key_of(const std::string& url) {
  return url.substr(url.find('/', 5) + 1);  // s3://bucket/<key>
}

std::string boto3(const std::string& arguments) {
  s3_fixture();
  return ckpt::test::run_python("s3_cross_check.py", arguments);
}

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

// The keys with multipart uploads in progress under `prefix`, as boto3 sees them.
std::string uploads_under(const std::string& prefix) {
  return trimmed(boto3("uploads " + s3_fixture().bucket + " " + quote(key_of(prefix) + "/")));
}

ckpt::Checkpoint checkpoint_at(int64_t epoch, int64_t width = 16) {
  ckpt::Checkpoint checkpoint;
  torch::manual_seed(epoch);
  checkpoint.module_interface_state.insert_or_assign("fc.weight", torch::randn({width, width}));
  checkpoint.module_interface_state.insert_or_assign("fc.bias", torch::randn({width}));
  checkpoint.trainer_state.insert_or_assign("last_epoch", epoch);
  return checkpoint;
}

// A process of our own (the fault proxy), stopped by its PID at the end of the test.
class Proxy {
 public:
  Proxy(const std::string& fault, int connections, int after_bytes) {
    const std::string port = s3_fixture().endpoint.substr(s3_fixture().endpoint.rfind(':') + 1);
    port_file_ = dir_ / "port";
    const std::string script = std::string(CKPT_SOURCE_DIR) + "/tests/python/tcp_proxy.py";
    const std::string python = ckpt::test::python();
    std::vector<std::string> argv{python,
                                  script,
                                  port,
                                  port_file_.string(),
                                  "--fault",
                                  fault,
                                  "--connections",
                                  std::to_string(connections),
                                  "--after",
                                  std::to_string(after_bytes)};
    std::vector<char*> raw;
    for (auto& arg : argv) raw.push_back(arg.data());
    raw.push_back(nullptr);
    BOOST_REQUIRE(::posix_spawn(&pid_, raw[0], nullptr, nullptr, raw.data(), environ) == 0);
    for (int i = 0; i < 200 && !fs::exists(port_file_); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
    BOOST_REQUIRE_MESSAGE(fs::exists(port_file_), "the fault proxy did not start");
    endpoint_ = "http://127.0.0.1:" + ckpt::test::read_text(port_file_, *ckpt::Storage::local());
  }
  ~Proxy() {
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  const std::string& endpoint() const { return endpoint_; }

 private:
  TempDir dir_;
  fs::path port_file_;
  pid_t pid_ = -1;
  std::string endpoint_;
};

// The fixture's HTTPS gateway (scripts/s3-server.sh tls-gateway): a radosgw on the same cluster
// whose certificate, for 127.0.0.1 and localhost, is signed by a CA made for it alone. Stopped by
// its PID at the end of the test (and by `s3-server.sh stop` after a crash).
class TlsGateway {
 public:
  TlsGateway() {
    const auto result = run_command(script_ + " tls-gateway start " + fixture_);
    BOOST_REQUIRE_MESSAGE(result.exit_code == 0, result.output);
    // Its last two lines: the https URL, then the CA's PEM file.
    std::vector<std::string> lines;
    std::istringstream in(result.output);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    BOOST_REQUIRE(lines.size() >= 2);
    url_ = lines[lines.size() - 2];
    ca_ = lines.back();
    BOOST_REQUIRE_MESSAGE(url_.rfind("https://127.0.0.1:", 0) == 0, result.output);
    BOOST_REQUIRE(fs::exists(ca_));
  }
  ~TlsGateway() { run_command(script_ + " tls-gateway stop " + fixture_); }
  TlsGateway(const TlsGateway&) = delete;
  TlsGateway& operator=(const TlsGateway&) = delete;

  const std::string& url() const { return url_; }  ///< https://127.0.0.1:PORT
  const std::string& ca() const { return ca_; }    ///< the CA that signed its certificate

 private:
  const std::string script_ = quote(std::string(CKPT_SOURCE_DIR) + "/scripts/s3-server.sh");
  const std::string fixture_ = quote(s3_fixture().directory);
  std::string url_, ca_;
};

}  // namespace

BOOST_AUTO_TEST_SUITE(s3_storage)

// A file of one part is one PUT; a larger one is a multipart upload of parts sent in parallel;
// both read back byte for byte, also by ranges across part boundaries and in parallel.
BOOST_AUTO_TEST_CASE(single_put_and_multipart_round_trip) {
  s3_fixture();
  S3Storage storage(small_parts());
  const std::string prefix = unique_s3_prefix("roundtrip");
  const std::string small = random_bytes(100000, 1);
  const std::string large = random_bytes((23 << 20) + 12345, 2);  // 5 parts, the last short
  const auto before = storage.counters();
  put(storage, prefix + "/small.bin", small);
  BOOST_TEST(storage.counters().requests - before.requests == 1u);  // one PUT, nothing else
  put(storage, prefix + "/large.bin", large, 3 << 20);
  // create + 5 parts + complete
  BOOST_TEST(storage.counters().requests - before.requests == 1u + 7u);
  BOOST_TEST(get(storage, prefix + "/small.bin") == small);
  BOOST_TEST(get(storage, prefix + "/large.bin") == large);
  const auto file = storage.open(prefix + "/large.bin");
  BOOST_TEST(file->size() == large.size());
  std::string range(64, '\0');
  const uint64_t boundary = 5 << 20;
  file->read(boundary - 32, range.size(), range.data());
  BOOST_TEST(range == large.substr(boundary - 32, 64));
  BOOST_CHECK_EXCEPTION(file->read(large.size() - 10, 11, range.data()), CheckpointError,
                        message_contains(prefix + "/large.bin", "ends at byte"));
  // What boto3 downloads is what was written.
  TempDir local;
  boto3("download " + s3_fixture().bucket + " " + quote(key_of(prefix) + "/large.bin") + " " +
        quote((local / "large.bin").string()));
  BOOST_TEST(ckpt::test::read_text(local / "large.bin", *ckpt::Storage::local()) == large);
  BOOST_TEST(uploads_under(prefix).empty());
}

// Nothing is visible under a name before commit; a writer dropped uncommitted after some parts
// went out aborts its upload and leaves nothing, and the object it would have replaced is intact.
BOOST_AUTO_TEST_CASE(uncommitted_writes_leave_nothing) {
  S3Storage storage(small_parts());
  const std::string prefix = unique_s3_prefix("uncommitted");
  const std::string old_bytes = random_bytes(1000, 3);
  put(storage, prefix + "/model_1.pt", old_bytes);
  {
    auto file = storage.create(prefix + "/model_1.pt");
    const std::string bytes = random_bytes(12 << 20, 4);
    file->append(bytes.data(), bytes.size());  // two parts are out
    BOOST_TEST(uploads_under(prefix) == key_of(prefix) + "/model_1.pt");
    BOOST_TEST(get(storage, prefix + "/model_1.pt") == old_bytes);
  }
  BOOST_TEST(get(storage, prefix + "/model_1.pt") == old_bytes);
  BOOST_TEST(uploads_under(prefix).empty());
  BOOST_TEST(storage.counters().uploads_aborted == 1u);
  {
    auto file = storage.create(prefix + "/model_2.pt");
    file->append("abc", 3);
  }
  BOOST_TEST(!storage.stat(prefix + "/model_2.pt"));
}

// ListObjectsV2 pages: more than 1,000 objects are all listed, sorted; a non-recursive listing
// leaves out what is below a sub-prefix; stat tells files, directories and nothing apart.
BOOST_AUTO_TEST_CASE(listing_pages_past_1000_objects) {
  S3Storage storage;
  const std::string prefix = unique_s3_prefix("many");
  const int count = 1003;
  std::vector<std::future<void>> writers;
  for (int t = 0; t < 8; ++t) {
    writers.push_back(std::async(std::launch::async, [&, t] {
      for (int i = t; i < count; i += 8) {
        char name[32];
        std::snprintf(name, sizeof name, "/f%05d", i);
        put(storage, prefix + name, std::to_string(i));
      }
    }));
  }
  for (auto& writer : writers) writer.get();
  put(storage, prefix + "/sub/deeper.bin", "x");
  const auto before = storage.counters().requests;
  const auto files = storage.list(prefix, /*recursive=*/false);
  BOOST_TEST(storage.counters().requests - before == 2u);  // two pages
  BOOST_REQUIRE(files.size() == static_cast<std::size_t>(count));
  BOOST_TEST(files.front().path == fs::path(prefix + "/f00000"));
  BOOST_TEST(files.back().path == fs::path(prefix + "/f01002"));
  BOOST_TEST(files[500].size == 3u);
  BOOST_TEST(files[500].mtime_ns > 0);
  BOOST_TEST(storage.list(prefix, /*recursive=*/true).size() ==
             static_cast<std::size_t>(count + 1));
  BOOST_TEST(storage.list(prefix + "/", /*recursive=*/false).size() ==
             static_cast<std::size_t>(count));
  BOOST_TEST(storage.stat(prefix + "/sub")->is_directory);
  BOOST_TEST(!storage.stat(prefix + "/f00001")->is_directory);
  BOOST_TEST(!storage.stat(prefix + "/f0000"));  // a prefix of a key is not a file
  BOOST_TEST(!storage.stat(prefix + "/nothing"));
  BOOST_TEST(storage.list(prefix + "/nothing", true).empty());
  BOOST_CHECK_EXCEPTION(storage.open(prefix + "/nothing"), CheckpointError,
                        [](const CheckpointError& e) { return e.error_number() == ENOENT; });
  BOOST_CHECK_EXCEPTION(storage.open(prefix + "/sub"), CheckpointError,
                        [](const CheckpointError& e) { return e.error_number() == EISDIR; });
  // The AWS CLI sees the same listing.
  const auto aws = run_command("/usr/bin/aws --endpoint-url " + s3_fixture().endpoint + " s3 ls " +
                               quote(prefix + "/") + " | grep -c ' f0'");
  BOOST_TEST(trimmed(aws.output) == std::to_string(count));
  storage.remove(prefix + "/f00000");
  storage.remove(prefix + "/f00000");  // a missing object is not an error
  BOOST_TEST(!storage.stat(prefix + "/f00000"));
}

// A page of 1,000 long keys is well over 1 MiB of XML: it is read whole, not cut off.
BOOST_AUTO_TEST_CASE(a_listing_page_of_long_keys_is_read_whole) {
  s3_fixture();
  S3Storage storage;
  const std::string prefix = unique_s3_prefix("long");
  const std::string padding(1000 - 80, 'k');
  std::vector<std::future<void>> writers;
  for (int t = 0; t < 8; ++t) {
    writers.push_back(std::async(std::launch::async, [&, t] {
      for (int i = t; i < 1001; i += 8)
        put(storage, prefix + "/" + padding + std::to_string(10000 + i), "x");
    }));
  }
  for (auto& writer : writers) writer.get();
  const auto files = storage.list(prefix, /*recursive=*/false);
  BOOST_REQUIRE_EQUAL(files.size(), 1001u);
  BOOST_TEST(files.back().path == fs::path(prefix + "/" + padding + "11000"));
}

// 4xx errors fail at once, in one line naming the URL, the status and S3's code, with no secret.
BOOST_AUTO_TEST_CASE(client_errors_fail_at_once_naming_url_status_and_code) {
  s3_fixture();
  {
    S3Storage storage;
    const std::string missing = "s3://no-such-bucket-ckpt/run";
    BOOST_CHECK_EXCEPTION(storage.stat(missing), CheckpointError,
                          message_contains("ListObjectsV2 s3://no-such-bucket-ckpt/run",
                                           "HTTP 404 NoSuchBucket", s3_fixture().endpoint));
    BOOST_CHECK_EXCEPTION(put(storage, missing + "/x", "abc"), CheckpointError,
                          message_contains("PutObject s3://no-such-bucket-ckpt/run/x", "404"));
    BOOST_TEST(storage.counters().retries == 0u);
  }
  const std::string secret = std::getenv("AWS_SECRET_ACCESS_KEY");
  ScopedEnv wrong_secret("AWS_SECRET_ACCESS_KEY", "wrong" + secret.substr(5));
  S3Storage storage;
  const std::string prefix = unique_s3_prefix("denied");
  try {
    put(storage, prefix + "/x", "abc");
    BOOST_FAIL("a wrong secret key was accepted");
  } catch (const CheckpointError& e) {
    const std::string what = e.what();
    BOOST_TEST_MESSAGE(what);
    BOOST_TEST(what.find("PutObject " + prefix + "/x: HTTP 403 SignatureDoesNotMatch") !=
               std::string::npos);
    BOOST_TEST(what.find(secret.substr(5)) == std::string::npos);
    BOOST_TEST(what.find('\n') == std::string::npos);
    BOOST_TEST(e.error_number() == EACCES);
  }
  BOOST_TEST(storage.counters().retries == 0u);
  // Missing credentials are named, with what to set.
  ScopedEnv no_key("AWS_ACCESS_KEY_ID", "");
  ScopedEnv no_profile_file("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials");
  ScopedEnv no_config_file("AWS_CONFIG_FILE", "/nonexistent/config");
  S3Storage anonymous;
  BOOST_CHECK_EXCEPTION(anonymous.stat(prefix), CheckpointError,
                        message_contains(prefix, "no AWS credentials", "AWS_ACCESS_KEY_ID"));
}

// Credentials, region and endpoint from a profile in the shared files, as the AWS CLI reads them.
BOOST_AUTO_TEST_CASE(profile_in_shared_files) {
  s3_fixture();
  TempDir dir;
  ckpt::test::write_text(dir / "credentials",
                         "[default]\naws_access_key_id = nobody\naws_secret_access_key = x\n"
                         "[ckpt-test]\naws_access_key_id = " +
                             std::string(std::getenv("AWS_ACCESS_KEY_ID")) +
                             "\naws_secret_access_key = " + std::getenv("AWS_SECRET_ACCESS_KEY") +
                             "\n",
                         *ckpt::Storage::local());
  ckpt::test::write_text(
      dir / "config",
      "[profile ckpt-test]\nregion = us-east-1\ns3 =\n  addressing_style = path\n"
      "endpoint_url = " +
          s3_fixture().endpoint + "\n",
      *ckpt::Storage::local());
  ScopedEnv key("AWS_ACCESS_KEY_ID", "");
  ScopedEnv secret("AWS_SECRET_ACCESS_KEY", "");
  ScopedEnv endpoint("AWS_ENDPOINT_URL", "");
  ScopedEnv profile("AWS_PROFILE", "ckpt-test");
  ScopedEnv credentials("AWS_SHARED_CREDENTIALS_FILE", (dir / "credentials").string());
  ScopedEnv config("AWS_CONFIG_FILE", (dir / "config").string());
  S3Storage storage;
  BOOST_TEST(storage.endpoint() == s3_fixture().endpoint);
  const std::string prefix = unique_s3_prefix("profile");
  put(storage, prefix + "/x", "abc");
  BOOST_TEST(get(storage, prefix + "/x") == "abc");
}

// Virtual-host addressing (bucket.localhost): curl resolves *.localhost to loopback and the
// gateway is configured with `rgw dns name = localhost`.
BOOST_AUTO_TEST_CASE(virtual_host_addressing) {
  const std::string port = s3_fixture().endpoint.substr(s3_fixture().endpoint.rfind(':') + 1);
  ScopedEnv endpoint("AWS_ENDPOINT_URL", "http://localhost:" + port);
  S3Options options;
  options.addressing = "virtual";
  S3Storage storage(options);
  const std::string prefix = unique_s3_prefix("virtual");
  put(storage, prefix + "/x y=z", "abc");  // a key that needs encoding
  BOOST_TEST(get(storage, prefix + "/x y=z") == "abc");
  BOOST_TEST(storage.list(prefix, false).at(0).path == fs::path(prefix + "/x y=z"));
}

// HTTPS with a private CA named the AWS way (AWS_CA_BUNDLE, or ca_bundle in the profile):
// checkpoints saved by one PUT and by a multipart upload come back verified, boto3 and the AWS
// CLI (verifying against the same CA) see the same objects, and no request was retried.
BOOST_AUTO_TEST_CASE(checkpoints_round_trip_over_https_with_aws_ca_bundle) {
  TlsGateway gateway;
  ScopedEnv endpoint("AWS_ENDPOINT_URL", gateway.url());
  ScopedEnv ca_bundle("AWS_CA_BUNDLE", gateway.ca());
  ScopedEnv no_config_file("AWS_CONFIG_FILE", "/nonexistent/config");
  const std::string prefix = unique_s3_prefix("https");
  ckpt::DefaultCheckpointerArguments args;
  args.save_dir = prefix;
  args.load_dir = prefix;
  args.model_state_save_dir = "";
  args.s3_part_size_mb = 5;
  {
    ckpt::DefaultCheckpointer checkpointer(args);
    BOOST_TEST(checkpointer.load().empty());
    checkpointer.save(checkpoint_at(0), 0);        // 1 KB: one PUT
    checkpointer.save(checkpoint_at(1, 1200), 1);  // 5.8 MB: two parts of at most 5 MiB
  }
  S3Storage storage(small_parts());
  BOOST_TEST(storage.endpoint() == gateway.url());
  for (const int epoch : {0, 1}) {
    BOOST_TEST_CONTEXT("epoch " << epoch) {
      const std::string url = prefix + "/model_" + std::to_string(epoch) + ".pt";
      BOOST_CHECK_NO_THROW(ckpt::verify_file(url, storage));
      BOOST_TEST(ckpt::load_checkpoint_file(url, storage).module_interface_state ==
                 checkpoint_at(epoch, epoch == 1 ? 1200 : 16).module_interface_state);
      // boto3 over https (AWS_CA_BUNDLE): a multipart object's ETag ends in -<parts>.
      const std::string head =
          trimmed(boto3("head " + s3_fixture().bucket + " " + quote(key_of(url))));
      const std::string etag = head.substr(head.find(' ') + 1);
      if (epoch == 0) BOOST_TEST(etag.find('-') == std::string::npos, head);
      if (epoch == 1) BOOST_TEST(etag.substr(etag.size() - 3) == "-2\"", head);
    }
  }
  ckpt::DefaultCheckpointer resumed(args);
  BOOST_TEST(resumed.load().module_interface_state ==
             checkpoint_at(1, 1200).module_interface_state);
  const auto aws = run_command("/usr/bin/aws --endpoint-url " + gateway.url() + " --ca-bundle " +
                               quote(gateway.ca()) + " s3 ls " + quote(prefix + "/"));
  BOOST_TEST(aws.exit_code == 0, aws.output);
  BOOST_TEST(aws.output.find("model_0.pt") != std::string::npos, aws.output);
  BOOST_TEST(aws.output.find("model_1.pt") != std::string::npos, aws.output);
  BOOST_TEST(storage.counters().retries == 0u);
  BOOST_TEST(uploads_under(prefix).empty());

  // The same CA from the profile's ca_bundle in the config file, bytes by PUT and multipart.
  TempDir dir;
  ckpt::test::write_text(dir / "config", "[default]\nca_bundle = " + gateway.ca() + "\n",
                         *ckpt::Storage::local());
  ScopedEnv no_ca_variable("AWS_CA_BUNDLE", "");
  ScopedEnv config_file("AWS_CONFIG_FILE", (dir / "config").string());
  S3Storage from_profile(small_parts());
  const std::string small = random_bytes(1000, 7);
  const std::string large = random_bytes((11 << 20) + 3, 8);  // 3 parts
  put(from_profile, prefix + "/small.bin", small);
  put(from_profile, prefix + "/large.bin", large);
  BOOST_TEST(from_profile.counters().requests == 1u + 1u + 3u + 1u);
  BOOST_TEST(get(from_profile, prefix + "/small.bin") == small);
  BOOST_TEST(get(from_profile, prefix + "/large.bin") == large);
  BOOST_TEST(from_profile.counters().retries == 0u);
}

// An https:// endpoint whose certificate does not verify fails the first request at once (it is
// never retried: another try meets the same certificate), in one line naming the request, the
// endpoint, libcurl's reason and the fix; verification is never skipped.
BOOST_AUTO_TEST_CASE(a_certificate_that_does_not_verify_fails_at_once) {
  TlsGateway gateway;
  ScopedEnv endpoint("AWS_ENDPOINT_URL", gateway.url());
  ScopedEnv no_ca_bundle("AWS_CA_BUNDLE", "");
  ScopedEnv no_config_file("AWS_CONFIG_FILE", "/nonexistent/config");
  const std::string prefix = unique_s3_prefix("untrusted");
  S3Storage storage;  // 5 tries for a transient failure
  const auto start = std::chrono::steady_clock::now();
  try {
    put(storage, prefix + "/model_0.pt", "abc");
    BOOST_FAIL("a certificate from an unknown CA was accepted");
  } catch (const CheckpointError& e) {
    const std::string what = e.what();
    BOOST_TEST_MESSAGE(what);
    BOOST_TEST(what.find("PutObject " + prefix + "/model_0.pt: the TLS certificate of " +
                         gateway.url() + " was not accepted: SSL certificate problem: ") !=
               std::string::npos);
    BOOST_TEST(what.find("set AWS_CA_BUNDLE") != std::string::npos);
    BOOST_TEST(what.find("[endpoint " + gateway.url() + "]") != std::string::npos);
    BOOST_TEST(what.find("gave up") == std::string::npos);
    BOOST_TEST(what.find('\n') == std::string::npos);
    BOOST_TEST(e.error_number() == EACCES);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  BOOST_TEST(storage.counters().requests == 1u);
  BOOST_TEST(storage.counters().retries == 0u);
  BOOST_TEST(seconds < 2.0);  // no backoff (a retry would wait 0.05-0.1 s, then longer)
  // The checkpointer meets it at construction (listing stale uploads), and names the option.
  ckpt::DefaultCheckpointerArguments args;
  args.save_dir = prefix;
  args.model_state_save_dir = "";
  BOOST_CHECK_EXCEPTION(ckpt::DefaultCheckpointer{args}, CheckpointError,
                        message_contains("invalid save_dir " + prefix,
                                         "TLS certificate of " + gateway.url(), "AWS_CA_BUNDLE"));
  // A bundle of other CAs (the system's) does not vouch for it either, and says which was used.
  {
    const std::string system_cas = "/etc/ssl/certs/ca-certificates.crt";
    ScopedEnv other_cas("AWS_CA_BUNDLE", system_cas);
    S3Storage other;
    BOOST_CHECK_EXCEPTION(other.stat(prefix), CheckpointError,
                          message_contains("ListObjectsV2 " + prefix, "not accepted",
                                           "CA bundle " + system_cas + " from AWS_CA_BUNDLE"));
    BOOST_TEST(other.counters().requests == 1u);
  }
  // A bundle that does not exist is refused where it is named.
  ScopedEnv missing("AWS_CA_BUNDLE", "/nonexistent/ca.pem");
  BOOST_CHECK_EXCEPTION(S3Storage{}, CheckpointError,
                        message_contains("invalid AWS_CA_BUNDLE '/nonexistent/ca.pem'"));
  // Nothing was written: boto3, trusting the right CA, sees no object and no upload.
  ScopedEnv right_ca("AWS_CA_BUNDLE", gateway.ca());
  BOOST_TEST(
      trimmed(boto3("keys " + s3_fixture().bucket + " " + quote(key_of(prefix) + "/"))).empty());
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(s3_faults)

// Connections reset mid-upload, a stalled body, and a body corrupted on the wire (Content-MD5:
// the store refuses it) are all retried, and the object ends up whole.
BOOST_AUTO_TEST_CASE(reset_stall_and_corruption_are_retried) {
  const std::string bytes = random_bytes(12 << 20, 5);
  for (const std::string fault : {"reset", "stall", "corrupt"}) {
    BOOST_TEST_CONTEXT("fault " << fault) {
      Proxy proxy(fault, 2, 300000);
      ScopedEnv endpoint("AWS_ENDPOINT_URL", proxy.endpoint());
      S3Options options = small_parts();
      options.timeout_seconds = 2;  // the stall is noticed after 2 s without a byte
      S3Storage storage(options);
      const std::string prefix = unique_s3_prefix("fault-" + fault);
      put(storage, prefix + "/model_0.pt", bytes);
      BOOST_TEST(storage.counters().retries >= 1u);
      put(storage, prefix + "/small.pt", bytes.substr(0, 400000));  // a single PUT
      BOOST_TEST(get(storage, prefix + "/model_0.pt") == bytes);
      BOOST_TEST(get(storage, prefix + "/small.pt") == bytes.substr(0, 400000));
      BOOST_TEST(uploads_under(prefix).empty());
    }
  }
}

// The gateway SIGKILLed while a multipart upload is in flight and started again a second later
// (a second radosgw on the fixture's cluster, so the other suites' gateway stays up): the
// requests that failed are retried against the restarted gateway and the object is whole.
BOOST_AUTO_TEST_CASE(gateway_killed_mid_upload_and_restarted) {
  SecondGateway gateway;
  ScopedEnv endpoint("AWS_ENDPOINT_URL", gateway.start());
  S3Options options = small_parts();
  options.concurrency = 1;  // one part at a time: the upload lasts about a second here
  S3Storage storage(options);
  const std::string prefix = unique_s3_prefix("gateway-kill");
  const std::string bytes = random_bytes(100 << 20, 6);
  auto upload =
      std::async(std::launch::async, [&] { put(storage, prefix + "/model_0.pt", bytes); });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (storage.counters().bytes_sent < (5u << 20) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  gateway.kill();
  BOOST_REQUIRE(storage.counters().bytes_sent < bytes.size());  // killed mid-upload
  std::this_thread::sleep_for(std::chrono::seconds(1));
  gateway.start();
  BOOST_CHECK_NO_THROW(upload.get());
  BOOST_TEST(storage.counters().retries >= 1u);
  BOOST_TEST(get(storage, prefix + "/model_0.pt") == bytes);
  BOOST_TEST(storage.unfinished_writes(prefix).empty());
}

// A store that stays unreachable: retried with full-jitter backoff until the time budget ends (the
// last try at its end), or until an explicit attempt cap; then one error saying how long it tried.
BOOST_AUTO_TEST_CASE(retries_are_bounded_by_the_time_budget_or_a_cap) {
  s3_fixture();
  ScopedEnv endpoint("AWS_ENDPOINT_URL", "http://127.0.0.1:9");  // discard port: refused
  S3Options options;
  BOOST_TEST(options.max_attempts == 0);  // by default the time budget alone decides
  BOOST_TEST(options.retry_seconds >= 60);
  options.retry_seconds = 3;
  S3Storage budgeted(options);
  const auto start = std::chrono::steady_clock::now();
  BOOST_CHECK_EXCEPTION(budgeted.stat("s3://ckpt-test/x"), CheckpointError,
                        message_contains("ListObjectsV2 s3://ckpt-test/x", "gave up after",
                                         "tries over 3."));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  BOOST_TEST(seconds >= 3.0);  // the last try starts when the budget ends, not before
  BOOST_TEST(budgeted.counters().requests >= 2u);
  BOOST_TEST(budgeted.counters().retries == budgeted.counters().requests - 1);
  options.max_attempts = 4;
  options.retry_seconds = 600;
  S3Storage capped(options);
  BOOST_CHECK_EXCEPTION(capped.stat("s3://ckpt-test/x"), CheckpointError,
                        message_contains("gave up after 4 tries"));
  BOOST_TEST(capped.counters().requests == 4u);
  BOOST_TEST(capped.counters().retries == 3u);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(s3_checkpointer)

// The checkpointer on a real s3:// save_dir: epochs, retention, the latest pointer, the best
// pool, weights in both formats; boto3 + torch.load read what it wrote.
BOOST_AUTO_TEST_CASE(saves_resumes_and_exports_on_s3_urls) {
  s3_fixture();
  const std::string prefix = unique_s3_prefix("run");
  ckpt::DefaultCheckpointerArguments args;
  args.save_dir = prefix + "/ckpt";
  args.model_state_save_dir = prefix + "/weights";
  args.load_dir = args.save_dir;
  args.keep_last_n = 2;
  args.save_top_k = 1;
  args.monitor = "val_loss";
  args.s3_part_size_mb = 5;
  {
    ckpt::DefaultCheckpointer checkpointer(args);
    BOOST_TEST(checkpointer.load().empty());
    for (int64_t epoch = 0; epoch < 4; ++epoch) {
      auto checkpoint = checkpoint_at(epoch, epoch == 3 ? 1200 : 16);  // the last is multipart
      ckpt::StateDict metrics;
      metrics.insert_or_assign("val_loss", 10.0 - static_cast<double>(epoch));
      checkpoint.metadata.insert_or_assign("metrics", metrics.to_ivalue());
      BOOST_TEST(checkpointer.save(checkpoint, epoch).value() ==
                 fs::path(prefix + "/ckpt/model_" + std::to_string(epoch) + ".pt"));
    }
    checkpointer.save_model(checkpoint_at(3).module_interface_state, 3);
  }
  auto storage = ckpt::Storage::by_location();
  BOOST_TEST(
      ckpt::test::files_in(args.save_dir, *storage) ==
      (std::vector<std::string>{"model_2.pt", "model_3.pt", "model_best_3.pt", "model_latest"}));
  BOOST_TEST(ckpt::test::files_in(args.model_weights_dir(), *storage) ==
             std::vector<std::string>{"model_model_3.pt"});
  ckpt::DefaultCheckpointer resumed(args);
  BOOST_TEST(resumed.load().module_interface_state ==
             checkpoint_at(3, 1200).module_interface_state);
  // torch.load reads what boto3 downloads.
  TempDir local;
  boto3("download " + s3_fixture().bucket + " " + quote(key_of(prefix) + "/ckpt/model_3.pt") + " " +
        quote((local / "model_3.pt").string()));
  const std::string keys = boto3("torch-keys " + quote((local / "model_3.pt").string()));
  BOOST_TEST(keys.find("module_interface_state") != std::string::npos);
  BOOST_TEST(keys.find("trainer_state") != std::string::npos);
  // safetensors weights, and the library's file functions on URLs.
  args.model_format = "safetensors";
  ckpt::DefaultCheckpointer(args).save_model(checkpoint_at(3).module_interface_state, 4);
  BOOST_TEST(ckpt::load_safetensors_file(prefix + "/weights/model_model_4.safetensors") ==
             checkpoint_at(3).module_interface_state);
  BOOST_TEST(ckpt::is_ckpt_file(prefix + "/ckpt/model_3.pt"));
}

// A torch.save file uploaded with boto3 is listed, verified and resumed from.
BOOST_AUTO_TEST_CASE(resumes_from_a_file_python_uploaded) {
  const std::string prefix = unique_s3_prefix("python");
  TempDir local;
  boto3("torch-save " + quote((local / "model_4.pt").string()));
  boto3("upload " + quote((local / "model_4.pt").string()) + " " + s3_fixture().bucket + " " +
        quote(key_of(prefix) + "/model_4.pt"));
  ckpt::DefaultCheckpointerArguments args;
  args.save_dir = prefix;
  args.model_state_save_dir = "";
  args.load_dir = prefix;
  ckpt::DefaultCheckpointer checkpointer(args);
  BOOST_TEST(checkpointer.check() == fs::path(prefix + "/model_4.pt"));
  const auto state = ckpt::load_state_file(prefix + "/model_4.pt");
  BOOST_TEST(state.at("epoch").toInt() == 4);
}

// At construction the checkpointer aborts the unfinished uploads of its own names (what a
// process killed mid-save leaves), never anyone else's.
BOOST_AUTO_TEST_CASE(construction_aborts_stale_uploads_of_its_own_names) {
  const std::string prefix = unique_s3_prefix("stale");
  const std::string bucket = s3_fixture().bucket;
  boto3("start-upload " + bucket + " " + quote(key_of(prefix) + "/model_7.pt"));
  boto3("start-upload " + bucket + " " + quote(key_of(prefix) + "/other.bin"));
  BOOST_TEST(uploads_under(prefix) ==
             key_of(prefix) + "/model_7.pt " + key_of(prefix) + "/other.bin");
  ckpt::DefaultCheckpointerArguments args;
  args.save_dir = prefix;
  args.model_state_save_dir = "";
  ckpt::DefaultCheckpointer checkpointer(args);
  BOOST_TEST(uploads_under(prefix) == key_of(prefix) + "/other.bin");
}

// An unsupported or malformed location is refused naming the option.
BOOST_AUTO_TEST_CASE(bad_locations_name_the_option) {
  s3_fixture();
  ckpt::DefaultCheckpointerArguments args;
  args.model_state_save_dir = "";
  args.save_dir = "s3://";
  BOOST_CHECK_EXCEPTION(ckpt::DefaultCheckpointer{args}, CheckpointError,
                        message_contains("invalid save_dir s3://", "names no bucket"));
  args.save_dir = "s3://no-such-bucket-ckpt/run";
  BOOST_CHECK_EXCEPTION(
      ckpt::DefaultCheckpointer{args}, CheckpointError,
      message_contains("invalid save_dir s3://no-such-bucket-ckpt/run", "NoSuchBucket"));
  args.save_dir = unique_s3_prefix("options");
  args.s3_part_size_mb = 4;
  BOOST_CHECK_EXCEPTION(ckpt::DefaultCheckpointer{args}, CheckpointError,
                        message_contains("invalid s3_part_size_mb 4"));
}

BOOST_AUTO_TEST_SUITE_END()

#ifdef CKPT_SAMPLE_TRAINER
BOOST_AUTO_TEST_SUITE(s3_trainer)

// The sample trainer with --chkp.save_dir s3://...: SIGKILLed while a checkpoint's multipart
// upload is in flight, it leaves the older checkpoints whole and nothing under the new name but
// an unfinished upload; the next start aborts that upload and resumes to the end.
BOOST_AUTO_TEST_CASE(sigkill_mid_upload_then_resume) {
  s3_fixture();
  const std::string prefix = unique_s3_prefix("trainer");
  TempDir dir;
  // 64 -> 1500 -> 1500 -> 10: about 28 MB per checkpoint with Adam's moments, 6 parts of 5 MiB.
  const std::vector<std::string> args{"--trainer.epochs",
                                      "8",
                                      "--model.hidden1",
                                      "1500",
                                      "--model.hidden2",
                                      "1500",
                                      "--chkp.save_dir",
                                      prefix + "/ckpt",
                                      "--chkp.load_dir",
                                      prefix + "/ckpt",
                                      "--chkp.model_state_save_dir",
                                      prefix + "/weights",
                                      "--chkp.s3_part_size_mb",
                                      "5",
                                      "--chkp.s3_concurrency",
                                      "2"};
  std::string command = quote(CKPT_SAMPLE_TRAINER);
  for (const auto& arg : args) command += " " + quote(arg);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const std::string shell = "cd " + quote(dir.path().string()) + " && exec " + command +
                              " > out.txt 2> err.txt < /dev/null";
    ::execl("/bin/sh", "sh", "-c", shell.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  S3Storage storage;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  // Kill it once a checkpoint is complete and the next one's upload is in flight.
  bool caught = false;
  while (std::chrono::steady_clock::now() < deadline) {
    // In this order: an upload seen before the listing could be the first one, finishing.
    if (!storage.list(prefix + "/ckpt", false).empty() &&
        !storage.unfinished_writes(prefix + "/ckpt").empty()) {
      ::kill(pid, SIGKILL);
      caught = true;
      break;
    }
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) break;  // finished before we caught it
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  BOOST_REQUIRE_MESSAGE(caught,
                        "never saw an upload in flight; trainer log:\n"
                            << ckpt::test::read_text(dir / "err.txt", *ckpt::Storage::local()));
  BOOST_TEST(WIFSIGNALED(status));
  // boto3 sees the upload the killed process left.
  const auto stale = storage.unfinished_writes(prefix + "/ckpt");
  BOOST_REQUIRE_EQUAL(stale.size(), 1u);
  BOOST_TEST(uploads_under(prefix + "/ckpt") == key_of(stale.front().string()));
  // Every visible checkpoint is whole.
  for (const auto& file : storage.list(prefix + "/ckpt", false)) {
    if (file.path.extension() == ".pt") BOOST_CHECK_NO_THROW(ckpt::verify_file(file.path, storage));
  }
  const auto resumed = run_command("cd " + quote(dir.path().string()) + " && " + command);
  BOOST_REQUIRE_MESSAGE(resumed.exit_code == 0, resumed.output);
  BOOST_TEST(resumed.output.find("aborted its unfinished upload") != std::string::npos);
  BOOST_TEST(resumed.output.find("resum") != std::string::npos);
  BOOST_TEST(uploads_under(prefix + "/ckpt").empty());
  BOOST_TEST(storage.stat(prefix + "/weights/model_model_7.pt").has_value());
  BOOST_CHECK_NO_THROW(ckpt::verify_file(prefix + "/weights/model_model_7.pt", storage));
}

namespace {

// rank -> pid, from the launcher's log ("launcher: started rank 1 of 2 (pid 123)").
std::map<int, pid_t> rank_pids(const std::string& log) {
  static const std::regex line(R"(launcher: started rank (\d+) of \d+ \(pid (\d+)\))");
  std::map<int, pid_t> pids;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), line); it != std::sregex_iterator();
       ++it) {
    pids[std::stoi((*it)[1])] = std::stoi((*it)[2]);
  }
  return pids;
}

// rank -> the HTTP requests ("PUT /bucket/key...") its threads sent, from
// `strace -f -s 64 -e trace=sendto,clone,clone3,fork,vfork`: libcurl sends each request's header
// in one send() that starts with the request line. Each thread is traced back through the clones
// to the rank process it belongs to (-1: the launcher or the shell).
std::map<int, std::vector<std::string>> requests_by_rank(const std::string& trace,
                                                         const std::map<int, pid_t>& ranks) {
  static const std::regex clone(R"(^(\d+) +(?:<\.\.\. )?(?:clone3?|v?fork)\b.*\) = (\d+)$)");
  static const std::regex request(
      R"(^(\d+) +sendto\(\d+, "((?:GET|HEAD|PUT|POST|DELETE) /[^ "]*))");
  std::map<pid_t, pid_t> parent;
  std::vector<std::pair<pid_t, std::string>> sent;
  std::istringstream in(trace);
  for (std::string line; std::getline(in, line);) {
    std::smatch m;
    if (std::regex_search(line, m, clone)) {
      parent[std::stoi(m[2])] = std::stoi(m[1]);
    } else if (std::regex_search(line, m, request)) {
      sent.emplace_back(std::stoi(m[1]), m[2]);
    }
  }
  std::map<int, std::vector<std::string>> by_rank;
  for (const auto& [tid, line] : sent) {
    int rank = -1;
    for (pid_t at = tid; rank < 0;) {
      for (const auto& [r, pid] : ranks) {
        if (pid == at) rank = r;
      }
      const auto up = parent.find(at);
      if (up == parent.end()) break;
      at = up->second;
    }
    by_rank[rank].push_back(line);
  }
  return by_rank;
}

void check_tensors_bitwise_equal(const ckpt::StateDict& a, const ckpt::StateDict& b) {
  BOOST_REQUIRE(a.keys() == b.keys());
  for (const auto& [key, value] : a) {
    BOOST_TEST_CONTEXT("key " << key) {
      const at::Tensor x = value.toTensor().contiguous();
      const at::Tensor y = b.at(key).toTensor().contiguous();
      BOOST_REQUIRE(x.dtype() == y.dtype());
      BOOST_REQUIRE(x.sizes() == y.sizes());
      BOOST_TEST(std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()) == 0);
    }
  }
}

}  // namespace

// Data-parallel saves to S3: two ranks (--dist.nproc 2) train 2 epochs saving to s3:// every
// epoch, and are resumed from S3 to 4. The final weights and state are bitwise those of an
// uninterrupted two-rank run of 4 epochs (saving locally); under the prefix is exactly what rank 0
// writes, every checkpoint verifies, no upload is left unfinished, and only rank 0 sent a request
// that writes or reads an object (the requests each process sent, seen by strace).
BOOST_AUTO_TEST_CASE(two_ranks_save_to_s3_and_resume_bitwise_equal) {
  const std::string port = s3_fixture().endpoint.substr(s3_fixture().endpoint.rfind(':') + 1);
  const std::string prefix = unique_s3_prefix("dp");
  TempDir dir;
  // 64 -> 1024 -> 1024 -> 10: checkpoints of 13 MB with Adam's moments (3 parts of 5 MiB), the
  // weights alone 4.4 MB (one PUT).
  const auto run = [&](int epochs, const std::string& save_dir, const std::string& weights_dir,
                       const std::string& load_dir, const std::string& traced) {
    std::vector<std::string> args{"--dist.nproc",
                                  "2",
                                  "--dist.timeout",
                                  "120",
                                  "--trainer.epochs",
                                  std::to_string(epochs),
                                  "--model.hidden1",
                                  "1024",
                                  "--model.hidden2",
                                  "1024",
                                  "--chkp.save_dir",
                                  save_dir,
                                  "--chkp.model_state_save_dir",
                                  weights_dir,
                                  "--chkp.s3_part_size_mb",
                                  "5"};
    if (!load_dir.empty()) args.insert(args.end(), {"--chkp.load_dir", load_dir});
    std::string command = "cd " + quote(dir.path().string()) + " && ";
    if (!traced.empty()) {
      command += "strace -f -qq --seccomp-bpf -s 64 -e trace=sendto,clone,clone3,fork,vfork -o " +
                 quote(traced) + " ";
    }
    command += quote(CKPT_SAMPLE_TRAINER);
    for (const auto& arg : args) command += " " + quote(arg);
    const auto started = std::chrono::steady_clock::now();
    auto result = run_command(command);
    BOOST_TEST_MESSAGE(
        "$ " << command << " -> exit " << result.exit_code << " in "
             << std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count()
             << " s");
    BOOST_REQUIRE_MESSAGE(result.exit_code == 0, result.output);
    return result.output;
  };
  const std::string bucket = s3_fixture().bucket;
  // Only rank 0 wrote or read an object. Rank 1 and the launcher, like rank 0, check that the
  // locations given are directories or nothing (a one-key listing each) before training, and
  // send nothing else: no PUT, POST or DELETE, no object read.
  const auto only_rank_0_touched_objects = [&](const std::string& output, const std::string& trace,
                                               bool resumed) {
    const auto ranks = rank_pids(output);
    BOOST_REQUIRE_EQUAL(ranks.size(), 2u);
    const auto requests =
        requests_by_rank(ckpt::test::read_text(trace, *ckpt::Storage::local()), ranks);
    const std::string listing = "GET /" + bucket + "/?";
    for (const int rank : {-1, 1}) {
      if (requests.count(rank) == 0) continue;
      for (const auto& line : requests.at(rank)) {
        BOOST_TEST(line.rfind(listing, 0) == 0, "rank " << rank << " sent " << line);
      }
    }
    for (const auto& [rank, lines] : requests) {
      BOOST_TEST_MESSAGE("rank " << rank << ": " << lines.size() << " requests");
    }
    BOOST_REQUIRE(requests.count(0) == 1u);
    const auto sent = [&](const std::string& start) {
      return std::count_if(requests.at(0).begin(), requests.at(0).end(),
                           [&](const auto& line) { return line.rfind(start, 0) == 0; });
    };
    BOOST_TEST(sent("PUT /" + bucket + "/") >= 2);   // not vacuous: single PUTs and parts
    BOOST_TEST(sent("POST /" + bucket + "/") >= 2);  // create and complete a multipart upload
    if (resumed) BOOST_TEST(sent("GET /" + bucket + "/" + key_of(prefix)) >= 1);  // the load
  };
  const auto keys = [&] {
    return trimmed(boto3("keys " + bucket + " " + quote(key_of(prefix) + "/")));
  };
  const std::string k = key_of(prefix);

  const std::string reference = (dir / "reference").string();
  run(4, reference, reference, "", "");

  const std::string first =
      run(2, prefix + "/ckpt", prefix + "/weights", "", (dir / "first.trace").string());
  only_rank_0_touched_objects(first, (dir / "first.trace").string(), false);
  BOOST_TEST(keys() == k + "/ckpt/model_0.pt\n" + k + "/ckpt/model_1.pt\n" + k +
                           "/ckpt/model_latest\n" + k + "/weights/model_model_1.pt");

  const std::string resumed = run(4, prefix + "/ckpt", prefix + "/weights", prefix + "/ckpt",
                                  (dir / "resumed.trace").string());
  only_rank_0_touched_objects(resumed, (dir / "resumed.trace").string(), true);
  BOOST_TEST(resumed.find("resuming after epoch 1") != std::string::npos, resumed);
  // Exactly what rank 0 writes, once: no stray or temporary names, no unfinished upload.
  BOOST_TEST(keys() == k + "/ckpt/model_0.pt\n" + k + "/ckpt/model_1.pt\n" + k +
                           "/ckpt/model_2.pt\n" + k + "/ckpt/model_3.pt\n" + k +
                           "/ckpt/model_latest\n" + k + "/weights/model_model_1.pt\n" + k +
                           "/weights/model_model_3.pt");
  S3Storage storage;
  BOOST_TEST(storage.unfinished_writes(prefix + "/ckpt").empty());
  BOOST_TEST(storage.unfinished_writes(prefix + "/weights").empty());
  BOOST_TEST(uploads_under(prefix).empty());
  for (const std::string name :
       {"ckpt/model_0.pt", "ckpt/model_1.pt", "ckpt/model_2.pt", "ckpt/model_3.pt",
        "weights/model_model_1.pt", "weights/model_model_3.pt"}) {
    BOOST_TEST_CONTEXT(name) {
      BOOST_CHECK_NO_THROW(ckpt::verify_file(prefix + "/" + name, storage));
    }
  }
  BOOST_TEST(get(storage, prefix + "/ckpt/model_latest").find("model_3.pt") != std::string::npos);

  // Bitwise the uninterrupted run's: the weights, and every part of the last checkpoint's state.
  check_tensors_bitwise_equal(
      ckpt::load_state_file(prefix + "/weights/model_model_3.pt", storage),
      ckpt::load_state_file(fs::path(reference) / "model_model_3.pt", *ckpt::Storage::local()));
  const ckpt::Checkpoint a = ckpt::load_checkpoint_file(prefix + "/ckpt/model_3.pt", storage);
  const ckpt::Checkpoint b =
      ckpt::load_checkpoint_file(fs::path(reference) / "model_3.pt", *ckpt::Storage::local());
  check_tensors_bitwise_equal(a.module_interface_state, b.module_interface_state);
  BOOST_TEST(ckpt::deep_equal(a.trainer_state.to_ivalue(), b.trainer_state.to_ivalue()));
  BOOST_TEST(ckpt::deep_equal(a.registered_state.to_ivalue(), b.registered_state.to_ivalue()));
  // Both ranks' own state (random generators, data position) travelled to rank 0 and back.
  const auto& ranks_a = a.trainer_backend_state.at("ckpt_rank_states").toListRef();
  const auto& ranks_b = b.trainer_backend_state.at("ckpt_rank_states").toListRef();
  BOOST_REQUIRE_EQUAL(ranks_a.size(), 2u);
  BOOST_REQUIRE_EQUAL(ranks_b.size(), 2u);
  for (std::size_t r = 0; r < 2; ++r) {
    BOOST_TEST_CONTEXT("rank " << r) { BOOST_TEST(ckpt::deep_equal(ranks_a[r], ranks_b[r])); }
  }
  BOOST_TEST(a.metadata.at("world_size").toInt() == 2);
}

#ifdef CKPT_TOOL
// Every command of the ckpt tool on s3:// arguments, the AWS configuration from the environment.
BOOST_AUTO_TEST_CASE(the_ckpt_tool_on_s3_urls) {
  s3_fixture();
  const std::string prefix = unique_s3_prefix("tool");
  ckpt::DefaultCheckpointerArguments args;
  args.save_dir = prefix;
  args.model_state_save_dir = "";
  ckpt::DefaultCheckpointer checkpointer(args);
  for (int64_t epoch = 0; epoch < 4; ++epoch) checkpointer.save(checkpoint_at(epoch), epoch);
  const auto tool = [](const std::string& arguments) {
    return run_command(quote(CKPT_TOOL) + " " + arguments);
  };
  const auto listed = tool("list " + quote(prefix));
  BOOST_TEST(listed.exit_code == 0, listed.output);
  BOOST_TEST(listed.output.find("model_3.pt") != std::string::npos);
  const auto inspected = tool("inspect " + quote(prefix + "/model_3.pt"));
  BOOST_TEST(inspected.exit_code == 0, inspected.output);
  BOOST_TEST(inspected.output.find("fc.weight") != std::string::npos);
  const auto verified = tool("verify " + quote(prefix));
  BOOST_TEST(verified.exit_code == 0, verified.output);
  BOOST_TEST(verified.output.find(" 0 bad") != std::string::npos, verified.output);
  const auto diffed =
      tool("diff " + quote(prefix + "/model_2.pt") + " " + quote(prefix + "/model_3.pt"));
  BOOST_TEST(diffed.exit_code == 1, diffed.output);
  BOOST_TEST(diffed.output.find("fc.weight") != std::string::npos);
  const auto exported = tool("export " + quote(prefix + "/model_3.pt") + " -o " +
                             quote(prefix + "/weights.safetensors") + " --format safetensors");
  BOOST_TEST(exported.exit_code == 0, exported.output);
  BOOST_TEST(ckpt::load_safetensors_file(prefix + "/weights.safetensors") ==
             checkpoint_at(3).module_interface_state);
  const auto pruned = tool("prune " + quote(prefix) + " --keep-last 2");
  BOOST_TEST(pruned.exit_code == 0, pruned.output);
  BOOST_TEST(ckpt::test::files_in(prefix, *ckpt::Storage::by_location()) ==
             (std::vector<std::string>{"model_2.pt", "model_3.pt", "model_latest",
                                       "weights.safetensors"}));
  // A location that does not exist is named, with the store's answer.
  const auto missing = tool("verify s3://no-such-bucket-ckpt/x.pt");
  BOOST_TEST(missing.exit_code == 2, missing.output);  // as for a local path that does not exist
  BOOST_TEST(missing.output.find("s3://no-such-bucket-ckpt/x.pt") != std::string::npos,
             missing.output);
}
#endif

BOOST_AUTO_TEST_SUITE_END()
#endif
