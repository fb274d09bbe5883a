#pragma once
// A gateway a test may kill: a second radosgw beside the S3 fixture's (s3_test_util.h).

#include "s3_test_util.h"
#include "test_util.h"

#include <boost/test/unit_test.hpp>

#include <string>

namespace ckpt::test {

/// A second radosgw on the fixture's cluster (`scripts/s3-server.sh second-gateway`), for tests
/// that kill a gateway without disturbing the other suites': it sees the same buckets. start()
/// returns its endpoint, the same on every restart; kill() SIGKILLs it by its recorded PID, as the
/// destructor does.
class SecondGateway {
 public:
  SecondGateway() { s3_fixture(); }
  ~SecondGateway() {
    if (started_) run("kill");
  }
  SecondGateway(const SecondGateway&) = delete;
  SecondGateway& operator=(const SecondGateway&) = delete;

  std::string start() {
    const std::string output = run("start");
    const auto at = output.rfind("http://127.0.0.1:");
    BOOST_REQUIRE_MESSAGE(at != std::string::npos, "no endpoint in: " << output);
    std::string endpoint = output.substr(at);
    while (!endpoint.empty() && (endpoint.back() == '\n' || endpoint.back() == ' ')) {
      endpoint.pop_back();
    }
    started_ = true;
    return endpoint;
  }
  void kill() { run("kill"); }

 private:
  std::string run(const std::string& what) {
    const auto result = run_command(quote(std::string(CKPT_SOURCE_DIR) + "/scripts/s3-server.sh") +
                                    " second-gateway " + what + " " +
                                    quote(s3_fixture().directory));
    BOOST_REQUIRE_MESSAGE(result.exit_code == 0, "second-gateway " << what << ": " << result.output);
    return result.output;
  }
  bool started_ = false;
};

}  // namespace ckpt::test
